use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use castle_kube::{
    Bundle, ClusterApi, Condition, FIELD_MANAGER, ObjectRef, apply_bundle, apply_object,
};

use super::charts;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use super::{Ctx, fail, until_ok};
use crate::config::Component;
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

const WAIT: Duration = Duration::from_secs(10 * 60);

/// A manifest component's objects: its local file, or its pinned download (kept by
/// the `downloads` step, fetched again only when the copy is gone).
async fn bundle(ctx: &Ctx, name: &str, comp: &Component) -> Result<Bundle, StepError> {
    match (&comp.manifest, &comp.url, &comp.sha256) {
        (Some(file), _, pin) => Bundle::load(&ctx.config.path(file), pin.as_deref())
            .map_err(fail(format!("loading the {name} manifests"))),
        (None, Some(url), Some(pin)) => super::downloads::fetch(ctx, url, pin)
            .await
            .map_err(|e| e.context(format!("components.{name}"))),
        _ => Err(StepError::permanent(format!(
            "components.{name} has no manifest (a `manifest`, or a `url` with `sha256`)"
        ))),
    }
}

/// What installing a component left to wait for.
enum Installed {
    /// A manifest bundle of this many objects, applied (its CRDs established).
    Bundle(usize),
    /// A HelmRelease, applied; Flux installs it.
    Release(crate::config::Release),
}

/// Applies a component: a chart's namespace, source and HelmRelease, or a
/// manifest bundle as its own field manager (so that a bundle's Namespace without
/// Castle's labels never removes the labels Castle applied to the same Namespace).
async fn apply_component(
    ctx: &Ctx,
    step: &StepCtx,
    cluster: &dyn ClusterApi,
    name: &str,
    comp: &Component,
) -> Result<Installed, StepError> {
    if let Some(release) = ctx.config.release(name) {
        apply_all(step, cluster, &[namespace(&release.namespace)]).await?;
        charts::apply_handover(step, cluster, &charts::release_objects(&release), WAIT).await?;
        step.progress(format!(
            "{}: {} applied",
            charts::release_ref(&release),
            charts::describe(&release)
        ));
        return Ok(Installed::Release(release));
    }
    let b = bundle(ctx, name, comp)
        .await?
        .with_field_manager(&format!("castle-{name}"));
    let n = step
        .guard(async {
            apply_bundle(cluster, &b, WAIT)
                .await
                .map_err(fail(format!("applying the {name} manifests")))
        })
        .await?;
    step.progress(format!("{name}: {n} objects applied"));
    Ok(Installed::Bundle(n))
}

/// Waits for `condition` while a component installs: a HelmRelease that fails
/// meanwhile (a values error, an unknown chart) ends the wait with its own message
/// instead of leaving it to time out.
async fn wait_during_install(
    step: &StepCtx,
    cluster: &dyn ClusterApi,
    installed: &Installed,
    condition: &Condition,
    what: &str,
) -> Result<(), StepError> {
    step.guard(async {
        let wanted = cluster.wait(condition, WAIT);
        let Installed::Release(release) = installed else {
            return wanted.await.map(|_| ()).map_err(fail(what));
        };
        let target = charts::release_ref(release);
        let ready = Condition::FluxReady(target.clone());
        let failing = cluster.wait(&ready, WAIT);
        tokio::pin!(wanted, failing);
        tokio::select! {
            done = &mut wanted => done.map(|_| ()).map_err(fail(what)),
            release = &mut failing => match release {
                Err(e) => Err(fail(format!("waiting for {target}"))(e)),
                Ok(_) => wanted.await.map(|_| ()).map_err(fail(what)),
            },
        }
    })
    .await
}

/// Waits until a component is installed: its HelmRelease Ready at its generation
/// (the release's own message shown while it is not, and as the failure when it
/// cannot become Ready), then the workloads of `readiness`. Returns the step's
/// outputs, with the line the report shows.
async fn await_component(
    step: &StepCtx,
    cluster: &dyn ClusterApi,
    comp: &Component,
    installed: Installed,
) -> Result<Value, StepError> {
    let mut out = json!({});
    match installed {
        Installed::Bundle(n) => out["objects"] = json!(n),
        Installed::Release(release) => {
            let target = charts::release_ref(&release);
            step.guard(async {
                let report = |missing: &str| step.progress(missing.to_string());
                cluster
                    .wait_reporting(&Condition::FluxReady(target.clone()), WAIT, &report)
                    .await
                    .map_err(fail(format!("waiting for {target}")))
            })
            .await?;
            let line = format!("{target} Ready: {}", charts::describe(&release));
            step.progress(line.clone());
            out["release"] = json!(target.to_string());
            out["chart"] = json!(charts::describe(&release));
            out["report"] = json!([line]);
        }
    }
    for r in &comp.readiness {
        let api_version =
            if r.kind == "Deployment" || r.kind == "DaemonSet" || r.kind == "StatefulSet" {
                "apps/v1"
            } else {
                "v1"
            };
        let target = ObjectRef::new(api_version, &r.kind, Some(&r.namespace), &r.name);
        step.guard(async {
            cluster
                .wait(&Condition::Rollout(target.clone()), WAIT)
                .await
                .map_err(fail(format!("waiting for {target}")))
        })
        .await?;
        step.progress(format!("{target} ready"));
    }
    Ok(out)
}

async fn apply_all(
    step: &StepCtx,
    cluster: &dyn ClusterApi,
    objects: &[Value],
) -> Result<(), StepError> {
    for o in objects {
        let r = ObjectRef::of(o);
        // A webhook that is not serving yet refuses transiently, and an object that is
        // being deleted must be gone before it is applied again: apply_object waits
        // out both.
        step.guard(async {
            apply_object(cluster, FIELD_MANAGER, o, WAIT)
                .await
                .map(|_| ())
                .map_err(fail(format!("applying {r}")))
        })
        .await?;
    }
    Ok(())
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "castle"}}})
}

/// The Corefile of Talos's own CoreDNS (`k8stemplates/coredns.go`, v1.12), plus a
/// server block per forward. `forward . /etc/resolv.conf` with `loop` is safe only
/// because the pods take the node's resolv.conf (`dnsPolicy: Default`): with the
/// cluster's own resolver there, CoreDNS would forward to itself, the loop plugin
/// would detect it and halt, and the pods would crash-loop.
fn corefile(c: &crate::config::CoreDns) -> String {
    let mut out = String::from(
        ".:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    log . {
        class error
    }
    prometheus :9153
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    cache 30 {
        disable success cluster.local
        disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
",
    );
    for f in &c.forwards {
        out.push_str(&format!(
            "{}:53 {{\n    errors\n    cache 30\n    forward . {}\n}}\n",
            f.zone,
            f.to.join(" ")
        ));
    }
    out
}

/// CoreDNS as Talos deploys its own (`k8stemplates/coredns.go`) and upstream's
/// `coredns/deployment` does: the node's resolver (`dnsPolicy: Default`), probes on
/// `/health` and `/ready`, critical priority, control-plane tolerations.
fn coredns_objects(c: &crate::config::CoreDns) -> Vec<Value> {
    let selector = json!({"k8s-app": "kube-dns"});
    let labels = json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
    "spec": {"replicas": c.replicas, "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "template": {"metadata": {"labels": selector}, "spec": {
            "serviceAccountName": "coredns",
            "priorityClassName": "system-cluster-critical",
            "dnsPolicy": "Default",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "CriticalAddonsOnly", "operator": "Exists"},
            ],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                "podAffinityTerm": {"labelSelector": {"matchLabels": selector}, "topologyKey": "kubernetes.io/hostname"}}]}},
            "containers": [{
                "name": "coredns",
                "image": c.image,
                "imagePullPolicy": "IfNotPresent",
                "args": ["-conf", "/etc/coredns/Corefile"],
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                ],
                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                    "initialDelaySeconds": 60, "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": 5},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
                "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
                "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}],
            }],
            "volumes": [{"name": "config-volume", "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
        }}}});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": "kube-system"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
               "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                         {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:coredns"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
               "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": {"Corefile": corefile(c)}}),
        deployment,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kube-dns", "namespace": "kube-system",
                   "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
                   "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
               "spec": {"clusterIP": c.cluster_ip, "selector": selector, "ports": [
                   {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                   {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}),
    ]
}

/// A `[[kubernetes.secrets]]` entry as a Secret: its refs resolved (generated
/// passwords read from Vault beforehand), the pull secret composed, its labels,
/// annotations and type. The value lives in memory only, until it is sent.
fn secret_object(ctx: &Ctx, s: &crate::config::KubeSecret) -> Result<Value, StepError> {
    let mut data = serde_json::Map::new();
    for (k, r) in &s.data {
        data.insert(k.clone(), json!(ctx.secret(r)?.expose_secret()));
    }
    if let Some(d) = &s.dockerconfigjson {
        let token = ctx.secret(&d.token)?;
        let composed = castle_kube::docker_config_json(&d.registry, &d.username, &token);
        data.insert(".dockerconfigjson".into(), json!(composed.expose_secret()));
    }
    let mut metadata = json!({"name": s.name, "namespace": s.namespace});
    if !s.labels.is_empty() {
        metadata["labels"] = json!(s.labels);
    }
    if !s.annotations.is_empty() {
        metadata["annotations"] = json!(s.annotations);
    }
    Ok(
        json!({"apiVersion": "v1", "kind": "Secret", "type": s.secret_type(), "metadata": metadata, "stringData": data}),
    )
}

/// The ClusterSecretStore of `[components.eso.store]` (external-secrets.io/v1,
/// `apis/externalsecrets/v1/secretstore_vault_types.go`): Vault KV v2 at the
/// configured mount, trusted through `[vault] ca_file`, logged in with the JWT role
/// Castle configured before the cluster existed, presenting a token the API server
/// issues for the service account (TokenRequest). No Secret holds a Vault token.
fn secret_store_object(
    c: &crate::config::Config,
    store: &crate::config::SecretStore,
) -> Result<Value, StepError> {
    let v = c
        .vault
        .as_ref()
        .ok_or_else(|| StepError::permanent("components.eso.store needs [vault]"))?;
    let (namespace, account) = store.account();
    let mut vault = json!({
        "server": store.server.as_deref().unwrap_or(&v.address),
        "path": store.mount,
        "version": "v2",
        "auth": {"jwt": {
            "path": store.jwt_path,
            "role": store.role,
            // The token's audiences exactly: ESO adds its default `vault` only when
            // this list is absent (pkg/provider/vault/auth_jwt.go).
            "kubernetesServiceAccountToken": {
                "serviceAccountRef": {"name": account, "namespace": namespace},
                "audiences": c.store_audiences(store),
            },
        }},
    });
    if let Some(file) = &v.ca_file {
        let pem = std::fs::read(c.path(file)).map_err(|e| {
            StepError::permanent(format!(
                "reading vault.ca_file `{file}` for the ClusterSecretStore: {e}"
            ))
        })?;
        // `caBundle` is []byte in Go: base64 in JSON.
        vault["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    Ok(
        json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": store.name, "labels": {"app.kubernetes.io/managed-by": "castle"}},
        "spec": {"provider": {"vault": vault}}}),
    )
}

macro_rules! cluster_step {
    ($name:ident, $id:literal, $deps:expr, $fp:expr) => {
        pub(crate) struct $name(pub(crate) Arc<Ctx>);

        impl $name {
            fn step_deps(&self) -> Vec<String> {
                let f: fn(&crate::config::Config) -> Vec<&'static str> = $deps;
                let c = &self.0.config;
                f(c).into_iter()
                    .filter(|s| present(c, s))
                    .map(str::to_string)
                    .collect()
            }

            fn fp(&self) -> String {
                let f: fn(&crate::config::Config) -> String = $fp;
                f(&self.0.config)
            }
        }
    };
}

/// Whether the graph of `c` has step `id` (disabled parts drop out).
fn present(c: &crate::config::Config, id: &str) -> bool {
    match id {
        "vault-db" => c.vault.is_some(),
        "eso" => c.component("eso").is_some(),
        "networking" => c.component("metallb").is_some(),
        "storage" => c.component("longhorn").is_some(),
        "flux" | "gitops" => c.component("flux").is_some(),
        "sync" => !c.sync.is_empty() && c.vault.is_some(),
        _ => true,
    }
}

/// A component's own step comes after the cluster basics, and after Flux's
/// controllers when Flux installs it (a chart).
fn component_deps(c: &crate::config::Config, name: &str) -> Vec<&'static str> {
    let mut d = vec!["engine"];
    if c.release(name).is_some() {
        d.push("flux");
    }
    d
}

// The engine reads the generated passwords `vault-db` keeps in Vault.
cluster_step!(Engine, "engine", |_| vec!["bootstrap", "vault-db"], |c| {
    super::fingerprint(&[&c.kubernetes])
});
// Flux's controllers need only the API server: they come up while the engine
// step applies namespaces, Secrets and CoreDNS.
cluster_step!(FluxInstall, "flux", |_| vec!["bootstrap"], |c| {
    super::fingerprint(&[&c
        .components
        .flux
        .as_ref()
        .map(|f| (&f.manifest, &f.url, &f.sha256))])
});
cluster_step!(Eso, "eso", |c| component_deps(c, "eso"), |c| {
    super::fingerprint(&[
        &c.components.eso,
        &c.vault.as_ref().map(|v| (&v.address, &v.ca_file)),
    ])
});
cluster_step!(
    Networking,
    "networking",
    |c| component_deps(c, "metallb"),
    |c| super::fingerprint(&[&c.components.metallb])
);
cluster_step!(Storage, "storage", |c| component_deps(c, "longhorn"), |c| {
    super::fingerprint(&[&c.components.longhorn])
});
// The handover comes last: Flux finds what Castle installed, and takes it over.
cluster_step!(
    Gitops,
    "gitops",
    |_| vec!["engine", "vault-db", "flux", "eso", "networking", "storage"],
    |c| super::fingerprint(&[&c.components.flux])
);
cluster_step!(
    Verify,
    "verify",
    |_| vec!["networking", "gitops", "storage", "sync"],
    |c| super::fingerprint(&[&c.verify, &c.secret_store()])
);

/// The in-cluster steps go with the VMs: destroying them one by one would only
/// hang on a cluster that is already gone.
const GONE_WITH_VMS: &str = "removed with the cluster's VMs";

/// Waits until the API server answers and `nodes` nodes are Ready.
async fn nodes_ready(
    step: &StepCtx,
    cluster: &dyn ClusterApi,
    nodes: usize,
) -> Result<(), StepError> {
    step.guard(async {
        until_ok(step, "reaching the API server", WAIT, || async {
            cluster
                .wait(&Condition::NodesReady(nodes), WAIT)
                .await
                .map_err(fail("waiting for nodes"))
        })
        .await
    })
    .await?;
    step.progress(format!("{nodes} nodes Ready"));
    Ok(())
}

#[async_trait]
impl Step for Engine {
    fn id(&self) -> &str {
        "engine"
    }
    fn deps(&self) -> Vec<String> {
        self.step_deps()
    }
    fn fingerprint(&self) -> String {
        self.fp()
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let c = &self.0.config;
        let cluster = self.0.cluster()?;
        nodes_ready(ctx, cluster.as_ref(), self.0.config.nodes_for_components()).await?;
        let mut namespaces: Vec<String> = c.kubernetes.namespaces.clone();
        namespaces.extend(c.kubernetes.secrets.iter().map(|s| s.namespace.clone()));
        namespaces.sort();
        namespaces.dedup();
        apply_all(
            ctx,
            cluster.as_ref(),
            &namespaces.iter().map(|n| namespace(n)).collect::<Vec<_>>(),
        )
        .await?;
        let refs: Vec<&crate::secrets::SecretRef> = c
            .kubernetes
            .secrets
            .iter()
            .flat_map(crate::config::KubeSecret::refs)
            .map(|(_, r)| r)
            .collect();
        self.0.read_generated(refs).await?;
        let secrets = c
            .kubernetes
            .secrets
            .iter()
            .map(|s| secret_object(&self.0, s))
            .collect::<Result<Vec<_>, _>>()?;
        apply_all(ctx, cluster.as_ref(), &secrets).await?;
        ctx.progress(format!(
            "{} namespaces, {} bootstrap secrets",
            namespaces.len(),
            secrets.len()
        ));
        if c.kubernetes.coredns.enabled {
            apply_all(
                ctx,
                cluster.as_ref(),
                &coredns_objects(&c.kubernetes.coredns),
            )
            .await?;
            let target = ObjectRef::new("apps/v1", "Deployment", Some("kube-system"), "coredns");
            ctx.guard(async {
                cluster
                    .wait(&Condition::Rollout(target), WAIT)
                    .await
                    .map_err(fail("waiting for CoreDNS"))
            })
            .await?;
            ctx.progress("CoreDNS ready");
        }
        Ok(json!({ "namespaces": namespaces, "secrets": secrets.len() }))
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        ctx.progress(GONE_WITH_VMS);
        Ok(())
    }
}

/// Flux's controllers, from the pinned release manifest, applied as the manager
/// Flux itself applies its own components from Git with (`charts::HANDOVER_MANAGER`).
#[async_trait]
impl Step for FluxInstall {
    fn id(&self) -> &str {
        "flux"
    }
    fn deps(&self) -> Vec<String> {
        self.step_deps()
    }
    fn fingerprint(&self) -> String {
        self.fp()
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let comp = self
            .0
            .config
            .components
            .flux
            .clone()
            .ok_or_else(|| StepError::permanent("no [components.flux]"))?;
        let cluster = self.0.cluster()?;
        nodes_ready(ctx, cluster.as_ref(), self.0.config.nodes_for_components()).await?;
        let b = bundle(&self.0, "flux", &comp)
            .await?
            .with_field_manager(charts::HANDOVER_MANAGER);
        let n = ctx
            .guard(async {
                apply_bundle(cluster.as_ref(), &b, WAIT)
                    .await
                    .map_err(fail("applying Flux's release manifest"))
            })
            .await?;
        ctx.progress(format!("Flux: {n} objects applied (sha256 {})", b.sha256));
        for controller in [
            "source-controller",
            "kustomize-controller",
            "helm-controller",
        ] {
            let target = ObjectRef::new("apps/v1", "Deployment", Some("flux-system"), controller);
            ctx.guard(async {
                cluster
                    .wait(&Condition::Rollout(target.clone()), WAIT)
                    .await
                    .map_err(fail(format!("waiting for {target}")))
            })
            .await?;
        }
        ctx.progress("Flux's controllers ready");
        Ok(json!({ "objects": n, "sha256": b.sha256 }))
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        ctx.progress(GONE_WITH_VMS);
        Ok(())
    }
}

/// External Secrets and, once its CRDs are served, the ClusterSecretStore.
#[async_trait]
impl Step for Eso {
    fn id(&self) -> &str {
        "eso"
    }
    fn deps(&self) -> Vec<String> {
        self.step_deps()
    }
    fn fingerprint(&self) -> String {
        self.fp()
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let c = &self.0.config;
        let comp = c
            .component("eso")
            .cloned()
            .ok_or_else(|| StepError::permanent("no [components.eso]"))?;
        let cluster = self.0.cluster()?;
        let installed = apply_component(&self.0, ctx, cluster.as_ref(), "eso", &comp).await?;
        if let Some(store) = c.secret_store() {
            // A bundle's CRDs are established once it is applied; a chart's come
            // with Helm's install.
            let crd = Condition::CrdEstablished("clustersecretstores.external-secrets.io".into());
            wait_during_install(
                ctx,
                cluster.as_ref(),
                &installed,
                &crd,
                "waiting for External Secrets' CRDs",
            )
            .await?;
            let object = secret_store_object(c, store)?;
            apply_all(ctx, cluster.as_ref(), &[object]).await?;
            ctx.progress(format!(
                "ClusterSecretStore {} logs in to Vault as JWT role `{}` for {}",
                store.name, store.role, store.service_account
            ));
        }
        await_component(ctx, cluster.as_ref(), &comp, installed).await
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        ctx.progress(GONE_WITH_VMS);
        Ok(())
    }
}

#[async_trait]
impl Step for Networking {
    fn id(&self) -> &str {
        "networking"
    }
    fn deps(&self) -> Vec<String> {
        self.step_deps()
    }
    fn fingerprint(&self) -> String {
        self.fp()
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let comp = self
            .0
            .config
            .component("metallb")
            .cloned()
            .ok_or_else(|| StepError::permanent("no [components.metallb]"))?;
        let cluster = self.0.cluster()?;
        let installed = apply_component(&self.0, ctx, cluster.as_ref(), "metallb", &comp).await?;
        let webhook = Condition::EndpointsReady {
            namespace: "metallb-system".into(),
            service: "metallb-webhook-service".into(),
        };
        wait_during_install(
            ctx,
            cluster.as_ref(),
            &installed,
            &webhook,
            "waiting for the MetalLB webhook",
        )
        .await?;
        ctx.progress("MetalLB webhook serving");
        let pool = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "castle", "namespace": "metallb-system"}, "spec": {"addresses": comp.addresses}});
        let l2 = json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "castle", "namespace": "metallb-system"}, "spec": {"ipAddressPools": ["castle"]}});
        apply_all(ctx, cluster.as_ref(), &[pool, l2]).await?;
        let mut out = await_component(ctx, cluster.as_ref(), &comp, installed).await?;
        out["addresses"] = json!(comp.addresses);
        Ok(out)
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        ctx.progress(GONE_WITH_VMS);
        Ok(())
    }
}

#[async_trait]
impl Step for Storage {
    fn id(&self) -> &str {
        "storage"
    }
    fn deps(&self) -> Vec<String> {
        self.step_deps()
    }
    fn fingerprint(&self) -> String {
        self.fp()
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let comp = self
            .0
            .config
            .component("longhorn")
            .cloned()
            .ok_or_else(|| StepError::permanent("no [components.longhorn]"))?;
        let cluster = self.0.cluster()?;
        let installed = apply_component(&self.0, ctx, cluster.as_ref(), "longhorn", &comp).await?;
        await_component(ctx, cluster.as_ref(), &comp, installed).await
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        ctx.progress(GONE_WITH_VMS);
        Ok(())
    }
}

/// The handover: the Git token, then the GitRepository and Kustomization `flux
/// bootstrap` would create, as the manager Flux applies them from Git with; then
/// every Kustomization and HelmRelease Ready.
#[async_trait]
impl Step for Gitops {
    fn id(&self) -> &str {
        "gitops"
    }
    fn deps(&self) -> Vec<String> {
        self.step_deps()
    }
    fn fingerprint(&self) -> String {
        self.fp()
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(30 * 60))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let comp = self
            .0
            .config
            .components
            .flux
            .clone()
            .ok_or_else(|| StepError::permanent("no [components.flux]"))?;
        let cluster = self.0.cluster()?;
        let token = comp
            .token
            .as_ref()
            .map(|t| self.0.secret(t))
            .transpose()?
            .ok_or_else(|| StepError::permanent("components.flux.token is missing"))?;
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flux-system", "namespace": "flux-system"}, "stringData": {"username": "git", "password": token.expose_secret()}});
        apply_all(ctx, cluster.as_ref(), &[secret]).await?;
        charts::apply_handover(
            ctx,
            cluster.as_ref(),
            &[git_repository(&comp), root_kustomization(&comp, false)],
            WAIT,
        )
        .await?;
        ctx.progress("Flux bootstrapped; waiting for every Kustomization and HelmRelease");
        let detail = ctx
            .guard(async {
                // Each change in what is missing is shown as it happens (a failing
                // Kustomization's message at once); a failure that waiting does not
                // heal ends the wait.
                let report = |missing: &str| ctx.progress(format!("Flux: {missing}"));
                cluster
                    .wait_reporting(
                        &Condition::AllFluxReady,
                        Duration::from_secs(25 * 60),
                        &report,
                    )
                    .await
                    .map_err(fail("waiting for Flux to converge"))
            })
            .await?;
        ctx.progress(format!("Flux converged: {detail}"));
        Ok(json!({ "flux": detail }))
    }
    /// Suspends Flux's root Kustomization (what `flux suspend kustomization
    /// flux-system` does) so that Flux stops reconciling while the nodes go: the
    /// cluster itself goes with its VMs. Bounded by [`SUSPEND_BUDGET`]; a cluster
    /// that is already gone is reported, never waited on.
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let Some(comp) = self.0.config.components.flux.clone() else {
            return Ok(());
        };
        let Some(kubeconfig) = self.0.kubeconfig_for_destroy() else {
            ctx.progress(format!(
                "Flux not suspended: no kubeconfig (in memory or in configs_dir); {GONE_WITH_VMS}"
            ));
            return Ok(());
        };
        let cluster = self.0.backends.cluster(&kubeconfig)?;
        let suspend = async {
            let target = ObjectRef::new(
                "kustomize.toolkit.fluxcd.io/v1",
                "Kustomization",
                Some("flux-system"),
                "flux-system",
            );
            if cluster.get(&target).await?.is_none() {
                return Ok(false);
            }
            cluster
                .apply_as(
                    charts::HANDOVER_MANAGER,
                    &root_kustomization(&comp, true),
                    true,
                )
                .await
                .map(|_| true)
        };
        let outcome = ctx
            .guard(async { Ok(tokio::time::timeout(SUSPEND_BUDGET, suspend).await) })
            .await?;
        ctx.progress(match outcome {
            Ok(Ok(true)) => "Flux suspended (Kustomization flux-system/flux-system)".to_string(),
            Ok(Ok(false)) => "Flux not suspended: its Kustomization does not exist".to_string(),
            Ok(Err(e)) => format!("Flux not suspended: {e}; {GONE_WITH_VMS}"),
            Err(_) => format!(
                "Flux not suspended: the API server did not answer within {}s; {GONE_WITH_VMS}",
                SUSPEND_BUDGET.as_secs()
            ),
        });
        Ok(())
    }
}

/// How long destroy gives the API server to suspend Flux before going on.
const SUSPEND_BUDGET: Duration = Duration::from_secs(20);

fn interval(comp: &Component) -> String {
    comp.interval.clone().unwrap_or_else(|| "1m".into())
}

/// Flux's GitRepository, as `flux bootstrap` names it.
fn git_repository(comp: &Component) -> Value {
    json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "flux-system", "namespace": "flux-system"},
           "spec": {"interval": interval(comp), "url": comp.git_url, "ref": {"branch": comp.branch.clone().unwrap_or_else(|| "main".into())}, "secretRef": {"name": "flux-system"}}})
}

/// Flux's root Kustomization, as the gitops step applies it (and suspended, for
/// destroy: the same object under the same field manager, so no field changes hands).
fn root_kustomization(comp: &Component, suspend: bool) -> Value {
    let mut spec = json!({"interval": interval(comp), "path": comp.path.clone().unwrap_or_else(|| "./".into()), "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}});
    if suspend {
        spec["suspend"] = json!(true);
    }
    json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "flux-system", "namespace": "flux-system"}, "spec": spec})
}

#[async_trait]
impl Step for Verify {
    fn id(&self) -> &str {
        "verify"
    }
    fn deps(&self) -> Vec<String> {
        // Every node Ready is the gate of the verdict.
        let mut d = self.step_deps();
        d.extend(
            self.0
                .config
                .nodes
                .iter()
                .map(|n| format!("join/{}", n.name)),
        );
        d
    }
    fn fingerprint(&self) -> String {
        self.fp()
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let v = self
            .0
            .config
            .verify
            .clone()
            .ok_or_else(|| StepError::permanent("no [verify]"))?;
        let cluster = self.0.cluster()?;
        nodes_ready(ctx, cluster.as_ref(), self.0.config.nodes.len()).await?;
        let (ns, name) = v
            .service
            .split_once('/')
            .ok_or_else(|| StepError::permanent("verify.service must be namespace/name"))?;
        let ip = ctx
            .guard(async {
                cluster
                    .wait(
                        &Condition::LoadBalancerIp {
                            namespace: ns.into(),
                            name: name.into(),
                        },
                        WAIT,
                    )
                    .await
                    .map_err(fail(format!("waiting for the IP of {}", v.service)))
            })
            .await?;
        ctx.progress(format!("{} has LoadBalancer IP {ip}", v.service));
        let mut status = None;
        if let Some(url) = &v.url {
            let got = until_ok(ctx, &format!("probing {url}"), WAIT, || async {
                let s = cluster
                    .probe_http(url, Duration::from_secs(10))
                    .await
                    .map_err(fail(format!("probing {url}")))?;
                if s == v.expect_status {
                    Ok(s)
                } else {
                    Err(StepError::transient(format!(
                        "{url} answered {s}, want {}",
                        v.expect_status
                    )))
                }
            })
            .await?;
            ctx.progress(format!("{url} answered {got}"));
            status = Some(got);
        }
        // By now the cluster reaches Vault (its DNS forwards come from gitops): ESO
        // has logged in with the JWT role, or says why not.
        let mut store = None;
        if let Some(s) = self.0.config.secret_store() {
            let target = ObjectRef::new(
                "external-secrets.io/v1",
                "ClusterSecretStore",
                None,
                &s.name,
            );
            ctx.guard(async {
                cluster
                    .wait(&Condition::FluxReady(target.clone()), WAIT)
                    .await
                    .map_err(fail(format!("waiting for {target} to log in to Vault")))
            })
            .await?;
            ctx.progress(format!(
                "ClusterSecretStore {} Ready: ESO logged in to Vault as JWT role `{}`",
                s.name, s.role
            ));
            store = Some(s.name.clone());
        }
        Ok(json!({ "ip": ip, "status": status, "store": store }))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
