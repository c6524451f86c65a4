use std::sync::Arc;

use async_trait::async_trait;

use super::Ctx;
use crate::engine::{Step, StepCtx};
use crate::error::StepError;
use crate::secrets::SecretRef;

/// `secrets`: resolves every secret ref up front, so a missing one fails in the
/// first second, not after ten minutes of VMs.
pub(crate) struct ResolveSecrets(pub(crate) Arc<Ctx>);

/// Every secret ref the config holds, with where it is used.
pub(crate) fn all_refs(c: &crate::config::Config) -> Vec<(String, SecretRef)> {
    let mut refs = vec![("proxmox.token".to_string(), c.proxmox.token.clone())];
    if let Some(t) = &c.tailscale {
        refs.push((
            "tailscale.oauth_client_id".into(),
            t.oauth_client_id.clone(),
        ));
        refs.push((
            "tailscale.oauth_client_secret".into(),
            t.oauth_client_secret.clone(),
        ));
    }
    if let Some(v) = &c.vault {
        refs.push(("vault.token".into(), v.token.clone()));
        for (i, r) in v.spec.secret_refs().into_iter().enumerate() {
            refs.push((format!("vault.spec.database password {i}"), r.clone()));
        }
    }
    for s in &c.kubernetes.secrets {
        for (k, r) in s.refs() {
            refs.push((
                format!("kubernetes secret {}/{} key {k}", s.namespace, s.name),
                r.clone(),
            ));
        }
    }
    if let Some(t) = c.components.flux.as_ref().and_then(|f| f.token.clone()) {
        refs.push(("components.flux.token".into(), t));
    }
    refs
}

#[async_trait]
impl Step for ResolveSecrets {
    fn id(&self) -> &str {
        "secrets"
    }
    fn deps(&self) -> Vec<String> {
        vec![]
    }
    fn fingerprint(&self) -> String {
        super::fingerprint(&[&all_refs(&self.0.config)])
    }
    fn keeps_outputs_in_memory(&self) -> bool {
        true
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let refs = all_refs(&self.0.config);
        let mut problems = Vec::new();
        // Generated passwords do not exist before vault-db makes them; the steps
        // that use them read them from Vault.
        let (generated, now): (Vec<_>, Vec<_>) =
            refs.iter().partition(|(_, r)| r.generated().is_some());
        for (used_by, r) in &now {
            if let Err(e) = self.0.secret(r) {
                problems.push(format!("{used_by}: {}", e.message));
            }
        }
        if !problems.is_empty() {
            return Err(StepError::permanent(problems.join("; ")));
        }
        let mut message = format!("{} secret refs resolved into memory", now.len());
        if !generated.is_empty() {
            message.push_str(&format!(
                ", {} read from Vault once generated",
                generated.len()
            ));
        }
        ctx.progress(message);
        Ok(serde_json::json!({ "resolved": now.len(), "generated": generated.len() }))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
