//! castle.toml (being written).

/// Placeholder until the config module lands.
#[derive(Debug, thiserror::Error)]
#[error("config")]
pub struct ConfigError;
