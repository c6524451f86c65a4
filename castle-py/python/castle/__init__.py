"""Castle: rebuild an ephemeral Talos/Kubernetes cluster on Proxmox from Python.

    import castle
    cluster = castle.Castle(castle.Config.load("examples/lab/castle.toml"))
    report = cluster.create(on_event=print)   # the GIL is released; Ctrl-C cancels
    print(report.table(), report.critical_path)
    cluster.destroy()

A config with a ``[lab]`` section runs against Castle's simulators, as the CLI does.
Every error is a ``CastleError``: ``ConfigError``, ``SecretError``, ``ProviderError``,
``TimeoutError`` or ``Cancelled``, with the CLI's message. The pieces work on their
own too: ``castle.talos``, ``castle.vault``, ``castle.tailscale`` and ``castle.proxmox``.
"""

from castle import proxmox, tailscale, talos, vault
from castle._castle import (
    AuthKey,
    Cancelled,
    Castle,
    CastleError,
    Config,
    ConfigError,
    MachineConfig,
    ProviderError,
    Report,
    SecretError,
    TalosSecrets,
    TimeoutError,
)

__all__ = [
    "AuthKey",
    "Cancelled",
    "Castle",
    "CastleError",
    "Config",
    "ConfigError",
    "MachineConfig",
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
