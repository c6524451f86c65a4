use std::time::Duration;

/// What went wrong talking to Tailscale.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API could not be reached.
    #[error("tailscale API unreachable: {0}")]
    Unreachable(String),
    /// The API answered with an error.
    #[error("tailscale {op}: {status} {message}{hint}")]
    Api {
        /// What Castle was doing.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// The server's `message`.
        message: String,
        /// What to do.
        hint: &'static str,
        /// From Retry-After.
        retry_after: Option<Duration>,
    },
    /// The response had an unexpected shape.
    #[error("tailscale {op}: unexpected response: {reason}")]
    Decode {
        /// What Castle was doing.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A request Castle refuses to send.
    #[error("tailscale: {0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn api(
        op: &'static str,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    ) -> Self {
        let hint = match status {
            401 | 403 => {
                " (check the OAuth client's scopes: auth_keys to mint keys, devices:core to list and delete devices; and that it may assign the tags)"
            }
            429 => " (rate limited: Castle waits as asked)",
            _ => "",
        };
        Error::Api {
            op,
            status,
            message,
            hint,
            retry_after,
        }
    }

    /// Connection failures, 429 and 5xx may pass.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable(_) => true,
            Error::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The wait the server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
