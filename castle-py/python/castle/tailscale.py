"""Tailscale on its own: mint an auth key with an OAuth client. The key prints as
``<redacted>``; ``AuthKey.reveal()`` returns it."""

from castle._castle import AuthKey
from castle._castle import tailscale_mint_key as mint_key

__all__ = ["AuthKey", "mint_key"]
