use std::sync::Arc;

use async_trait::async_trait;
use castle_tailscale::KeyRequest;
use castle_tailscale::ops::{mint_rebirth_key, remove_devices, remove_stale_devices};
use serde_json::json;

use super::{Ctx, fail};
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

/// `tailnet-key`: one reusable, ephemeral, preauthorized, tagged key in memory, and
/// the previous incarnation's devices deleted so hostnames come back exact.
pub(crate) struct TailnetKey(pub(crate) Arc<Ctx>);

impl TailnetKey {
    fn api(&self) -> Result<Arc<dyn castle_tailscale::TailscaleApi>, StepError> {
        let t = self
            .0
            .config
            .tailscale
            .as_ref()
            .ok_or_else(|| StepError::permanent("no [tailscale] section"))?;
        let id = self.0.secret(&t.oauth_client_id)?;
        let secret = self.0.secret(&t.oauth_client_secret)?;
        self.0.backends.tailscale(&t.tailnet, &id, &secret)
    }

    pub(crate) fn hostnames(ctx: &Ctx) -> Vec<String> {
        ctx.config
            .nodes
            .iter()
            .map(|n| ctx.config.hostname(&n.name))
            .collect()
    }

    pub(crate) fn request(ctx: &Ctx) -> Option<KeyRequest> {
        let t = ctx.config.tailscale.as_ref()?;
        let mut description = format!("castle rebirth of {}", ctx.config.cluster.name);
        description.truncate(50);
        Some(KeyRequest {
            reusable: true,
            ephemeral: true,
            preauthorized: true,
            tags: t.tags.clone(),
            expiry_seconds: t.key_ttl_seconds,
            description,
        })
    }
}

#[async_trait]
impl Step for TailnetKey {
    fn id(&self) -> &str {
        "tailnet-key"
    }
    fn deps(&self) -> Vec<String> {
        vec!["secrets".into()]
    }
    fn fingerprint(&self) -> String {
        super::fingerprint(&[&self.0.config.tailscale, &Self::hostnames(&self.0)])
    }
    fn keeps_outputs_in_memory(&self) -> bool {
        true
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let api = self.api()?;
        let tags = self
            .0
            .config
            .tailscale
            .as_ref()
            .map(|t| t.tags.clone())
            .unwrap_or_default();
        let removed = remove_stale_devices(api.as_ref(), &Self::hostnames(&self.0), &tags)
            .await
            .map_err(fail("removing stale tailnet devices"))?;
        if !removed.is_empty() {
            ctx.progress(format!(
                "removed {} stale devices: {}",
                removed.len(),
                removed.join(", ")
            ));
        }
        // A key minted by an earlier, interrupted run is revoked: one live key at a time.
        if let Some(old) = ctx
            .recorded_outputs()
            .get("key_id")
            .and_then(|v| v.as_str())
        {
            let _ = api.revoke_key(old).await;
        }
        let request =
            Self::request(&self.0).ok_or_else(|| StepError::permanent("no [tailscale] section"))?;
        // Minting is not idempotent: a failure here is never retried blindly by
        // the service layer; the executor may retry the whole step, which first
        // revokes what an earlier attempt recorded.
        let key = mint_rebirth_key(api.as_ref(), &request)
            .await
            .map_err(fail("minting the tailnet auth key"))?;
        ctx.progress(format!("minted auth key {} (in memory only)", key.id));
        Ctx::put(&self.0.shared.tailnet_key, key.key);
        Ok(json!({ "key_id": key.id, "expires": key.expires, "removed_devices": removed }))
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let api = self.api()?;
        let tags = self
            .0
            .config
            .tailscale
            .as_ref()
            .map(|t| t.tags.clone())
            .unwrap_or_default();
        let removed = remove_devices(api.as_ref(), &Self::hostnames(&self.0), &tags)
            .await
            .map_err(fail("removing tailnet devices"))?;
        if let Some(id) = ctx
            .recorded_outputs()
            .get("key_id")
            .and_then(|v| v.as_str())
        {
            let _ = api.revoke_key(id).await;
        }
        ctx.progress(format!("removed {} tailnet devices", removed.len()));
        Ok(())
    }
}
