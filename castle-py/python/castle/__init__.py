"""Castle: rebuild an ephemeral Talos/Kubernetes cluster on Proxmox from Python.

    import castle
    cfg = castle.Config.load("examples/lab/castle.toml")
    report = castle.Castle(cfg).create(on_event=print)
    print(report.makespan_ms, report.critical_path)

The pieces work on their own too: ``castle.talos``, ``castle.vault``,
``castle.tailscale`` and ``castle.proxmox``.
"""

from castle._castle import (
    AuthKey,
    Cancelled,
    Castle,
    CastleError,
    Config,
    ConfigError,
    ProviderError,
    Report,
    SecretError,
    TalosSecrets,
    TimeoutError,
)
from castle import proxmox, tailscale, talos, vault

__all__ = [
    "AuthKey",
    "Cancelled",
    "Castle",
    "CastleError",
    "Config",
    "ConfigError",
    "ProviderError",
    "Report",
    "SecretError",
    "TalosSecrets",
    "TimeoutError",
    "proxmox",
    "tailscale",
    "talos",
    "vault",
]
