//! Errors of the engine, and the classification every step error carries.

use std::time::Duration;

/// How the executor should treat a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Worth another attempt: a connection drop, a 5xx, a lock timeout, a sealed Vault.
    Transient,
    /// Another attempt would fail the same way until a person changes something.
    Permanent,
    /// The run was cancelled (Ctrl-C) while the step waited.
    Cancelled,
    /// The step ran out of its time budget.
    Timeout,
}

/// Why a step failed: what, where, and whether to try again. Never holds a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct StepError {
    /// The classification the executor acts on.
    pub kind: ErrorKind,
    /// What failed and what to do, in words (names resources, never secret values).
    pub message: String,
    /// The resource the failure concerns (`vm 421`, `vault secret/castle/lab`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The server asked us to wait this long before trying again.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// The failed call may have taken effect and repeating it could do harm (a
    /// second auth key minted): the executor does not retry it, transient or not.
    #[serde(skip)]
    pub unsafe_to_retry: bool,
}

impl StepError {
    /// A failure that another attempt may cure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// A failure that needs a person.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// The run was cancelled while this step was waiting.
    pub fn cancelled() -> Self {
        Self::new(
            ErrorKind::Cancelled,
            "cancelled before it finished; run `castle create --resume` to go on",
        )
    }

    /// The step's time budget ran out.
    pub fn timeout(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, what)
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            resource: None,
            retry_after: None,
            unsafe_to_retry: false,
        }
    }

    /// Names the resource the failure concerns.
    #[must_use]
    pub fn on(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Prefixes the message with what the step was doing.
    #[must_use]
    pub fn context(mut self, doing: impl std::fmt::Display) -> Self {
        self.message = format!("{doing}: {}", self.message);
        self
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Whether the executor may run the step again: transient, and the service
    /// said repeating the failed call can do no harm.
    pub fn is_retryable(&self) -> bool {
        self.is_transient() && !self.unsafe_to_retry
    }

    /// Builds a step error from any service error that classifies itself.
    pub fn from_service<E: Classify>(error: &E) -> Self {
        let mut step = if error.is_transient() {
            Self::transient(error.to_string())
        } else {
            Self::permanent(error.to_string())
        };
        step.retry_after = error.retry_after();
        step.unsafe_to_retry = error.is_transient() && !error.is_safe_to_retry();
        step
    }
}

/// Implemented by every service crate's error: the executor asks, it never parses.
pub trait Classify: std::fmt::Display {
    /// Whether another attempt may succeed.
    fn is_transient(&self) -> bool;
    /// How long the server asked us to wait, if it said.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// Whether repeating the failed call can do no harm. Most calls are
    /// idempotent, so by default whatever is transient is safe.
    fn is_safe_to_retry(&self) -> bool {
        self.is_transient()
    }
}

/// Errors of the engine itself: configuration, journal, run outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// castle.toml is malformed; the message lists every located issue.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A secret reference could not be resolved.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// The journal could not be read, written or locked.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// A step failed; the run stopped after what could still finish.
    #[error("step `{step}` failed: {error}")]
    StepFailed {
        /// The step that failed first.
        step: String,
        /// Its error.
        error: StepError,
    },
    /// The run was cancelled (Ctrl-C or the overall timeout); the journal records where.
    #[error("run cancelled: {reason}; run `castle create --resume` to finish")]
    Cancelled {
        /// Why the run stopped.
        reason: String,
    },
    /// The step graph itself is inconsistent (a missing dependency or a cycle).
    #[error("step graph: {0}")]
    Graph(String),
    /// A file Castle was asked to create exists already (`castle init`); Castle
    /// never overwrites it.
    #[error("{} exists already; `castle init` never overwrites a file: choose a new directory, or edit that one", path.display())]
    Exists {
        /// The file.
        path: std::path::PathBuf,
    },
    /// Reading or writing a file Castle owns failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What Castle was doing.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
