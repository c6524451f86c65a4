//! The tailnet-key step's operations, against any [`TailscaleApi`].
//!
//! A device is the cluster's when its hostname is one of the cluster's and it
//! carries one of the cluster's tags. The control plane never suffixes the
//! hostname, only the MagicDNS name (`lab-cp-1-1`), so matching on the hostname
//! catches suffixed devices while a foreign node literally named `lab-cp-1-1`
//! stays untouched.

use crate::{AuthKey, Device, KeyRequest, Result, TailscaleApi};

/// Mints the rebirth's one key, after checking what the API would refuse
/// (tags, description, expiry), so an invalid policy sends nothing.
///
/// # Errors
/// [`crate::Error::InvalidRequest`], or the API's error.
///
/// # Caveats
/// Not idempotent: retry a failure only when [`crate::Error::is_safe_to_retry`].
pub async fn mint_rebirth_key(api: &dyn TailscaleApi, request: &KeyRequest) -> Result<AuthKey> {
    request.validate()?;
    api.create_key(request).await
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
    let stale = devices_of(api, hostnames, tags)
        .await?
        .into_iter()
        .filter(|d| !d.connected)
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
