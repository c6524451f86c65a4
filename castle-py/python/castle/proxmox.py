"""Proxmox VE on its own: list the VMs of a cluster with an API token."""

from castle._castle import proxmox_list_vms as list_vms

__all__ = ["list_vms"]
