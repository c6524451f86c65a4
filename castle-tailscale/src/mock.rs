//! A strict, stateful Tailscale control plane.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
pub use castle_sim::Faults;
use castle_sim::{Fault, FaultInjector, Scale};
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::{
    AuthKey, Device, Error, Grant, KeyInfo, KeyRequest, MAX_EXPIRY_SECONDS, OauthClientInfo, Op,
    Result, TailscaleApi,
};

/// The loss of an answer `lose_next_answer` asked for, if it was asked for `op`.
fn take_lost(i: &mut Inner, name: &str, op: Op) -> Option<Error> {
    let at = i.lose_answer.iter().position(|o| o == name)?;
    i.lose_answer.remove(at);
    Some(Error::Unreachable {
        op,
        reason: "operation timed out (injected: the server acted, the answer was lost)".into(),
        sent: true,
    })
}

/// Modelled durations (seconds), times `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// One API call.
    pub call: f64,
    /// How long an offline ephemeral device lingers before the control plane
    /// removes it (30 min to 48 h in reality).
    pub linger: f64,
    /// Real seconds per modelled second; 0 stops the control plane's clock, which
    /// then moves only by [`MockTailscale::elapse`].
    pub scale: Scale,
}

impl Latency {
    /// No delays and a stopped clock; ephemeral devices linger 30 modelled minutes.
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            linger: 1800.0,
            scale: Scale::INSTANT,
        }
    }

    /// The reference setup: ~0.3 s per API call from the homelab (curl to
    /// api.tailscale.com), offline ephemeral devices lingering the shortest
    /// observed 30 min.
    pub fn lab() -> Self {
        Self {
            call: 0.3,
            linger: 1800.0,
            scale: Scale::REAL,
        }
    }

    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = Scale(scale);
        self
    }
}

/// The operation names [`MockTailscale::fail_permanently`] accepts: the
/// [`TailscaleApi`] method names.
pub const OPS: [&str; 5] = [
    "create_key",
    "list_devices",
    "delete_device",
    "list_keys",
    "revoke_key",
];

/// Whether `op` is one of [`OPS`].
fn check_op(op: &str) -> Result<()> {
    castle_sim::check_op(&OPS, op).map_err(|e| Error::Mock {
        reason: e.to_string(),
    })
}

/// The mock's wall clock starts at 2026-01-01T00:00:00Z, so runs are reproducible.
const EPOCH_UNIX: i64 = 1_767_225_600;

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
    /// Modelled second the key stops admitting devices.
    expires_at: f64,
    used: bool,
    revoked: bool,
    #[serde(default)]
    description: String,
}

impl Key {
    fn admits(&self, now: f64) -> bool {
        !self.revoked && now < self.expires_at && (self.reusable || !self.used)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dev {
    device: Device,
    /// Modelled second it went offline.
    offline_since: Option<f64>,
}

/// Everything that persists; credentials only as SHA-256 digests.
#[derive(Debug, Default, Serialize, Deserialize)]
struct World {
    /// By digest of the client id.
    clients: BTreeMap<String, OauthClient>,
    keys: BTreeMap<String, Key>,
    devices: BTreeMap<String, Dev>,
    counter: u64,
    /// Modelled seconds since [`EPOCH_UNIX`].
    clock: f64,
    /// The policy file's `tagOwners`, once set; until then each OAuth client's
    /// tags are defined and owned by `autogroup:admin` (the admin console offers
    /// only defined tags for a client).
    #[serde(default)]
    tag_owners: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug)]
struct Inner {
    world: World,
    latency: Latency,
    /// A transient fault is a `503`, or a `429` with `Retry-After`; its generator
    /// also makes the key secrets.
    faults: FaultInjector,
    /// Operations whose next call takes effect but whose answer is lost.
    lose_answer: Vec<String>,
    /// The real instant `world.clock` was last brought up to.
    anchor: Instant,
}

impl Inner {
    /// Brings the modelled clock up to real time and lets the control plane forget
    /// ephemeral devices that have been offline longer than `linger`.
    fn sync(&mut self) {
        let now = Instant::now();
        let Scale(scale) = self.latency.scale;
        if scale > 0.0 {
            self.world.clock += (now - self.anchor).as_secs_f64() / scale;
        }
        self.anchor = now;
        let (clock, linger) = (self.world.clock, self.latency.linger);
        self.world.devices.retain(|_, d| {
            !(d.device.ephemeral && d.offline_since.is_some_and(|t| clock - t >= linger))
        });
    }

    fn next_id(&mut self, prefix: char) -> String {
        self.world.counter += 1;
        format!("{prefix}{:07}CNTRL", self.world.counter)
    }
}

#[derive(Debug, Clone)]
struct Session {
    id_sha256: String,
    secret_sha256: String,
}

/// A stateful Tailscale control plane: OAuth clients with scopes and assignable
/// tags, single-use keys unless reusable, key expiry and revocation, lingering
/// ephemeral devices, `-1` suffixes for taken names. It remembers credentials only
/// as digests. Clones share the world.
#[derive(Debug, Clone)]
pub struct MockTailscale {
    inner: Arc<Mutex<Inner>>,
    session: Option<Session>,
}

fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn rfc3339(modelled: f64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(EPOCH_UNIX + modelled as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The DNS label the control plane derives from a hostname.
fn dns_label(hostname: &str) -> String {
    let label: String = hostname
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    label.trim_matches('-').to_string()
}

impl Default for MockTailscale {
    fn default() -> Self {
        Self::new()
    }
}

impl MockTailscale {
    /// An empty tailnet `tail0000.ts.net`, instant latency, no faults. As an API it
    /// answers 401 until seen through [`MockTailscale::session`].
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                world: World::default(),
                latency: Latency::instant(),
                faults: FaultInjector::default(),
                lose_answer: Vec::new(),
                anchor: Instant::now(),
            })),
            session: None,
        }
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(self, latency: Latency) -> Self {
        {
            let mut i = self.lock();
            i.sync();
            i.latency = latency;
        }
        self
    }

    /// Sets the transient fault model.
    #[must_use]
    pub fn with_faults(self, faults: Faults) -> Self {
        self.lock().faults.set(faults);
        self
    }

    /// Operation `op` (one of [`OPS`]) fails with a permanent 403 carrying `message`.
    ///
    /// # Errors
    /// [`Error::Mock`] when `op` is not an operation name.
    pub fn fail_permanently(&self, op: &str, message: &str) -> Result<()> {
        check_op(op)?;
        self.lock().faults.fail_permanently(op, message.into());
        Ok(())
    }

    /// The next call of `op` (one of [`OPS`]) takes effect on the control plane but
    /// its answer never arrives: the caller sees a timeout after the request was
    /// sent, as when a connection drops after the server acted.
    ///
    /// # Errors
    /// [`Error::Mock`] when `op` is not an operation name.
    pub fn lose_next_answer(&self, op: &str) -> Result<()> {
        check_op(op)?;
        self.lock().lose_answer.push(op.into());
        Ok(())
    }

    /// A device's `connectedToControl` goes missing from the API's answers, as it
    /// can (the field is optional): Castle must treat it as unknown.
    pub fn connection_unknown(&self, hostname: &str) {
        let mut i = self.lock();
        for d in i
            .world
            .devices
            .values_mut()
            .filter(|d| d.device.hostname == hostname)
        {
            d.device.connected = None;
        }
    }

    /// Removes transient and permanent faults.
    pub fn clear_faults(&self) {
        let mut i = self.lock();
        i.faults.clear();
        i.lose_answer.clear();
    }

    /// Registers an OAuth client with its scopes (`auth_keys`, `devices:core`,
    /// `devices:core:read`) and the tags it may assign to keys.
    pub fn add_oauth_client(
        &self,
        id: &str,
        secret: &SecretString,
        scopes: &[&str],
        tags: &[&str],
    ) {
        self.lock().world.clients.insert(
            digest(id),
            OauthClient {
                secret_sha256: digest(secret.expose_secret()),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
            },
        );
    }

    /// The API as seen through an OAuth client's credentials; every call answers
    /// 401 while they do not match a registered client.
    pub fn session(&self, client_id: &SecretString, client_secret: &SecretString) -> MockTailscale {
        MockTailscale {
            inner: Arc::clone(&self.inner),
            session: Some(Session {
                id_sha256: digest(client_id.expose_secret()),
                secret_sha256: digest(client_secret.expose_secret()),
            }),
        }
    }

    /// A node's tailscaled logs in with `key` under `hostname`, as the Talos
    /// extension does on boot. The device is named after the hostname, with `-1`,
    /// `-2`, ... when a device (lingering ones included) already has that name.
    ///
    /// # Errors
    /// [`Error::Join`] with tailscaled's `invalid key` for an unknown, expired or
    /// revoked key, or a single-use key that already admitted a device.
    pub fn join(&self, key: &SecretString, hostname: &str) -> Result<Device> {
        let refuse = |reason: String| Error::Join {
            hostname: hostname.to_string(),
            reason,
        };
        let label = dns_label(hostname);
        if label.is_empty() {
            return Err(refuse("the hostname yields no DNS name".into()));
        }
        let mut i = self.lock();
        i.sync();
        let now = i.world.clock;
        let wanted = digest(key.expose_secret());
        let Some((id, k)) = i
            .world
            .keys
            .iter_mut()
            .find(|(_, k)| k.key_sha256 == wanted)
        else {
            return Err(refuse("invalid key: unable to validate API key".into()));
        };
        if !k.admits(now) {
            return Err(refuse(format!("invalid key: API key {id} not valid")));
        }
        k.used = true;
        let (tags, ephemeral) = (k.tags.clone(), k.ephemeral);
        let taken =
            |name: &str, w: &World| w.devices.values().any(|d| d.device.short_name() == name);
        let mut short = label.clone();
        let mut n = 0;
        while taken(&short, &i.world) {
            n += 1;
            short = format!("{label}-{n}");
        }
        let device = Device {
            node_id: i.next_id('n'),
            hostname: hostname.into(),
            name: format!("{short}.tail0000.ts.net"),
            tags,
            ephemeral,
            connected: Some(true),
        };
        i.world.devices.insert(
            device.node_id.clone(),
            Dev {
                device: device.clone(),
                offline_since: None,
            },
        );
        Ok(device)
    }

    /// A node went away (its VM was deleted): its devices go offline and, when
    /// ephemeral, linger until [`Latency::linger`] modelled seconds have passed.
    pub fn device_offline(&self, hostname: &str) {
        let mut i = self.lock();
        i.sync();
        let now = i.world.clock;
        for d in i
            .world
            .devices
            .values_mut()
            .filter(|d| d.device.hostname == hostname && d.device.connected != Some(false))
        {
            d.device.connected = Some(false);
            d.offline_since = Some(now);
        }
    }

    /// Moves the control plane's clock on by `modelled` time (on top of real time
    /// passing at `scale`): keys expire, lingering devices vanish.
    pub fn elapse(&self, modelled: Duration) {
        let mut i = self.lock();
        i.world.clock += modelled.as_secs_f64();
        i.sync();
    }

    /// Every device, lingering ones included (tests, the lab's "nothing left").
    pub fn devices(&self) -> Vec<Device> {
        let mut i = self.lock();
        i.sync();
        i.world.devices.values().map(|d| d.device.clone()).collect()
    }

    /// Keys that could still admit a device.
    pub fn live_keys(&self) -> usize {
        let mut i = self.lock();
        i.sync();
        let now = i.world.clock;
        i.world.keys.values().filter(|k| k.admits(now)).count()
    }

    /// The world as JSON: digests of keys and client credentials, never their values.
    pub fn snapshot(&self) -> serde_json::Value {
        let mut i = self.lock();
        i.sync();
        serde_json::to_value(&i.world).unwrap_or(serde_json::Value::Null)
    }

    /// Replaces the world with a snapshot; its clock resumes from the snapshot's time.
    ///
    /// # Errors
    /// [`Error::Mock`] when the JSON is not a snapshot of this mock.
    pub fn restore(&self, snapshot: &serde_json::Value) -> Result<()> {
        let world: World = serde_json::from_value(snapshot.clone()).map_err(|e| Error::Mock {
            reason: format!("not a tailscale snapshot: {e}"),
        })?;
        let mut i = self.lock();
        i.world = world;
        i.anchor = Instant::now();
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Latency, authentication, scope and faults, in the order the real API applies
    /// them; yields the calling OAuth client and the world, locked.
    async fn enter(
        &self,
        op: Op,
        name: &str,
        scope: &str,
    ) -> Result<(OauthClient, MutexGuard<'_, Inner>)> {
        let latency = self.lock().latency;
        latency.scale.sleep(latency.call).await;
        let mut i = self.lock();
        i.sync();
        let invalid = || Error::api(op, 401, "API token invalid".into(), None);
        let session = self.session.as_ref().ok_or_else(invalid)?;
        let client = i
            .world
            .clients
            .get(&session.id_sha256)
            .filter(|c| c.secret_sha256 == session.secret_sha256)
            .cloned()
            .ok_or_else(invalid)?;
        // The API's words, and nothing about which scope (tailscale/tailscale#15969).
        if !scope.is_empty() && !covers(&client.scopes, scope) {
            return Err(Error::api(
                op,
                403,
                "calling actor does not have enough permissions to perform this function".into(),
                None,
            ));
        }
        match i.faults.draw([name]) {
            Some(Fault::Permanent(m)) => Err(Error::api(op, 403, m, None)),
            Some(Fault::Transient) => Err(if i.faults.rng().random_bool(0.5) {
                Error::api(op, 503, "service unavailable (injected)".into(), None)
            } else {
                // Retry-After: one modelled second.
                let wait = latency.scale.of(1.0);
                Error::api(op, 429, "rate limit exceeded (injected)".into(), Some(wait))
            }),
            None => Ok((client, i)),
        }
    }
}

/// Whether `granted` scopes cover `needed`: `all` covers every scope, `all:read`
/// every `:read` one, and a scope its own `:read` half (`devices:core` lists
/// devices).
fn covers(granted: &[String], needed: &str) -> bool {
    granted.iter().any(|s| {
        s == needed
            || s == "all"
            || (s == "all:read" && needed.ends_with(":read"))
            || needed.strip_suffix(":read") == Some(s.as_str())
    })
}

impl World {
    /// `tagOwners`: the one set, or each client's tags owned by the admins.
    fn owners(&self) -> BTreeMap<String, Vec<String>> {
        if let Some(set) = &self.tag_owners {
            return set.clone();
        }
        self.clients
            .values()
            .flat_map(|c| c.tags.iter())
            .map(|t| (t.clone(), vec!["autogroup:admin".to_string()]))
            .collect()
    }
}

/// The probes' knobs: what an admin changes in the console, and the lab injects.
/// They change the world, so they persist in [`MockTailscale::snapshot`].
impl MockTailscale {
    /// Narrows (or widens) the scopes of the OAuth client `id`, as recreating it
    /// with other scopes would: calls needing a scope it lacks answer 403 `calling
    /// actor does not have enough permissions to perform this function`, and the
    /// token endpoint refuses it with 403 `OAuth client cannot grant scopes "..."`.
    ///
    /// # Errors
    /// [`Error::Mock`] when no client has that id.
    pub fn set_client_scopes(&self, id: &str, scopes: &[&str]) -> Result<()> {
        self.with_client(id, |c| {
            c.scopes = scopes.iter().map(|s| s.to_string()).collect();
        })
    }

    /// The tags the OAuth client `id` may give keys.
    ///
    /// # Errors
    /// [`Error::Mock`] when no client has that id.
    pub fn set_client_tags(&self, id: &str, tags: &[&str]) -> Result<()> {
        self.with_client(id, |c| {
            c.tags = tags.iter().map(|s| s.to_string()).collect();
        })
    }

    /// Sets the policy file's `tagOwners` (tag, owners): a key may carry a tag the
    /// client carries or one a client tag owns; a tag missing here is refused.
    pub fn set_tag_owners(&self, owners: &[(&str, &[&str])]) {
        self.lock().world.tag_owners = Some(
            owners
                .iter()
                .map(|(tag, by)| {
                    (
                        (*tag).to_string(),
                        by.iter().map(|o| o.to_string()).collect(),
                    )
                })
                .collect(),
        );
    }

    /// Back to the default policy: each client's tags defined, owned by the admins.
    pub fn clear_tag_owners(&self) {
        self.lock().world.tag_owners = None;
    }

    fn with_client(&self, id: &str, change: impl FnOnce(&mut OauthClient)) -> Result<()> {
        let mut i = self.lock();
        let client = i
            .world
            .clients
            .get_mut(&digest(id))
            .ok_or_else(|| Error::Mock {
                reason: format!("no OAuth client `{id}`"),
            })?;
        change(client);
        Ok(())
    }
}

#[async_trait]
impl TailscaleApi for MockTailscale {
    async fn create_key(&self, r: &KeyRequest) -> Result<AuthKey> {
        let (client, mut i) = self.enter(Op::CreateKey, "create_key", "auth_keys").await?;
        let bad = |message: String| Error::api(Op::CreateKey, 400, message, None);
        // The API reads an absent or zero expiry as its 90-day default.
        let expiry = match r.expiry_seconds {
            0 => MAX_EXPIRY_SECONDS,
            s => s,
        };
        KeyRequest {
            expiry_seconds: expiry,
            ..r.clone()
        }
        .validate()
        .map_err(|e| match e {
            Error::InvalidRequest { reason } => bad(reason),
            other => other,
        })?;
        // A key's tags must be the client's, or owned by one of them in tagOwners
        // (the OpenAPI description of `capabilities.devices.create.tags`).
        let owners = i.world.owners();
        let assignable = |t: &String| {
            owners.get(t).is_some_and(|o| {
                client.tags.contains(t) || o.iter().any(|owner| client.tags.contains(owner))
            })
        };
        if let Some(t) = r.tags.iter().find(|t| !assignable(t)) {
            return Err(bad(format!(
                "requested tags [{t}] are invalid or not permitted"
            )));
        }
        let id = i.next_id('k');
        let secret: String = (0..32)
            .map(|_| char::from(b'a' + i.faults.rng().random_range(0..26u8)))
            .collect();
        let key = SecretString::from(format!("tskey-auth-{id}-{secret}"));
        let expires_at = i.world.clock + expiry as f64;
        i.world.keys.insert(
            id.clone(),
            Key {
                key_sha256: digest(key.expose_secret()),
                reusable: r.reusable,
                ephemeral: r.ephemeral,
                tags: r.tags.clone(),
                expires_at,
                used: false,
                revoked: false,
                description: r.description.clone(),
            },
        );
        if let Some(lost) = take_lost(&mut i, "create_key", Op::CreateKey) {
            return Err(lost);
        }
        Ok(AuthKey {
            id,
            key,
            expires: rfc3339(expires_at),
        })
    }

    async fn list_devices(&self) -> Result<Vec<Device>> {
        let (_, i) = self
            .enter(Op::ListDevices, "list_devices", "devices:core:read")
            .await?;
        Ok(i.world.devices.values().map(|d| d.device.clone()).collect())
    }

    async fn delete_device(&self, node_id: &str) -> Result<()> {
        let (_, mut i) = self
            .enter(Op::DeleteDevice, "delete_device", "devices:core")
            .await?;
        match i.world.devices.remove(node_id) {
            Some(_) => Ok(()),
            None => Err(Error::api(
                Op::DeleteDevice,
                404,
                "device not found".into(),
                None,
            )),
        }
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let (_, i) = self
            .enter(Op::ListKeys, "list_keys", "auth_keys:read")
            .await?;
        let now = i.world.clock;
        // "Returns a list of active auth keys": revoked and expired ones drop out.
        Ok(i.world
            .keys
            .iter()
            .filter(|(_, k)| !k.revoked && now < k.expires_at)
            .map(|(id, k)| KeyInfo {
                id: id.clone(),
                key_type: "auth".into(),
                description: k.description.clone(),
                invalid: false,
            })
            .collect())
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        let (_, mut i) = self.enter(Op::RevokeKey, "revoke_key", "auth_keys").await?;
        match i.world.keys.get_mut(id) {
            Some(k) => {
                k.revoked = true;
                Ok(())
            }
            None => Err(Error::api(Op::RevokeKey, 404, "key not found".into(), None)),
        }
    }

    async fn grant(&self, scopes: &[String]) -> Result<Grant> {
        let (client, _i) = self.enter(Op::Token, "grant", "").await?;
        let refused: Vec<&str> = scopes
            .iter()
            .filter(|s| !covers(&client.scopes, s))
            .map(String::as_str)
            .collect();
        if !refused.is_empty() {
            return Err(Error::api(
                Op::Token,
                403,
                format!("OAuth client cannot grant scopes \"{}\"", refused.join(" ")),
                None,
            ));
        }
        Ok(Grant {
            scopes: if scopes.is_empty() {
                client.scopes
            } else {
                scopes.to_vec()
            },
            expires_in: Some(3600),
        })
    }

    async fn tag_owners(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let (_, i) = self
            .enter(Op::ReadPolicy, "tag_owners", "policy_file:read")
            .await?;
        Ok(i.world.owners())
    }

    async fn oauth_client(&self) -> Result<OauthClientInfo> {
        let (client, _i) = self
            .enter(Op::ReadClient, "oauth_client", "oauth_keys:read")
            .await?;
        Ok(OauthClientInfo {
            scopes: client.scopes,
            tags: client.tags,
        })
    }
}
