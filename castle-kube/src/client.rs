use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::conditions::{Selection, Verdict};
use crate::{ClusterApi, Condition, Error, ObjectRef, Propagation, Result};

/// A kind as discovery serves it: its resource and whether it is namespaced.
type Served = (ApiResource, bool);

/// [`ClusterApi`] over kube-rs: server-side apply, discovery, and waits that watch.
pub struct KubeClient {
    kubeconfig: Option<Kubeconfig>,
    server: String,
    client: OnceCell<kube::Client>,
    served: Mutex<HashMap<(String, String), Served>>,
    http: reqwest::Client,
}

// The kubeconfig holds the cluster's admin credentials: only the server is shown.
impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn config_err(message: impl Into<String>) -> Error {
    Error::Config {
        message: message.into(),
    }
}

impl KubeClient {
    /// From kubeconfig text held in memory (Talos hands it over; it is never written
    /// to disk). The connection is made on the first call, so an API server that does
    /// not exist yet is a transient error then, not now.
    ///
    /// # Errors
    /// The text is not a kubeconfig, or its current context names no server.
    pub fn from_kubeconfig(kubeconfig: &SecretString) -> Result<Self> {
        // Parse errors may quote the input: say what is wrong without echoing it.
        let kc = Kubeconfig::from_yaml(kubeconfig.expose_secret())
            .map_err(|_| config_err("not a kubeconfig (YAML with clusters, users and contexts)"))?;
        let context = kc
            .current_context
            .clone()
            .ok_or_else(|| config_err("no current-context"))?;
        let cluster = kc
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| config_err(format!("context {context:?} is not defined")))?;
        let server = kc
            .clusters
            .iter()
            .find(|c| c.name == cluster)
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .ok_or_else(|| config_err(format!("cluster {cluster:?} has no server")))?;
        Ok(Self {
            kubeconfig: Some(kc),
            server,
            client: OnceCell::new(),
            served: Mutex::new(HashMap::new()),
            http: reqwest::Client::new(),
        })
    }

    /// Around a ready kube client (tests point one at a fake API server).
    pub fn with_client(client: kube::Client, server: &str) -> Self {
        Self {
            kubeconfig: None,
            server: server.into(),
            client: OnceCell::new_with(Some(client)),
            served: Mutex::new(HashMap::new()),
            http: reqwest::Client::new(),
        }
    }

    async fn client(&self) -> Result<&kube::Client> {
        self.client
            .get_or_try_init(|| async {
                let kc = self
                    .kubeconfig
                    .clone()
                    .ok_or_else(|| config_err("no kubeconfig"))?;
                let config =
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| config_err(e.to_string()))?;
                kube::Client::try_from(config).map_err(|e| config_err(e.to_string()))
            })
            .await
    }

    /// Resolves a kind through discovery; only successes are cached, so a CRD that
    /// becomes served later is found then.
    async fn resolve(&self, verb: &'static str, r: &ObjectRef) -> Result<Served> {
        let cache_key = (r.api_version.clone(), r.kind.clone());
        if let Some(hit) = self
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&cache_key)
        {
            return Ok(hit.clone());
        }
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        let gvk = GroupVersionKind::gvk(r.group(), version, &r.kind);
        let client = self.client().await?;
        let found = match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((ar, caps)) => (ar, caps.scope == Scope::Namespaced),
            Err(kube::Error::Discovery(_)) => return Err(no_matches(verb, r)),
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(no_matches(verb, r)),
            Err(e) => return Err(self.map_err(verb, r, e)),
        };
        self.served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(cache_key, found.clone());
        Ok(found)
    }

    async fn api(&self, verb: &'static str, r: &ObjectRef) -> Result<Api<DynamicObject>> {
        let (ar, namespaced) = self.resolve(verb, r).await?;
        let client = self.client().await?.clone();
        Ok(match (&r.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client, ns, &ar),
            (None, true) if !r.name.is_empty() => {
                let ns = client.default_namespace().to_string();
                Api::namespaced_with(client, &ns, &ar)
            }
            _ => Api::all_with(client, &ar),
        })
    }

    /// A watch of one selection, as (index, event) so several can be merged.
    async fn watch(
        &self,
        index: usize,
        s: &Selection,
    ) -> Result<Option<futures_util::stream::BoxStream<'static, (usize, WatchItem)>>> {
        let r = ObjectRef::new(&s.api_version, &s.kind, s.namespace.as_deref(), "");
        let (ar, namespaced) = match self.resolve("watch", &r).await {
            Ok(found) => found,
            Err(Error::Api { status: 404, .. }) if s.optional => return Ok(None),
            Err(e) => return Err(e),
        };
        let client = self.client().await?.clone();
        let api: Api<DynamicObject> = match (&s.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client, ns, &ar),
            _ => Api::all_with(client, &ar),
        };
        let mut config = watcher::Config::default();
        if let Some(name) = &s.name {
            config = config.fields(&format!("metadata.name={name}"));
        }
        if let Some(labels) = s.label_selector() {
            config = config.labels(&labels);
        }
        // The backoff makes the watcher re-list and resume after a dropped connection.
        let stream = watcher::watcher(api, config)
            .default_backoff()
            .map(move |item| (index, item.map(|event| typed(event, &ar))));
        Ok(Some(stream.boxed()))
    }

    /// After `Established`, discovery may lag: ask it with a short backoff, since it
    /// has no watch of its own.
    async fn served_by_discovery(&self, crd: &Value, deadline: Instant) -> Result<()> {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = crd
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .and_then(|v| {
                v.iter()
                    .find(|v| v.get("served").and_then(Value::as_bool) == Some(true))
            })
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let r = ObjectRef::new(&format!("{group}/{version}"), kind, None, "");
        let mut pause = Duration::from_millis(100);
        loop {
            match self.resolve("discover", &r).await {
                Ok(_) => return Ok(()),
                Err(Error::Api { status: 404, .. }) if Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(Error::Api { status: 404, .. }) => {
                    return Err(Error::Timeout {
                        what: format!("CRD {name} established"),
                        missing: format!(
                            "CRD {name} is Established but discovery does not serve {kind} in {group}/{version} yet"
                        ),
                        seconds: 0,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

type WatchItem = std::result::Result<Event<Value>, watcher::Error>;

/// Objects as JSON with their apiVersion and kind, which list responses leave out.
fn typed(event: Event<DynamicObject>, ar: &ApiResource) -> Event<Value> {
    let json = |o: DynamicObject| {
        let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), ar.api_version.clone().into());
            m.insert("kind".into(), ar.kind.clone().into());
        }
        v
    };
    match event {
        Event::Apply(o) => Event::Apply(json(o)),
        Event::Delete(o) => Event::Delete(json(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(json(o)),
        Event::InitDone => Event::InitDone,
    }
}

fn watch_refusal_is_final(e: &Error) -> bool {
    match e {
        Error::Api { status, .. } => !e.is_transient() && !matches!(status, 404 | 410),
        Error::Tls { .. } | Error::Config { .. } => true,
        _ => false,
    }
}

fn store_key(v: &Value) -> String {
    let r = ObjectRef::of(v);
    format!("{}/{}", r.namespace.unwrap_or_default(), r.name)
}

/// What one watch has seen: the listed objects, then every change.
#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    listing: Option<BTreeMap<String, Value>>,
    synced: bool,
}

impl Store {
    fn on(&mut self, event: Event<Value>) {
        match event {
            Event::Init => self.listing = Some(BTreeMap::new()),
            Event::InitApply(v) => {
                self.listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(store_key(&v), v);
            }
            Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.synced = true;
            }
            Event::Apply(v) => {
                self.objects.insert(store_key(&v), v);
            }
            Event::Delete(v) => {
                self.objects.remove(&store_key(&v));
            }
        }
    }
}

fn no_matches(verb: &'static str, r: &ObjectRef) -> Error {
    Error::Api {
        verb,
        object: r.to_string(),
        status: 404,
        reason: "NotFound".into(),
        message: format!(
            "no matches for kind \"{}\" in version \"{}\"",
            r.kind, r.api_version
        ),
    }
}

/// The causes of an error, outermost first: "client error (Connect)" alone does not
/// say whether the port was closed or a certificate did not verify.
pub(crate) fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> (String, Option<&'a rustls::Error>) {
    let mut parts: Vec<String> = Vec::new();
    let mut tls = None;
    let mut next: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        // Wrappers often repeat their source's text; keep each cause once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        if tls.is_none() {
            tls = find_rustls(err);
        }
        next = err.source();
    }
    (parts.join(": "), tls)
}

/// A rustls error, also inside nested `io::Error`s, whose `source()` skips the
/// error they wrap.
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = err.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    find_rustls(inner)
}

/// What a certificate failure means for the person holding the kubeconfig; `None`
/// for other TLS failures (a handshake cut short), which may pass.
fn tls_meaning(e: &rustls::Error) -> Option<&'static str> {
    use rustls::{AlertDescription as A, CertificateError as C};
    Some(match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the server's certificate was not signed by the kubeconfig's certificate-authority-data"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "the server's certificate does not name the address in the kubeconfig",
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired"
        }
        rustls::Error::InvalidCertificate(_) => "the server's certificate did not verify",
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied
            // What a server answers a client certificate issued by another CA of the
            // same name (a previous incarnation's): its signature does not verify.
            | A::DecryptError,
        ) => "the server refused the kubeconfig's client certificate",
        _ => return None,
    })
}

impl KubeClient {
    /// Maps a kube error: API refusals keep status, reason and message; connection
    /// failures keep every cause; certificate problems are [`Error::Tls`], permanent.
    fn map_err(&self, verb: &'static str, r: &ObjectRef, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) => Error::Api {
                verb,
                object: r.to_string(),
                status: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            // Connection refused, reset, TLS handshake and timeouts all surface here.
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                let (causes, tls) = chain(&e);
                match tls.and_then(tls_meaning) {
                    Some(meaning) => Error::Tls {
                        server: self.server.clone(),
                        message: format!("{meaning} ({verb} {r}): {causes}"),
                    },
                    None => Error::Unreachable(format!("{verb} {r}: {causes}")),
                }
            }
            other => Error::Api {
                verb,
                object: r.to_string(),
                status: 0,
                reason: "ClientError".into(),
                message: chain(&other).0,
            },
        }
    }

    /// A watch that failed: the API's own refusal when it answered (a 403 on the
    /// list or watch is final), else the connection's causes.
    fn map_watch_err(&self, r: &ObjectRef, e: watcher::Error) -> Error {
        match e {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => self.map_err("watch", r, e),
            watcher::Error::WatchError(s) => Error::Api {
                verb: "watch",
                object: r.to_string(),
                status: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => Error::Unreachable(format!("watch {r}: {other}")),
        }
    }
}

fn to_json(verb: &'static str, r: &ObjectRef, o: DynamicObject) -> Result<Value> {
    serde_json::to_value(o).map_err(|e| Error::Api {
        verb,
        object: r.to_string(),
        status: 0,
        reason: "ClientError".into(),
        message: format!("the answer is not an object: {e}"),
    })
}

#[async_trait]
impl ClusterApi for KubeClient {
    async fn apply_as(&self, manager: &str, object: &Value, force: bool) -> Result<Value> {
        let r = ObjectRef::of(object);
        let api = self.api("apply", &r).await?;
        let mut params = PatchParams::apply(manager);
        if force {
            params = params.force();
        }
        let applied = api
            .patch(&r.name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| self.map_err("apply", &r, e))?;
        to_json("apply", &r, applied)
    }

    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>> {
        let api = self.api("get", object).await?;
        match api.get_opt(&object.name).await {
            Ok(Some(o)) => to_json("get", object, o).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.map_err("get", object, e)),
        }
    }

    async fn delete(&self, object: &ObjectRef, propagation: Propagation) -> Result<()> {
        let api = self.api("delete", object).await?;
        let params = DeleteParams {
            propagation_policy: Some(match propagation {
                Propagation::Background => kube::api::PropagationPolicy::Background,
                Propagation::Foreground => kube::api::PropagationPolicy::Foreground,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&object.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.map_err("delete", object, e)),
        }
    }

    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        let r = ObjectRef::new(api_version, kind, namespace, "");
        let (ar, _) = self.resolve("list", &r).await?;
        let api = self.api("list", &r).await?;
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.map_err("list", &r, e))?;
        list.items
            .into_iter()
            .map(|o| {
                let mut v = to_json("list", &r, o)?;
                if let Some(m) = v.as_object_mut() {
                    m.insert("apiVersion".into(), ar.api_version.clone().into());
                    m.insert("kind".into(), ar.kind.clone().into());
                }
                Ok(v)
            })
            .collect()
    }

    async fn wait(&self, condition: &Condition, timeout: Duration) -> Result<String> {
        self.wait_reporting(condition, timeout, &|_| {}).await
    }

    async fn wait_reporting(
        &self,
        condition: &Condition,
        timeout: Duration,
        report: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let timed_out = |missing: String| Error::Timeout {
            what: condition.to_string(),
            missing,
            seconds: timeout.as_secs(),
        };
        let selections = condition.selections();
        let mut stores: Vec<Store> = Vec::new();
        let mut streams = Vec::new();
        for (index, s) in selections.iter().enumerate() {
            let mut store = Store::default();
            match self.watch(index, s).await? {
                Some(stream) => streams.push(stream),
                // A kind the cluster does not serve has no objects to wait for.
                None => store.synced = true,
            }
            stores.push(store);
        }
        let mut events = futures_util::stream::select_all(streams);
        let mut missing = "the first list has not arrived yet".to_string();
        let mut last_error: Option<String> = None;
        loop {
            let item = tokio::select! {
                item = events.next() => item,
                () = tokio::time::sleep_until(deadline) => {
                    if let Some(e) = last_error {
                        missing = format!("{missing} (last watch error: {e})");
                    }
                    return Err(timed_out(missing));
                }
            };
            let Some((index, item)) = item else {
                return Err(Error::Unreachable(format!(
                    "the watch for {condition} ended"
                )));
            };
            match item {
                Ok(event) => {
                    if let Some(store) = stores.get_mut(index) {
                        store.on(event);
                    }
                }
                Err(e) => {
                    let watched = selections.get(index).map_or_else(
                        || ObjectRef::new("", "", None, ""),
                        |s| {
                            ObjectRef::new(
                                &s.api_version,
                                &s.kind,
                                s.namespace.as_deref(),
                                s.name.as_deref().unwrap_or_default(),
                            )
                        },
                    );
                    let e = self.map_watch_err(&watched, e);
                    // A refusal (401, 403, a bad request) is final: the watcher would
                    // only back off and ask again until the budget is spent. 404 and
                    // 410 Gone are part of watching (a kind not served yet, an expired
                    // resourceVersion) and the watcher recovers from them itself.
                    if watch_refusal_is_final(&e) {
                        return Err(e);
                    }
                    last_error = Some(e.to_string());
                    continue;
                }
            }
            if !stores.iter().all(|s| s.synced) {
                continue;
            }
            let seen: Vec<Vec<&Value>> = stores
                .iter()
                .map(|s| s.objects.values().collect())
                .collect();
            match condition.evaluate(&seen) {
                Verdict::Met(detail) => {
                    if let (Condition::CrdEstablished(_), Some(crd)) =
                        (condition, seen.first().and_then(|s| s.first()))
                    {
                        self.served_by_discovery(crd, deadline)
                            .await
                            .map_err(|e| match e {
                                Error::Timeout { missing, .. } => timed_out(missing),
                                other => other,
                            })?;
                    }
                    return Ok(detail);
                }
                Verdict::Failed(e) => return Err(e),
                Verdict::Missing(m) => {
                    if m != missing {
                        report(&m);
                    }
                    missing = m;
                }
            }
        }
    }

    async fn probe_http(&self, url: &str, timeout: Duration) -> Result<u16> {
        let response = self
            .http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::Unreachable(format!("GET {url}: {}", chain(&e).0)))?;
        Ok(response.status().as_u16())
    }
}
