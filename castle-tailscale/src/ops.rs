//! The tailnet-key step's operations, against any [`TailscaleApi`].
//!
//! A device is the cluster's when its hostname is one of the cluster's and it
//! carries one of the cluster's tags. The control plane never suffixes the
//! hostname, only the MagicDNS name (`lab-cp-1-1`), so matching on the hostname
//! catches suffixed devices while a foreign node literally named `lab-cp-1-1`
//! stays untouched.

use crate::{AuthKey, Device, Error, KeyRequest, Result, TailscaleApi};

mod preflight;

pub use preflight::{Preflight, preflight};

/// The OAuth scopes Castle's client needs: `auth_keys` to mint, list and revoke
/// auth keys; `devices:core` to list and delete devices (`devices:core:read` can
/// only list). The client must also be allowed to assign the key's tags.
pub const REQUIRED_SCOPES: [&str; 2] = ["auth_keys", "devices:core"];

/// How many mints one call may send when answers get lost.
const MINT_ATTEMPTS: usize = 3;

/// Mints the rebirth's one key, after checking what the API would refuse
/// (tags, description, expiry), so an invalid policy sends nothing.
///
/// `request.description` must be unique to the run (see [`run_description`]): it is
/// how a key whose mint answer was lost is found again. After such an ambiguous
/// failure (a timeout or a 5xx once the request was sent), the keys carrying the
/// description are listed and revoked, and the mint is sent again; so at most one
/// key of the run stays live, the one returned.
///
/// # Errors
/// [`crate::Error::InvalidRequest`]; the API's error; [`Error::MintRolledBack`]
/// (safe to retry) when every mint was ambiguous but cleaned up;
/// [`Error::MintUnresolved`] (not safe to retry) when the cleanup failed.
pub async fn mint_rebirth_key(api: &dyn TailscaleApi, request: &KeyRequest) -> Result<AuthKey> {
    request.validate()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match api.create_key(request).await {
            Ok(key) => return Ok(key),
            // Nothing was minted (never sent, refused, rate limited): the caller decides.
            Err(e) if e.is_safe_to_retry() || !e.is_transient() => return Err(e),
            Err(e) => e,
        };
        let revoked = match with_retries(|| revoke_keys_described(api, &request.description)).await
        {
            Ok(n) => n,
            Err(cleanup) => {
                return Err(Error::MintUnresolved {
                    reason: e.to_string(),
                    cleanup: cleanup.to_string(),
                    description: request.description.clone(),
                });
            }
        };
        if attempt >= MINT_ATTEMPTS {
            return Err(Error::MintRolledBack {
                reason: e.to_string(),
                description: request.description.clone(),
                revoked,
            });
        }
    }
}

/// Runs a safe-to-repeat operation up to five times while it fails transiently,
/// waiting 1 s doubling (or what the server asked for) in between.
async fn with_retries<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = std::time::Duration::from_secs(1);
    let mut left = 5;
    loop {
        match op().await {
            Err(e) if e.is_safe_to_retry() && left > 1 => {
                left -= 1;
                tokio::time::sleep(e.retry_after().unwrap_or(delay).max(delay)).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}

/// Revokes every live auth key whose description is `description`; returns how
/// many. Revoking a key that went away meanwhile counts as done.
///
/// # Errors
/// The listing or a revocation failed.
pub async fn revoke_keys_described(api: &dyn TailscaleApi, description: &str) -> Result<usize> {
    let mut revoked = 0;
    for k in api.list_keys().await? {
        if k.key_type != "auth" || k.invalid || k.description != description {
            continue;
        }
        match api.revoke_key(&k.id).await {
            Ok(()) => revoked += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(revoked)
}

/// A key description unique to one run: `castle <cluster> <nonce>`, within the
/// API's 50 characters of letters, digits, hyphens and spaces.
pub fn run_description(cluster: &str, nonce: &str) -> String {
    let cluster: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(crate::MAX_DESCRIPTION - "castle  ".len() - nonce.len())
        .collect();
    format!("castle {cluster} {nonce}")
}

/// Whether `d` is one of the cluster's devices.
fn ours(d: &Device, hostnames: &[String], tags: &[String]) -> bool {
    let named = if d.hostname.is_empty() {
        // Without a hostname, only the MagicDNS name tells: ours or ours with `-N`.
        let short = d.short_name();
        hostnames.iter().any(|h| {
            short == h
                || short
                    .strip_prefix(h.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    } else {
        hostnames.contains(&d.hostname)
    };
    named && d.tags.iter().any(|t| tags.contains(t))
}

/// The cluster's devices, online or lingering (destroy, "nothing left").
///
/// # Errors
/// The listing failed.
pub async fn devices_of(
    api: &dyn TailscaleApi,
    hostnames: &[String],
    tags: &[String],
) -> Result<Vec<Device>> {
    Ok(api
        .list_devices()
        .await?
        .into_iter()
        .filter(|d| ours(d, hostnames, tags))
        .collect())
}

/// Deletes `devices`, counting one that is already gone as deleted; returns their
/// MagicDNS names.
async fn delete_all(api: &dyn TailscaleApi, devices: Vec<Device>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for d in devices {
        match api.delete_device(&d.node_id).await {
            Ok(()) => removed.push(d.name),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Deletes the previous incarnation's devices (the cluster's and offline) so that
/// reborn nodes get their exact names back instead of `name-1`. Devices still
/// online belong to a live cluster and stay. Returns the names removed.
///
/// # Errors
/// A listing or deletion failed.
///
/// # Caveats
/// The control plane may report a node whose VM was just deleted as connected for
/// a while; such a device is left alone and its successor is named `name-1`.
pub async fn remove_stale_devices(
    api: &dyn TailscaleApi,
    hostnames: &[String],
    tags: &[String],
) -> Result<Vec<String>> {
    // Only a device the API says is offline: one whose state it did not report may
    // be a live node.
    let stale = devices_of(api, hostnames, tags)
        .await?
        .into_iter()
        .filter(|d| d.connected == Some(false))
        .collect();
    delete_all(api, stale).await
}

/// Deletes every device of the cluster, online or not (destroy). Returns the
/// names removed.
///
/// # Errors
/// A listing or deletion failed.
pub async fn remove_devices(
    api: &dyn TailscaleApi,
    hostnames: &[String],
    tags: &[String],
) -> Result<Vec<String>> {
    delete_all(api, devices_of(api, hostnames, tags).await?).await
}
