use std::time::Duration;

/// What went wrong with the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server could not be reached.
    #[error("kubernetes API unreachable: {0}")]
    Unreachable(String),
    /// The API server refused a request.
    #[error(
        "kubernetes {verb} {object}: {status}{}: {message}",
        reason_suffix(reason)
    )]
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
    /// The TLS handshake with the API server failed: the kubeconfig's CA did not sign
    /// the server's certificate, or the server refused the client certificate. Waiting
    /// does not fix either.
    #[error("kubernetes API {server}: TLS: {message}")]
    Tls {
        /// The API server URL.
        server: String,
        /// What did not verify, with its cause.
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

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    }
}

/// Messages of a 500 that is the manifest's fault, not the server's: server-side apply
/// answers a field of the wrong type with "failed to create typed patch object"
/// (kubernetes `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`, the
/// applyPatcher; the field path and expected type come from sigs.k8s.io/structured-merge-diff
/// `typed/validate.go`), and Secret `data` that is not base64 with Go's
/// "illegal base64 data at input byte N" when the object is decoded. Sending the same
/// body again gets the same answer.
const MANIFEST_FAULTS_AS_500: &[&str] = &[
    "failed to create typed patch object",
    "illegal base64 data",
    "failed to convert new object",
    "failed to convert original object",
];

/// Whether a 500 says the request body itself is wrong.
pub(crate) fn is_manifest_fault(message: &str) -> bool {
    MANIFEST_FAULTS_AS_500.iter().any(|m| message.contains(m))
}

impl Error {
    /// Connection failures, 5xx, 429 and webhooks not serving yet (a 500 from the API
    /// server) may pass; a conflict, a refusal, a missing kind, a TLS failure or a 500
    /// that names a field of the wrong type will not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable(_) => true,
            Error::Api {
                status, message, ..
            } => (*status >= 500 && !is_manifest_fault(message)) || *status == 429,
            _ => false,
        }
    }

    /// The HTTP status of an API refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// No Retry-After is modelled.
    pub fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
