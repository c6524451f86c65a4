use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{AuthKey, Device, Error, KeyRequest, Result, TailscaleApi};

/// Modelled durations (seconds), times `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// One API call.
    pub call: f64,
    /// How long an offline ephemeral device lingers (30 min to 48 h in reality).
    pub linger: f64,
    /// Real seconds per modelled second.
    pub scale: f64,
}

impl Latency {
    /// No delays; ephemeral devices linger one modelled hour.
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            linger: 3600.0,
            scale: 0.0,
        }
    }
    /// ~300 ms per call from a homelab, devices linger 30 min.
    pub fn lab() -> Self {
        Self {
            call: 0.3,
            linger: 1800.0,
            scale: 1.0,
        }
    }
    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }
}

/// Seeded transient faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rate: f64,
    seed: u64,
}

impl Faults {
    /// Transient 503s on `rate` of the calls.
    pub fn transient(seed: u64, rate: f64) -> Self {
        Self { rate, seed }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OauthClient {
    secret_sha256: String,
    scopes: Vec<String>,
    tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Key {
    key_sha256: String,
    reusable: bool,
    ephemeral: bool,
    tags: Vec<String>,
    used: bool,
    revoked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dev {
    device: Device,
    /// Modelled seconds offline so far; lingering ephemeral devices vanish at `linger`.
    #[serde(default)]
    offline_for: Option<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct World {
    clients: BTreeMap<String, OauthClient>,
    keys: BTreeMap<String, Key>,
    devices: BTreeMap<String, Dev>,
    counter: u64,
}

#[derive(Debug)]
struct Inner {
    world: World,
    latency: Latency,
    rate: f64,
    rng: StdRng,
    permanent: BTreeMap<String, String>,
    tailnet: String,
}

/// A stateful Tailscale control plane: OAuth clients with scopes and tags,
/// single-use keys unless reusable, lingering ephemeral devices, `-1` suffixes.
/// Key values are kept only as digests.
#[derive(Debug, Clone)]
pub struct MockTailscale {
    inner: Arc<Mutex<Inner>>,
    session: Option<Session>,
}

#[derive(Debug, Clone)]
struct Session {
    client_id: String,
    ok: bool,
}

fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Default for MockTailscale {
    fn default() -> Self {
        Self::new()
    }
}

impl MockTailscale {
    /// An empty tailnet `tail0000.ts.net`.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                world: World::default(),
                latency: Latency::instant(),
                rate: 0.0,
                rng: StdRng::seed_from_u64(0),
                permanent: BTreeMap::new(),
                tailnet: "tail0000.ts.net".into(),
            })),
            session: None,
        }
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(self, latency: Latency) -> Self {
        self.lock().latency = latency;
        self
    }

    /// Sets the fault model.
    #[must_use]
    pub fn with_faults(self, faults: Faults) -> Self {
        {
            let mut i = self.lock();
            i.rate = faults.rate;
            i.rng = StdRng::seed_from_u64(faults.seed);
        }
        self
    }

    /// Operation `op` (`create_key`, `list_devices`, `delete_device`) fails with a 403.
    pub fn fail_permanently(&self, op: &str, message: &str) {
        self.lock().permanent.insert(op.into(), message.into());
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut i = self.lock();
        i.permanent.clear();
        i.rate = 0.0;
    }

    /// Registers an OAuth client with its scopes and the tags it may assign.
    pub fn add_oauth_client(
        &self,
        id: &str,
        secret: &SecretString,
        scopes: &[&str],
        tags: &[&str],
    ) {
        self.lock().world.clients.insert(
            id.into(),
            OauthClient {
                secret_sha256: digest(secret.expose_secret()),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
            },
        );
    }

    /// The API as seen by an OAuth client: calls fail 401 when the credentials are wrong.
    pub fn session(&self, client_id: &SecretString, client_secret: &SecretString) -> MockTailscale {
        let ok = self
            .lock()
            .world
            .clients
            .get(client_id.expose_secret())
            .is_some_and(|c| c.secret_sha256 == digest(client_secret.expose_secret()));
        MockTailscale {
            inner: Arc::clone(&self.inner),
            session: Some(Session {
                client_id: client_id.expose_secret().to_string(),
                ok,
            }),
        }
    }

    /// A node joins with `key` under `hostname`, as tailscaled does on boot.
    ///
    /// # Errors
    /// "invalid key" for an unknown, revoked or already-used single-use key.
    pub fn join(&self, key: &SecretString, hostname: &str) -> Result<Device> {
        let mut i = self.lock();
        let d = digest(key.expose_secret());
        let Some((_, k)) = i.world.keys.iter_mut().find(|(_, k)| k.key_sha256 == d) else {
            return Err(Error::Invalid(
                "invalid key: unable to validate API key".into(),
            ));
        };
        if k.revoked || (k.used && !k.reusable) {
            return Err(Error::Invalid(
                "invalid key: this key has already been used or was revoked".into(),
            ));
        }
        k.used = true;
        let (tags, ephemeral) = (k.tags.clone(), k.ephemeral);
        let taken = |name: &str, w: &World| {
            w.devices
                .values()
                .any(|x| x.device.name.split('.').next() == Some(name))
        };
        let mut short = hostname.to_string();
        let mut n = 0;
        while taken(&short, &i.world) {
            n += 1;
            short = format!("{hostname}-{n}");
        }
        i.world.counter += 1;
        let device = Device {
            node_id: format!("n{:06}CNTRL", i.world.counter),
            hostname: hostname.into(),
            name: format!("{short}.{}", i.tailnet),
            tags,
            ephemeral,
            connected: true,
        };
        i.world.devices.insert(
            device.node_id.clone(),
            Dev {
                device: device.clone(),
                offline_for: None,
            },
        );
        Ok(device)
    }

    /// A node went away (its VM was deleted): the device goes offline and, if
    /// ephemeral, lingers until the modelled linger time has passed.
    pub fn device_offline(&self, hostname: &str) {
        for d in self
            .lock()
            .world
            .devices
            .values_mut()
            .filter(|d| d.device.hostname == hostname && d.device.connected)
        {
            d.device.connected = false;
            d.offline_for = Some(0.0);
        }
    }

    /// Advances the control plane's clock: lingering ephemeral devices past their time vanish.
    pub fn elapse(&self, modelled: Duration) {
        let mut i = self.lock();
        let linger = i.latency.linger;
        for d in i.world.devices.values_mut() {
            if let Some(t) = d.offline_for.as_mut() {
                *t += modelled.as_secs_f64();
            }
        }
        i.world
            .devices
            .retain(|_, d| !(d.device.ephemeral && d.offline_for.is_some_and(|t| t >= linger)));
    }

    /// Every device (tests and the lab's "nothing left" check).
    pub fn devices(&self) -> Vec<Device> {
        self.lock()
            .world
            .devices
            .values()
            .map(|d| d.device.clone())
            .collect()
    }

    /// Keys that could still admit a device.
    pub fn live_keys(&self) -> usize {
        self.lock()
            .world
            .keys
            .values()
            .filter(|k| !k.revoked && (k.reusable || !k.used))
            .count()
    }

    /// The world as JSON: key digests, never key values.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(&self.lock().world).unwrap_or(serde_json::Value::Null)
    }

    /// Restores a snapshot.
    ///
    /// # Errors
    /// The JSON is not a snapshot.
    pub fn restore(&self, snapshot: &serde_json::Value) -> Result<()> {
        let w: World = serde_json::from_value(snapshot.clone())
            .map_err(|e| Error::Invalid(format!("tailscale snapshot: {e}")))?;
        self.lock().world = w;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, op: &'static str, scope: &str) -> Result<OauthClient> {
        let delay = {
            let i = self.lock();
            i.latency.call * i.latency.scale
        };
        if delay > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
        }
        let mut i = self.lock();
        let Some(session) = self.session.as_ref().filter(|s| s.ok) else {
            return Err(Error::api(op, 401, "API token invalid".into(), None));
        };
        let client = i
            .world
            .clients
            .get(&session.client_id)
            .cloned()
            .ok_or_else(|| Error::api(op, 401, "API token invalid".into(), None))?;
        if !client
            .scopes
            .iter()
            .any(|s| s == scope || (scope == "devices:core:read" && s == "devices:core"))
        {
            return Err(Error::api(
                op,
                403,
                format!(
                    "calling actor does not have enough permissions to perform this function (needs scope {scope})"
                ),
                None,
            ));
        }
        if let Some(m) = i.permanent.get(op) {
            return Err(Error::api(op, 403, m.clone(), None));
        }
        let rate = i.rate;
        if rate > 0.0 && i.rng.random_bool(rate.clamp(0.0, 1.0)) {
            return Err(Error::api(
                op,
                503,
                "injected fault: service unavailable".into(),
                None,
            ));
        }
        Ok(client)
    }
}

#[async_trait]
impl TailscaleApi for MockTailscale {
    async fn create_key(&self, r: &KeyRequest) -> Result<AuthKey> {
        let client = self.enter("create_key", "auth_keys").await?;
        if r.tags.is_empty() {
            return Err(Error::api(
                "create_key",
                400,
                "keys created by an OAuth client must have tags".into(),
                None,
            ));
        }
        if let Some(t) = r.tags.iter().find(|t| !client.tags.contains(t)) {
            return Err(Error::api(
                "create_key",
                400,
                format!("requested tags [{t}] are invalid or not permitted"),
                None,
            ));
        }
        if r.description.chars().count() > 50 {
            return Err(Error::api(
                "create_key",
                400,
                "description is too long (max 50 characters)".into(),
                None,
            ));
        }
        let mut i = self.lock();
        i.world.counter += 1;
        let id = format!("k{:06}CNTRL", i.world.counter);
        let value: String = (0..24)
            .map(|_| char::from(b'a' + i.rng.random_range(0..26u8)))
            .collect();
        let key = SecretString::from(format!("tskey-auth-{id}-{value}"));
        i.world.keys.insert(
            id.clone(),
            Key {
                key_sha256: digest(key.expose_secret()),
                reusable: r.reusable,
                ephemeral: r.ephemeral,
                tags: r.tags.clone(),
                used: false,
                revoked: false,
            },
        );
        Ok(AuthKey {
            id,
            key,
            expires: format!("+{}s", r.expiry_seconds),
        })
    }

    async fn list_devices(&self) -> Result<Vec<Device>> {
        self.enter("list_devices", "devices:core:read").await?;
        Ok(self.devices())
    }

    async fn delete_device(&self, node_id: &str) -> Result<()> {
        self.enter("delete_device", "devices:core").await?;
        match self.lock().world.devices.remove(node_id) {
            Some(_) => Ok(()),
            None => Err(Error::api(
                "delete_device",
                404,
                "device not found".into(),
                None,
            )),
        }
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        self.enter("revoke_key", "auth_keys").await?;
        match self.lock().world.keys.get_mut(id) {
            Some(k) => {
                k.revoked = true;
                Ok(())
            }
            None => Err(Error::api("revoke_key", 404, "key not found".into(), None)),
        }
    }
}
