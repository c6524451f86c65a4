//! `castle.tailscale`: mint an auth key with an OAuth client, as the `tailnet-key`
//! step does.

use pyo3::prelude::*;
use secrecy::{ExposeSecret as _, SecretString};

use crate::errors::provider;
use crate::runtime::wait;

/// A Tailscale auth key: `str()` and `repr()` never show it, `reveal()` does.
#[pyclass(module = "castle._castle", frozen)]
pub(crate) struct AuthKey {
    key: SecretString,
    id: Option<String>,
    expires: Option<String>,
}

impl AuthKey {
    pub(crate) fn new(key: SecretString, id: Option<String>, expires: Option<String>) -> Self {
        Self { key, id, expires }
    }
}

#[pymethods]
impl AuthKey {
    /// The key's id, when the API said it.
    #[getter]
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// When the key expires (RFC 3339), when the API said it.
    #[getter]
    fn expires(&self) -> Option<&str> {
        self.expires.as_deref()
    }

    /// The key itself, in the clear.
    fn reveal(&self) -> String {
        self.key.expose_secret().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "AuthKey(id={:?}, expires={:?}, key=<redacted>)",
            self.id.as_deref().unwrap_or("?"),
            self.expires.as_deref().unwrap_or("?")
        )
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}

/// Mints one reusable, ephemeral, preauthorized, tagged auth key with an OAuth client.
#[pyfunction]
#[pyo3(name = "tailscale_mint_key", signature = (client_id, client_secret, tags, ttl_seconds = 3600, tailnet = "-", base_url = "https://api.tailscale.com"))]
fn mint_key(
    py: Python<'_>,
    client_id: String,
    client_secret: String,
    tags: Vec<String>,
    ttl_seconds: u64,
    tailnet: &str,
    base_url: &str,
) -> PyResult<AuthKey> {
    let mut settings = castle_tailscale::TailscaleSettings::new(
        SecretString::from(client_id),
        SecretString::from(client_secret),
    );
    settings.tailnet = tailnet.into();
    settings.base_url = base_url.into();
    let client = castle_tailscale::TailscaleClient::new(settings).map_err(provider)?;
    let request = castle_tailscale::KeyRequest {
        reusable: true,
        ephemeral: true,
        preauthorized: true,
        tags,
        expiry_seconds: ttl_seconds,
        // Unique to this mint: after a lost answer, only this mint's keys are revoked.
        description: castle_tailscale::ops::run_description("python", &nonce()),
    };
    let key = wait(py, async move {
        castle_tailscale::ops::mint_rebirth_key(&client, &request).await
    })?
    .map_err(provider)?;
    Ok(AuthKey::new(key.key, Some(key.id), Some(key.expires)))
}

/// Eight hex digits that differ between mints (clock and process id).
fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AuthKey>()?;
    m.add_function(wrap_pyfunction!(mint_key, m)?)?;
    Ok(())
}
