"""Talos on its own: a secrets bundle (as `talosctl gen secrets`) and machine configs."""

from castle._castle import TalosSecrets
from castle._castle import talos_generate_secrets as generate_secrets
from castle._castle import talos_machine_config as machine_config

__all__ = ["TalosSecrets", "generate_secrets", "machine_config"]
