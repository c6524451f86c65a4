//! The one question Castle asks a git server before handing it to Flux: which
//! refs it advertises to this token. Git's smart HTTP protocol answers it with
//! `GET <repo>/info/refs?service=git-upload-pack` (gitprotocol-http(5)): a
//! pkt-line stream, `# service=git-upload-pack`, a flush, then one line per ref,
//! the first carrying the capabilities after a NUL. Read-only by construction.

use async_trait::async_trait;
use secrecy::SecretString;

/// Why the refs could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// No answer at all.
    #[error("{url}: unreachable: {reason}")]
    Unreachable {
        /// The repository URL (never with credentials).
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server refused the credentials (401/403), or hides the repository
    /// from them (404, as GitHub does for a private repository).
    #[error("{url}: HTTP {status}: the token was refused or cannot see the repository")]
    Refused {
        /// The repository URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// An answer that is not a smart-HTTP ref advertisement.
    #[error("{url}: not a git smart-HTTP answer: {reason}")]
    Protocol {
        /// The repository URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// A git server, asked read-only.
#[async_trait]
pub trait GitRemote: Send + Sync + std::fmt::Debug {
    /// The refs `url` advertises to `token` (sent as HTTP basic auth, user `git`,
    /// as Flux's `flux-system` Secret sends it): `refs/heads/main`, `HEAD`, ...
    async fn refs(&self, url: &str, token: Option<&SecretString>) -> Result<Vec<String>, GitError>;
}

/// Parses a smart-HTTP ref advertisement into ref names.
///
/// # Errors
/// A malformed pkt-line stream or a missing service line.
pub fn parse_advertisement(body: &[u8]) -> Result<Vec<String>, String> {
    let mut refs = Vec::new();
    let mut rest = body;
    let mut saw_service = false;
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or("a pkt-line without a 4-digit hex length")?;
        if len == 0 {
            // A flush: after the service announcement, or at the end.
            rest = &rest[4..];
            continue;
        }
        if len < 4 || len > rest.len() {
            return Err(format!(
                "a pkt-line of length {len} in {} bytes",
                rest.len()
            ));
        }
        let line = &rest[4..len];
        rest = &rest[len..];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.starts_with(b"# service=") {
            saw_service = true;
            continue;
        }
        let line = line.split(|b| *b == 0).next().unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| "a ref line that is not UTF-8")?;
        let (_oid, name) = text
            .split_once(' ')
            .ok_or_else(|| format!("a ref line without a name: {text:?}"))?;
        // An empty repository advertises `capabilities^{}` with a zero id.
        if name != "capabilities^{}" {
            refs.push(name.to_string());
        }
    }
    if !saw_service {
        return Err("no `# service=git-upload-pack` line (a dumb server, or a login page)".into());
    }
    Ok(refs)
}

/// The real git server.
#[cfg(feature = "client")]
#[derive(Debug, Clone)]
pub struct HttpGit {
    http: reqwest::Client,
}

#[cfg(feature = "client")]
impl HttpGit {
    /// A client with connect and request timeouts and verified TLS.
    ///
    /// # Errors
    /// When the TLS stack cannot be set up.
    pub fn new() -> Result<Self, GitError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("git/2.47 (castle/", env!("CARGO_PKG_VERSION"), ")"))
            .build()
            .map_err(|e| GitError::Unreachable {
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Self { http })
    }

    /// Over a given client (tests).
    pub fn with_client(http: reqwest::Client) -> Self {
        Self { http }
    }
}

#[cfg(feature = "client")]
#[async_trait]
impl GitRemote for HttpGit {
    async fn refs(&self, url: &str, token: Option<&SecretString>) -> Result<Vec<String>, GitError> {
        use secrecy::ExposeSecret as _;
        let base = url.trim_end_matches('/');
        let mut req = self
            .http
            .get(format!("{base}/info/refs"))
            .query(&[("service", "git-upload-pack")]);
        if let Some(t) = token {
            req = req.basic_auth("git", Some(t.expose_secret()));
        }
        let resp = req.send().await.map_err(|e| GitError::Unreachable {
            url: url.to_string(),
            reason: if e.is_timeout() {
                "timed out".into()
            } else if e.is_connect() {
                "connection failed".into()
            } else {
                "request failed".into()
            },
        })?;
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403 | 404) {
            return Err(GitError::Refused {
                url: url.to_string(),
                status,
            });
        }
        let body = resp.bytes().await.map_err(|e| GitError::Unreachable {
            url: url.to_string(),
            reason: format!("reading the answer: {}", e.without_url()),
        })?;
        if status != 200 {
            return Err(GitError::Protocol {
                url: url.to_string(),
                reason: format!("HTTP {status}"),
            });
        }
        parse_advertisement(&body).map_err(|reason| GitError::Protocol {
            url: url.to_string(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(s: &str) -> String {
        format!("{:04x}{s}", s.len() + 4)
    }

    /// The layout gitprotocol-http(5) gives for a smart server's answer.
    #[test]
    fn a_smart_http_advertisement_yields_its_ref_names() {
        let body = format!(
            "{}0000{}{}{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt(
                "95dcfa3633004da0049d3d0fa03f80589cbcaf31 HEAD\0multi_ack side-band-64k symref=HEAD:refs/heads/main\n"
            ),
            pkt("95dcfa3633004da0049d3d0fa03f80589cbcaf31 refs/heads/main\n"),
            pkt("d049f6c27a2244e12041955e262a404c7faba355 refs/tags/v1.0\n"),
        );
        assert_eq!(
            parse_advertisement(body.as_bytes()).unwrap_or_default(),
            ["HEAD", "refs/heads/main", "refs/tags/v1.0"]
        );
    }

    #[test]
    fn an_empty_repository_has_no_refs_and_a_login_page_is_no_answer() {
        let empty = format!(
            "{}0000{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt("0000000000000000000000000000000000000000 capabilities^{}\0agent=git/2\n"),
        );
        assert_eq!(parse_advertisement(empty.as_bytes()), Ok(vec![]));
        assert!(parse_advertisement(b"<html>Sign in</html>").is_err());
        assert!(parse_advertisement(b"00ffshort").is_err());
    }
}
