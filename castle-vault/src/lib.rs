//! Declarative Vault/OpenBao configuration: VaultSpec, plan, diff and apply, the VaultApi trait, an HTTP client and a stateful mock.
