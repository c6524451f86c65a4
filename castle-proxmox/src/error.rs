//! One error type for every way a Proxmox call can fail; it classifies itself.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::PeerCert;

/// What went wrong talking to Proxmox VE. No variant ever holds the API token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request never reached the server (DNS, connect, TLS handshake): it had no
    /// effect and is safe to repeat.
    #[error(
        "proxmox at {endpoint} is unreachable: {reason}; check proxmox.endpoint and the network"
    )]
    Unreachable {
        /// The API base URL.
        endpoint: String,
        /// What the transport said.
        reason: String,
    },
    /// The TLS handshake failed on the server's certificate: nothing was sent, and
    /// waiting will not help.
    #[error(
        "proxmox at {endpoint}: the server's TLS certificate is not trusted ({reason}){}; {}",
        chain_text(chain),
        tls_fix(chain)
    )]
    Tls {
        /// The API base URL.
        endpoint: String,
        /// What the TLS layer said (`invalid peer certificate: UnknownIssuer`, ...).
        reason: String,
        /// The certificates the server presented, leaf first (empty when a second
        /// look at them failed too).
        chain: Vec<PeerCert>,
    },
    /// The request was sent but no answer came (timeout, connection reset): the
    /// server may have acted on it.
    #[error("proxmox {method} {path}: no answer ({reason}); the call may have taken effect")]
    NoAnswer {
        /// HTTP method.
        method: &'static str,
        /// API path below `/api2/json`.
        path: String,
        /// What the transport said.
        reason: String,
    },
    /// The API answered with an error status.
    #[error("proxmox {method} {path}: {status} {message}{}{}", params_text(params), hint(*status))]
    Api {
        /// HTTP method.
        method: &'static str,
        /// API path below `/api2/json`.
        path: String,
        /// HTTP status.
        status: u16,
        /// The server's message (or the reason phrase when it sent none).
        message: String,
        /// A 400's per-parameter messages.
        params: BTreeMap<String, String>,
    },
    /// A task ran and ended with an error.
    #[error("proxmox task {upid} failed: {exitstatus}{}", log_text(log_tail))]
    Task {
        /// The task.
        upid: String,
        /// Its exit status.
        exitstatus: String,
        /// The last lines of its log.
        log_tail: Vec<String>,
    },
    /// A wait ran out of time.
    #[error("proxmox: gave up after {}s waiting for {what}", waited.as_secs())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A VMID Castle was told to use belongs to something else.
    #[error(
        "proxmox: vmid {vmid} is taken by `{owner}`, which is not Castle's ({reason}); free the id or change it in the config"
    )]
    NotOurs {
        /// The contested id.
        vmid: u32,
        /// The current holder's name.
        owner: String,
        /// Why it does not count as ours.
        reason: String,
    },
    /// Castle was about to touch a VM outside what it owns.
    #[error("proxmox: refusing to touch vmid {vmid}: {reason}")]
    Fence {
        /// The VM.
        vmid: u32,
        /// Why it is out of bounds.
        reason: String,
    },
    /// A template (or a VM cloned from it) Castle cannot use as it is.
    #[error("proxmox: vm {vmid}: {reason}")]
    Template {
        /// The template or VM.
        vmid: u32,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A VM disappeared while Castle was working on it (someone deleted it).
    #[error("proxmox: vmid {vmid} disappeared while {during}")]
    Vanished {
        /// The VM.
        vmid: u32,
        /// What Castle was doing.
        during: String,
    },
    /// The server answered with something this client cannot read.
    #[error("proxmox {path}: unexpected response: {reason}")]
    Decode {
        /// API path.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A request Proxmox would refuse, not sent.
    #[error("proxmox: not sent: {what}: {reason}")]
    Invalid {
        /// The request and its parameter.
        what: String,
        /// Why Proxmox would refuse it.
        reason: String,
    },
    /// Local setup failed (CA file, endpoint URL, HTTP client).
    #[error("proxmox client setup: {0}")]
    Setup(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads an error answer the way every pve-http-server writes one. Since
/// libpve-http-server-perl 5.2.0 the body carries `message`; before it (PVE 7.x,
/// unpatched 8.0-8.3) the body is `{"data":null}` and the text is only in the
/// status line's reason phrase, which therefore comes second. Only without
/// either does the standard phrase stand in.
pub(crate) fn from_answer(
    method: &'static str,
    path: &str,
    status: u16,
    reason_phrase: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Error {
    use serde_json::Value;
    let params: BTreeMap<String, String> = body
        .and_then(|b| b.get("errors"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), text.trim().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let in_body = body
        .and_then(|b| b.get("message"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let phrase = reason_phrase.map(str::trim).filter(|m| !m.is_empty());
    let message = match (in_body, phrase) {
        (Some(m), _) | (None, Some(m)) => m.to_string(),
        (None, None) if status == 400 && !params.is_empty() => {
            "Parameter verification failed.".to_string()
        }
        (None, None) => canonical_reason(status).to_string(),
    };
    Error::Api {
        method,
        path: path.to_string(),
        status,
        message,
        params,
    }
}

/// The standard phrase of the statuses Proxmox answers with.
pub(crate) fn canonical_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        596 => "Broken Pipe",
        _ => "error",
    }
}

fn params_text(params: &BTreeMap<String, String>) -> String {
    if params.is_empty() {
        return String::new();
    }
    let list: Vec<String> = params.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", list.join("; "))
}

fn chain_text(chain: &[PeerCert]) -> String {
    let Some(leaf) = chain.first() else {
        return String::new();
    };
    let mut text = format!(
        "; it presented `{}` issued by `{}` (sha256 {})",
        leaf.subject, leaf.issuer, leaf.sha256
    );
    for c in chain.iter().skip(1) {
        text.push_str(&format!(
            ", then `{}` issued by `{}` (sha256 {})",
            c.subject, c.issuer, c.sha256
        ));
    }
    text
}

/// Which CA to pin: the chain's self-issued root when the server sent one, else
/// the issuer of its last certificate, which on Proxmox VE is the cluster CA in
/// `/etc/pve/pve-root-ca.pem`.
pub(crate) fn tls_fix(chain: &[PeerCert]) -> String {
    let how = "set proxmox.ca_file = \"pve-root-ca.pem\" (a copy of /etc/pve/pve-root-ca.pem \
               from the Proxmox host; `openssl x509 -in pve-root-ca.pem -noout -subject \
               -fingerprint -sha256` shows what you pin)";
    match chain.iter().find(|c| c.is_self_issued()) {
        Some(root) => format!(
            "pin the CA `{}` (sha256 {}): {how}",
            root.subject, root.sha256
        ),
        None => match chain.last() {
            Some(last) => format!("pin the CA `{}`: {how}", last.issuer),
            None => format!("pin the CA that issued the server's certificate: {how}"),
        },
    }
}

fn log_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; log tail:\n{}", tail.join("\n"))
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => "; check proxmox.token_id and the token secret",
        403 => "; the API token lacks a privilege for this call (or privilege separation hides it)",
        _ => "",
    }
}

/// Proxmox answers storage and config lock contention with this text.
pub(crate) fn is_lock_timeout(message: &str) -> bool {
    message.contains("can't lock file") && message.contains("got timeout")
}

/// Proxmox reports most failures as 500; these ones will not pass by waiting.
fn is_permanent_500(message: &str) -> bool {
    const PERMANENT: [&str; 12] = [
        "hostname lookup",
        "no such task",
        "already exists",
        "does not exist",
        "not supported",
        "you can't start a vm if it's a template",
        "is running - destroy failed",
        "still in use by linked clone",
        // pve-guest-common AbstractConfig::check_protection: "can't remove VM N -
        // protection mode enabled" until someone clears the flag.
        "protection mode enabled",
        "not allowed for linked clones",
        "no such cluster node",
        "uses local storage",
    ];
    PERMANENT.iter().any(|p| message.contains(p))
}

impl Error {
    /// Whether trying again later may succeed: transport failures, 5xx (except the
    /// 500s that state a fact, such as "VM 421 already exists") and lock timeouts.
    /// 400, 401, 403 and 404 are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::NoAnswer { .. }
            | Error::Timeout { .. }
            | Error::Vanished { .. } => true,
            Error::Tls { .. } => false,
            Error::Api {
                status, message, ..
            } => is_lock_timeout(message) || (*status >= 500 && !is_permanent_500(message)),
            Error::Task { exitstatus, .. } => is_lock_timeout(exitstatus),
            Error::NotOurs { .. }
            | Error::Fence { .. }
            | Error::Template { .. }
            | Error::Decode { .. }
            | Error::Invalid { .. }
            | Error::Setup(_) => false,
        }
    }

    /// Proxmox sends no `Retry-After`; a lock holder needs a few seconds to finish.
    pub fn retry_after(&self) -> Option<Duration> {
        let locked = match self {
            Error::Api { message, .. } => is_lock_timeout(message),
            Error::Task { exitstatus, .. } => is_lock_timeout(exitstatus),
            _ => false,
        };
        locked.then_some(Duration::from_secs(3))
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the token lacks a privilege for the call (403).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::Api { status: 403, .. })
    }

    /// Whether the server said the VM is not there.
    pub(crate) fn is_missing_vm(&self) -> bool {
        // Only the VM's own config file counts: "storage 'x' does not exist" does not.
        matches!(self, Error::Api { message, .. }
            if message.contains("qemu-server/") && message.contains(".conf' does not exist"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> Error {
        Error::Api {
            method: "POST",
            path: "/nodes/pve/qemu/9000/clone".into(),
            status,
            message: message.into(),
            params: BTreeMap::new(),
        }
    }

    #[test]
    fn classification() {
        let lock = "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout";
        assert!(api(500, lock).is_transient());
        assert_eq!(api(500, lock).retry_after(), Some(Duration::from_secs(3)));
        assert!(api(502, "Bad Gateway").is_transient());
        assert!(api(596, "Connection timed out").is_transient());
        assert!(!api(500, "VM 421 already exists on node 'pve'").is_transient());
        for status in [400, 401, 403, 404] {
            assert!(!api(status, "no").is_transient(), "{status}");
        }
        let task = Error::Task {
            upid: "u".into(),
            exitstatus: lock.into(),
            log_tail: vec![],
        };
        assert!(task.is_transient());
    }

    #[test]
    fn bad_request_names_each_parameter() {
        let mut params = BTreeMap::new();
        params.insert(
            "memory".to_string(),
            "value must have a minimum value of 16".to_string(),
        );
        let e = Error::Api {
            method: "PUT",
            path: "/nodes/pve/qemu/421/config".into(),
            status: 400,
            message: "Parameter verification failed.".into(),
            params,
        };
        assert_eq!(
            e.to_string(),
            "proxmox PUT /nodes/pve/qemu/421/config: 400 Parameter verification failed. (memory: value must have a minimum value of 16)"
        );
    }
}
