//! The tailnet-key step's operations.

use crate::{AuthKey, Device, Error, KeyRequest, Result, TailscaleApi};

/// Mints the rebirth's one key (validated first: tags and description length).
///
/// # Errors
/// An invalid request, or the API's error.
pub async fn mint_rebirth_key(api: &dyn TailscaleApi, request: &KeyRequest) -> Result<AuthKey> {
    if request.tags.is_empty() || request.tags.iter().any(|t| !t.starts_with("tag:")) {
        return Err(Error::Invalid(
            "keys minted by an OAuth client must carry tags like `tag:name`".into(),
        ));
    }
    if request.description.chars().count() > 50 {
        return Err(Error::Invalid(format!(
            "key description is {} characters; at most 50",
            request.description.chars().count()
        )));
    }
    api.create_key(request).await
}

/// Whether a device is one of ours: its hostname is ours (or ours with the `-N`
/// suffix the control plane adds) and it carries one of our tags.
fn ours(d: &Device, hostnames: &[String], tags: &[String]) -> bool {
    let short = d.name.split('.').next().unwrap_or(&d.name);
    let named = hostnames.iter().any(|h| {
        d.hostname == *h
            || short == h
            || short
                .strip_prefix(h.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    });
    named && d.tags.iter().any(|t| tags.contains(t))
}

/// The cluster's devices.
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

/// Deletes the previous incarnation's devices so reborn nodes get their exact
/// hostnames back. Returns the names removed.
///
/// # Errors
/// A listing or deletion failed.
pub async fn remove_stale_devices(
    api: &dyn TailscaleApi,
    hostnames: &[String],
    tags: &[String],
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for d in devices_of(api, hostnames, tags).await? {
        api.delete_device(&d.node_id).await?;
        removed.push(d.name);
    }
    Ok(removed)
}
