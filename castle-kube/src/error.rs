use std::time::Duration;

/// What went wrong with the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server could not be reached.
    #[error("kubernetes API unreachable: {0}")]
    Unreachable(String),
    /// The API server refused a request.
    #[error("kubernetes {verb} {object}: {status} {reason}: {message}")]
    Api {
        /// What Castle did.
        verb: &'static str,
        /// `Kind namespace/name`.
        object: String,
        /// HTTP status.
        status: u16,
        /// Status reason (`Conflict`, `NotFound`, ...).
        reason: String,
        /// The message.
        message: String,
    },
    /// A wait ran out of time; says what was still missing.
    #[error("timed out after {seconds}s waiting for {what}: {missing}")]
    Timeout {
        /// The condition.
        what: String,
        /// What was still missing when time ran out.
        missing: String,
        /// The budget.
        seconds: u64,
    },
    /// An object reported failure (a Stalled Flux object).
    #[error("{object} failed: {message}")]
    Failed {
        /// The object.
        object: String,
        /// Its message.
        message: String,
    },
    /// The kubeconfig cannot be used (no server, unknown context, bad certificates).
    #[error("kubeconfig: {message}")]
    Config {
        /// What is wrong, never the credential itself.
        message: String,
    },
    /// A manifest bundle could not be read or does not match its pin.
    #[error("manifest bundle {source_name}: {message}")]
    Bundle {
        /// The file or URL.
        source_name: String,
        /// What was wrong.
        message: String,
    },
}

impl Error {
    /// Connection failures, 5xx, 429 and webhooks not serving yet (a 500 from the API
    /// server) may pass; a conflict, a refusal or a missing kind will not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable(_) => true,
            Error::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// No Retry-After is modelled.
    pub fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
