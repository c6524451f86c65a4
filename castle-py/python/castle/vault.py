"""Vault on its own: plan and apply a declarative spec (TOML, the ``[vault.spec]``
table's content) against an address and a token."""

from castle._castle import vault_apply as apply
from castle._castle import vault_plan as plan

__all__ = ["apply", "plan"]
