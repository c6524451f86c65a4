"""Vault on its own: plan and apply a declarative spec against an address and token."""

from castle._castle import vault_apply as apply
from castle._castle import vault_plan as plan

__all__ = ["apply", "plan"]
