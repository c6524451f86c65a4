//! Secret references (being written).

/// Placeholder until the secrets module lands.
#[derive(Debug, thiserror::Error)]
#[error("secret")]
pub struct SecretError;
