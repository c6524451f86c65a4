use std::time::Duration;

/// What went wrong talking to Vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached or the connection dropped.
    #[error("vault {address} unreachable: {reason}")]
    Unreachable {
        /// The server.
        address: String,
        /// Why.
        reason: String,
    },
    /// Vault answered with an error status.
    #[error("vault {method} {path}: {status} {}{hint}", errors.join("; "))]
    Api {
        /// HTTP method.
        method: &'static str,
        /// The API path (never a value).
        path: String,
        /// HTTP status.
        status: u16,
        /// Vault's `errors` array.
        errors: Vec<String>,
        /// What to do about it.
        hint: &'static str,
    },
    /// The response did not have the expected shape.
    #[error("vault {path}: unexpected response: {reason}")]
    Decode {
        /// The API path.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The spec is inconsistent (a reference to something it does not define).
    #[error("vault spec: {0}")]
    Spec(String),
    /// A CA file or other local input could not be read.
    #[error("vault setup: {0}")]
    Setup(String),
}

impl Error {
    pub(crate) fn api(method: &'static str, path: &str, status: u16, errors: Vec<String>) -> Self {
        let hint = match status {
            403 => {
                " (the token lacks a policy for this path, or it expired: check the token's policies)"
            }
            503 => " (Vault is sealed or in standby: unseal it, Castle retries)",
            _ => "",
        };
        Error::Api {
            method,
            path: path.to_string(),
            status,
            errors,
            hint,
        }
    }

    /// Whether another attempt may succeed: connection failures, 5xx (503 sealed), 429,
    /// and the 400 a KV v2 mount answers while it upgrades itself right after it
    /// was enabled ("will resume service shortly").
    ///
    /// The database engine answers some configuration mistakes with a 500 (a role
    /// its connection does not allow, a connection that does not exist); retrying
    /// those only delays the report, so they are permanent.
    pub fn is_transient(&self) -> bool {
        const PERMANENT_500: [&str; 3] = [
            "is not an allowed role",
            "failed to find entry for connection",
            "empty creation statements",
        ];
        match self {
            Error::Unreachable { .. } => true,
            Error::Api {
                status: 400,
                errors,
                ..
            } => errors.iter().any(|e| e.contains(KV_UPGRADING)),
            Error::Api { status, errors, .. } => {
                (*status >= 500 || *status == 429)
                    && !errors
                        .iter()
                        .any(|e| PERMANENT_500.iter().any(|p| e.contains(p)))
            }
            _ => false,
        }
    }

    /// Vault does not send Retry-After.
    pub fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// Whether Vault refused a KV v2 write because its `options.cas` no longer
    /// names the current version: another writer got there first.
    pub fn is_cas_mismatch(&self) -> bool {
        matches!(self, Error::Api { status: 400, errors, .. }
            if errors.iter().any(|m| m.contains("check-and-set parameter did not match")))
    }

    /// The HTTP status, if Vault answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a KV v2 mount answers (400) while it upgrades itself after being enabled
/// (OpenBao 2.7.2, seen in this project's tests).
const KV_UPGRADING: &str = "Upgrading from non-versioned to versioned data";

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kv_mount_upgrading_itself_is_transient_other_400s_are_not() {
        let upgrading = Error::api(
            "GET",
            "secret/data/x",
            400,
            vec!["Upgrading from non-versioned to versioned data. This backend will be unavailable for a brief period and will resume service shortly.".into()],
        );
        assert!(upgrading.is_transient());
        let cas = Error::api(
            "POST",
            "secret/data/x",
            400,
            vec!["check-and-set parameter did not match the current version".into()],
        );
        assert!(!cas.is_transient() && cas.is_cas_mismatch());
    }
}
