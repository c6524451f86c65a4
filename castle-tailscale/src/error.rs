use std::fmt;
use std::time::Duration;

/// The call Castle was making.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `POST /api/v2/oauth/token`.
    Token,
    /// `POST /tailnet/{tailnet}/keys`.
    CreateKey,
    /// `GET /tailnet/{tailnet}/devices`.
    ListDevices,
    /// `DELETE /device/{nodeId}`.
    DeleteDevice,
    /// `DELETE /tailnet/{tailnet}/keys/{id}`.
    RevokeKey,
    /// `GET /tailnet/{tailnet}/keys`.
    ListKeys,
    /// `GET /tailnet/{tailnet}/acl`.
    ReadPolicy,
    /// `GET /tailnet/{tailnet}/keys/{clientId}`.
    ReadClient,
}

impl Op {
    /// Whether repeating the call is harmless. Minting is not: a second mint makes a
    /// second live key. A second token is harmless, it merely replaces the first.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Op::CreateKey)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Token => "exchanging the OAuth client for an access token",
            Op::CreateKey => "creating an auth key",
            Op::ListDevices => "listing devices",
            Op::DeleteDevice => "deleting a device",
            Op::RevokeKey => "revoking an auth key",
            Op::ListKeys => "listing auth keys",
            Op::ReadPolicy => "reading the policy file",
            Op::ReadClient => "reading the OAuth client's own record",
        })
    }
}

/// What went wrong talking to Tailscale. Never holds a key, token or client secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No answer from the API.
    #[error("tailscale, {op}: no answer from the API: {reason}")]
    Unreachable {
        /// The call.
        op: Op,
        /// What the transport said.
        reason: String,
        /// Whether the request may have reached the server (false: the connection
        /// was never made).
        sent: bool,
    },
    /// The API answered with an error.
    #[error("tailscale, {op}: HTTP {status}: {message}{hint}")]
    Api {
        /// The call.
        op: Op,
        /// HTTP status.
        status: u16,
        /// The server's `message`.
        message: String,
        /// What to do about it.
        hint: &'static str,
        /// From `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The answer had an unexpected shape.
    #[error("tailscale, {op}: unexpected response: {reason}")]
    Decode {
        /// The call.
        op: Op,
        /// What was wrong.
        reason: String,
    },
    /// A mint whose answer never came (a timeout, a 5xx): the server may have made
    /// a key. The keys this run minted were looked up by their description and
    /// revoked, so minting again is safe.
    #[error(
        "tailscale, creating an auth key: {reason}; the server may have minted it, so the {revoked} key(s) described `{description}` were revoked"
    )]
    MintRolledBack {
        /// What the failed mint said.
        reason: String,
        /// The run's key description.
        description: String,
        /// How many keys were found and revoked.
        revoked: usize,
    },
    /// A mint whose answer never came, and the keys it may have made could not be
    /// looked up or revoked: one may be live until it expires.
    #[error(
        "tailscale, creating an auth key: {reason}; a key may have been minted and could not be cleaned up ({cleanup}); revoke keys described `{description}` in the admin console, or let them expire"
    )]
    MintUnresolved {
        /// What the failed mint said.
        reason: String,
        /// Why the cleanup failed.
        cleanup: String,
        /// The run's key description.
        description: String,
    },
    /// A key request the control plane would refuse; nothing was sent.
    #[error("tailscale: invalid key request: {reason}")]
    InvalidRequest {
        /// The field and the rule.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("tailscale: cannot set up the HTTP client: {reason}")]
    Setup {
        /// Why.
        reason: String,
    },
    /// A node's tailscaled could not join (mock control plane).
    #[error("tailscale: {hostname} cannot join the tailnet: {reason}")]
    Join {
        /// The joining node.
        hostname: String,
        /// tailscaled's error, e.g. `invalid key: ...`.
        reason: String,
    },
    /// The mock was driven wrongly (unknown operation, a bad snapshot).
    #[error("tailscale mock: {reason}")]
    Mock {
        /// Why.
        reason: String,
    },
}

impl Error {
    #[cfg(any(feature = "client", feature = "mock"))]
    pub(crate) fn api(op: Op, status: u16, message: String, retry_after: Option<Duration>) -> Self {
        let hint = match status {
            400 if op == Op::CreateKey && message.contains("tag") => {
                " (the key's tags must be tags the OAuth client may assign)"
            }
            401 | 403 => {
                " (Castle's OAuth client needs the scopes `auth_keys` (mint, list and \
                 revoke auth keys) and `devices:core` (list and delete devices; \
                 `devices:core:read` alone cannot delete), and the tags it may assign \
                 must cover the key's tags)"
            }
            429 => " (rate limited: wait as asked)",
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

    /// Connection failures, 408, 429 and 5xx may pass on their own.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::MintRolledBack { .. }
            | Error::MintUnresolved { .. } => true,
            Error::Api { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            _ => false,
        }
    }

    /// Whether repeating the call cannot do harm: transient, and either idempotent or
    /// certainly not carried out. A failed mint whose request may have arrived
    /// (a timeout, a 5xx) is not safe: the server may have minted a key.
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            Error::Unreachable { op, sent, .. } => op.is_idempotent() || !sent,
            Error::Api { op, status, .. } => {
                self.is_transient() && (op.is_idempotent() || *status == 429)
            }
            Error::MintRolledBack { .. } => true,
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

    /// The thing asked for does not exist (a device already gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { status: 404, .. })
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
