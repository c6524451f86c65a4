//! `sync`: Secrets made inside the cluster (a database operator's user Secret)
//! copied into Vault KV v2, so apps that read Vault get them. The reference setup
//! did this with a `kubectl get secret` loop and a Python filter after Flux; here it
//! is a watch on the Secret and a check-and-set write, only when a value changed.
//! Values stay in memory: progress, the journal and errors name keys, never values.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use castle_kube::{Condition, ObjectRef};
use serde_json::{Value, json};

use super::{Ctx, fail};
use crate::config::SyncEntry;
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

/// How long the operator gets to create the Secret.
const WAIT: Duration = Duration::from_secs(15 * 60);

pub(crate) struct SyncSecrets(pub(crate) Arc<Ctx>);

impl SyncSecrets {
    /// Copies one entry; whether Vault's value changed.
    async fn one(
        &self,
        ctx: &StepCtx,
        cluster: &dyn castle_kube::ClusterApi,
        vault: &dyn castle_vault::VaultApi,
        s: &SyncEntry,
    ) -> Result<bool, StepError> {
        let (ns, name) = s.from.split_once('/').ok_or_else(|| {
            StepError::permanent(format!("sync.from `{}` is not namespace/name", s.from))
        })?;
        let secret = ObjectRef::new("v1", "Secret", Some(ns), name);
        ctx.guard(async {
            cluster
                .wait(&Condition::Exists(secret.clone()), WAIT)
                .await
                .map_err(fail(format!("waiting for {secret}")))
        })
        .await?;
        let object = cluster
            .get(&secret)
            .await
            .map_err(fail(format!("reading {secret}")))?
            .ok_or_else(|| StepError::transient(format!("{secret} went away")))?;
        let data = object.get("data").and_then(Value::as_object);
        let mut wanted = serde_json::Map::new();
        for (key, field) in s.keys.pairs() {
            let value = data
                .and_then(|d| d.get(&key))
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    let have: Vec<&String> = data.map(|d| d.keys().collect()).unwrap_or_default();
                    StepError::permanent(format!(
                        "{secret} has no key `{key}` (it has: {}); fix [[sync]] keys",
                        have.iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            wanted.insert(field, Value::String(value));
        }
        let mount = s.mount.trim_matches('/');
        let data_path = format!("{mount}/data/{}", s.path.trim_matches('/'));
        let current = vault
            .read(&data_path)
            .await
            .map_err(fail(format!("reading {data_path}")))?;
        let version = current
            .as_ref()
            .and_then(|c| c.pointer("/metadata/version"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let same = current
            .as_ref()
            .and_then(|c| c.get("data"))
            .and_then(Value::as_object)
            .is_some_and(|have| {
                wanted.iter().all(|(k, v)| have.get(k) == Some(v)) && have.len() == wanted.len()
            });
        if same {
            ctx.progress(format!("{} -> {data_path}: unchanged", s.from));
            return Ok(false);
        }
        vault
            .write(
                &data_path,
                json!({"data": Value::Object(wanted), "options": {"cas": version}}),
            )
            .await
            .map_err(fail(format!("writing {data_path}")))?;
        ctx.progress(format!(
            "{} -> {data_path}: written (keys {})",
            s.from,
            s.keys
                .pairs()
                .into_iter()
                .map(|(_, f)| f)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(true)
    }
}

#[async_trait]
impl Step for SyncSecrets {
    fn id(&self) -> &str {
        "sync"
    }
    fn deps(&self) -> Vec<String> {
        let c = &self.0.config;
        let mut d = vec!["vault-db".to_string()];
        d.push(if c.components.flux.as_ref().is_some_and(|f| f.enabled) {
            "gitops".into()
        } else {
            "engine".into()
        });
        d
    }
    fn fingerprint(&self) -> String {
        super::fingerprint(&[&self.0.config.sync])
    }
    fn timeout(&self) -> Option<Duration> {
        Some(WAIT + Duration::from_secs(5 * 60))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let cluster = self.0.cluster()?;
        let vault = super::vault::api(&self.0)?;
        let mut changed = BTreeMap::new();
        for s in &self.0.config.sync {
            let wrote = self.one(ctx, cluster.as_ref(), vault.as_ref(), s).await?;
            changed.insert(format!("{}/{}", s.mount, s.path), wrote);
        }
        Ok(json!({ "written": changed }))
    }
    /// The copies outlive the cluster (apps outside it read them) unless
    /// `destroy --wipe`, which removes them with their KV history.
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        if !self.0.wipe {
            return Ok(());
        }
        let vault = super::vault::api(&self.0)?;
        for s in &self.0.config.sync {
            castle_vault::delete_kv(
                vault.as_ref(),
                s.mount.trim_matches('/'),
                s.path.trim_matches('/'),
            )
            .await
            .map_err(fail(format!("deleting {}/{}", s.mount, s.path)))?;
            ctx.progress(format!("{}/{} deleted", s.mount, s.path));
        }
        Ok(())
    }
}
