//! Proxmox VE: the ProxmoxApi trait, an HTTP client and a stateful mock.
