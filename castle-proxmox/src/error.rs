use std::time::Duration;

/// What went wrong talking to Proxmox VE.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached.
    #[error("proxmox {endpoint} unreachable: {reason}")]
    Unreachable {
        /// The server.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The API answered with an error status.
    #[error("proxmox {method} {path}: {status} {message}{}", params_text(params))]
    Api {
        /// HTTP method.
        method: &'static str,
        /// API path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// Per-parameter messages of a 400.
        params: Vec<(String, String)>,
    },
    /// A task ended with an error.
    #[error("proxmox task {upid} failed: {exitstatus}; log tail: {log_tail}")]
    Task {
        /// The task.
        upid: String,
        /// Its exit status.
        exitstatus: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A wait ran out of time.
    #[error("proxmox: timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// The response had an unexpected shape.
    #[error("proxmox {path}: unexpected response: {reason}")]
    Decode {
        /// API path.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A VM is not ours to touch, or a precondition does not hold.
    #[error("proxmox: {0}")]
    Refused(String),
    /// Local setup (CA file) failed.
    #[error("proxmox setup: {0}")]
    Setup(String),
}

fn params_text(params: &[(String, String)]) -> String {
    if params.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            params
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

impl Error {
    /// Connection failures, 5xx and storage lock timeouts may pass; 4xx will not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout { .. } => true,
            Error::Api {
                status, message, ..
            } => *status >= 500 || *status == 429 || is_lock_timeout(message),
            Error::Task { exitstatus, .. } => is_lock_timeout(exitstatus),
            _ => false,
        }
    }

    /// Proxmox sends no Retry-After.
    pub fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn is_lock_timeout(message: &str) -> bool {
    message.contains("can't lock file") && message.contains("got timeout")
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
