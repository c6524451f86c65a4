//! Talos Linux: secrets bundle and PKI, machine configs and patches, talosconfig, the TalosApi trait, a gRPC client and a stateful mock.
