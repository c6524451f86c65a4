"""Talos on its own: a secrets bundle (as ``talosctl gen secrets``) and the machine
config of one node. Neither shows key material unless asked with ``reveal…()``."""

from castle._castle import MachineConfig, TalosSecrets
from castle._castle import talos_generate_secrets as generate_secrets
from castle._castle import talos_machine_config as machine_config

__all__ = ["MachineConfig", "TalosSecrets", "generate_secrets", "machine_config"]
