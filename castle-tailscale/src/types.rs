use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The control plane's limit on key descriptions.
pub const MAX_DESCRIPTION: usize = 50;

/// The control plane's limit on auth key lifetimes: 90 days.
pub const MAX_EXPIRY_SECONDS: u64 = 90 * 24 * 3600;

/// What a minted key may do: the rebirth's key policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    /// One key for several nodes; a single-use key admits only the first node.
    pub reusable: bool,
    /// Devices are removed some time after they go offline.
    pub ephemeral: bool,
    /// Devices need no approval by an admin.
    pub preauthorized: bool,
    /// Tags the devices get (`tag:name`); keys minted by an OAuth client must carry
    /// tags the client may assign.
    pub tags: Vec<String>,
    /// Life of the key, 1 s to 90 days.
    pub expiry_seconds: u64,
    /// At most 50 characters: letters, digits, hyphens and spaces.
    pub description: String,
}

impl KeyRequest {
    /// Checks what the control plane would refuse, before anything is sent.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field and the rule.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidRequest { reason });
        if self.tags.is_empty() {
            return invalid(
                "no tags: keys minted by an OAuth client must carry tags like `tag:k8s`".into(),
            );
        }
        for t in &self.tags {
            if let Err(rule) = check_tag(t) {
                return invalid(format!("tag({t:?}): {rule}"));
            }
        }
        let chars = self.description.chars().count();
        if chars > MAX_DESCRIPTION {
            return invalid(format!(
                "description has {chars} characters; the API allows at most {MAX_DESCRIPTION}"
            ));
        }
        if let Some(c) = self
            .description
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == ' '))
        {
            return invalid(format!(
                "description contains {c:?}; the API allows letters, digits, hyphens and spaces"
            ));
        }
        if self.expiry_seconds == 0 || self.expiry_seconds > MAX_EXPIRY_SECONDS {
            return invalid(format!(
                "expiry of {} s is outside 1 s to 90 days (0 would mean the 90-day default)",
                self.expiry_seconds
            ));
        }
        Ok(())
    }
}

/// tailscale.com/tailcfg `CheckTag`, which the control plane holds every requested
/// tag to: `tag:`, then an ASCII letter, then ASCII letters, digits and `-`. Its
/// words, so a refusal reads as Tailscale's would.
pub fn check_tag(tag: &str) -> std::result::Result<(), &'static str> {
    let Some(name) = tag.strip_prefix("tag:") else {
        return Err("tags must start with 'tag:'");
    };
    let Some(first) = name.bytes().next() else {
        return Err("tag names must not be empty");
    };
    if !first.is_ascii_alphabetic() {
        return Err("tag names must start with a letter, after 'tag:'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("tag names can only contain numbers, letters, or dashes");
    }
    Ok(())
}

/// A minted key: the value is shown once and lives only in memory.
#[derive(Clone)]
pub struct AuthKey {
    /// The key's id (not secret): what revoking takes.
    pub id: String,
    /// `tskey-auth-...`.
    pub key: SecretString,
    /// RFC 3339 expiry.
    pub expires: String,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("id", &self.id)
            .field("key", &"(redacted)")
            .field("expires", &self.expires)
            .finish()
    }
}

/// A device of the tailnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `nodeId`: what `DELETE /device/{id}` takes.
    pub node_id: String,
    /// The hostname the node announced; the control plane never suffixes it.
    pub hostname: String,
    /// The MagicDNS name it got (`name-1.tailnet.ts.net` when `name` was taken).
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Ephemeral device.
    pub ephemeral: bool,
    /// `connectedToControl`: connected to the control plane now; `None` when the
    /// API did not say, which Castle treats as "maybe online" (never as offline).
    pub connected: Option<bool>,
}

/// An auth key as `GET /tailnet/{tailnet}/keys` lists it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// `auth`, `client`, `api` or `federated`.
    pub key_type: String,
    /// The description given when it was minted.
    pub description: String,
    /// Revoked or expired (`invalid` in a single-key answer).
    pub invalid: bool,
}

/// What the token endpoint granted: the scopes an access token carries. The
/// token itself is dropped at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The answer's `scope`, split on spaces (RFC 6749 5.1; Tailscale sends it);
    /// empty when the answer names none.
    pub scopes: Vec<String>,
    /// Lifetime of the token in seconds, when the answer says.
    pub expires_in: Option<u64>,
}

/// The OAuth client's own record (`keyType: client`): what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OauthClientInfo {
    /// The scopes it was created with.
    pub scopes: Vec<String>,
    /// The tags it may give keys (and the tags those own in `tagOwners`).
    pub tags: Vec<String>,
}

impl Device {
    /// The first label of the MagicDNS name: `lab-cp-1-1` for `lab-cp-1-1.tail0000.ts.net`.
    pub fn short_name(&self) -> &str {
        self.name.split('.').next().unwrap_or(&self.name)
    }
}
