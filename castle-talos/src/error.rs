use std::time::Duration;

/// gRPC status codes Castle distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// The node is not reachable or not serving yet.
    Unavailable,
    /// A call took too long.
    DeadlineExceeded,
    /// Not possible yet (etcd not ready, time not in sync, an apply in progress).
    FailedPrecondition,
    /// Already done (etcd bootstrapped).
    AlreadyExists,
    /// The request is malformed (a bad machine config).
    InvalidArgument,
    /// Credentials refused.
    PermissionDenied,
    /// No credentials.
    Unauthenticated,
    /// The server is overloaded or throttling.
    ResourceExhausted,
    /// The node does not implement the call (maintenance mode serves only a few).
    Unimplemented,
    /// Anything else.
    Unknown,
}

/// What went wrong with Talos.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A gRPC call failed.
    #[error("talos {node} {call}: {code:?}: {message}")]
    Rpc {
        /// The node's address.
        node: String,
        /// The call.
        call: &'static str,
        /// The status code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// Generating or parsing key material failed.
    #[error("talos PKI: {0}")]
    Pki(String),
    /// A config, patch or bundle could not be built or parsed.
    #[error("talos config: {0}")]
    Config(String),
    /// Writing a file failed.
    #[error("writing {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Unavailable, deadline, throttling and precondition failures may pass; a bad
    /// config, refused credentials or a local failure will not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Rpc {
                code: Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::FailedPrecondition
                    | Code::ResourceExhausted,
                ..
            }
        )
    }

    /// Talos sends no retry hints.
    pub fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The gRPC code, if a call failed.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
