use std::sync::Arc;

use async_trait::async_trait;
use castle_tailscale::KeyRequest;
use castle_tailscale::ops::{
    mint_rebirth_key, remove_devices, remove_stale_devices, revoke_keys_described, run_description,
};
use serde_json::json;

use super::{Ctx, fail};
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

/// The journal key naming the description of a mint in flight.
const MINTING: &str = "minting";

/// `tailnet-key`: one reusable, ephemeral, preauthorized, tagged key in memory, and
/// the previous incarnation's devices deleted so hostnames come back exact.
///
/// Every run that applies machine configs mints a new key and revokes the previous
/// one: the key's secret is shown once and lives only in memory (never in the
/// journal), and the talos step needs it to render the Tailscale extension's config.
/// Devices that already joined stay joined (a revoked key admits no new device but
/// does not log out existing ones). `--resume` with nothing left to apply runs no
/// step after this one and so mints nothing.
pub(crate) struct TailnetKey(pub(crate) Arc<Ctx>);

impl TailnetKey {
    pub(crate) fn api(&self) -> Result<Arc<dyn castle_tailscale::TailscaleApi>, StepError> {
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

    /// A description no other mint has: the cluster and a random nonce.
    pub(crate) fn fresh_description(ctx: &Ctx) -> String {
        use rand::Rng as _;
        let mut rng = rand::rng();
        let nonce: String = (0..8)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect();
        run_description(&ctx.config.cluster.name, &nonce)
    }

    /// The key policy; `description` names the run so that a key whose mint answer
    /// was lost can be found again (see [`run_description`]).
    pub(crate) fn request(ctx: &Ctx, description: String) -> Option<KeyRequest> {
        let t = ctx.config.tailscale.as_ref()?;
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
        // One live key at a time: the key an earlier run minted is revoked, and so
        // is any key of a run that died before it heard its mint's answer.
        let recorded = ctx.recorded_outputs();
        if let Some(old) = recorded.get("key_id").and_then(|v| v.as_str()) {
            let _ = api.revoke_key(old).await;
        }
        if let Some(old) = recorded.get(MINTING).and_then(|v| v.as_str()) {
            revoke_keys_described(api.as_ref(), old)
                .await
                .map_err(fail("revoking the keys an interrupted run may have minted"))?;
        }
        let description = Self::fresh_description(&self.0);
        let request = Self::request(&self.0, description.clone())
            .ok_or_else(|| StepError::permanent("no [tailscale] section"))?;
        // Written before the mint, so that a run that dies before the answer
        // leaves the way to the key it may have made.
        ctx.record(MINTING, json!(description)).await?;
        // Minting is not idempotent: after an ambiguous failure the ops layer finds
        // and revokes this run's keys by their description before minting again,
        // and its error says whether the executor may retry.
        let key = mint_rebirth_key(api.as_ref(), &request)
            .await
            .map_err(fail("minting the tailnet auth key"))?;
        ctx.progress(format!("minted auth key {} (in memory only)", key.id));
        Ctx::put(&self.0.shared.tailnet_key, key.key);
        Ok(
            json!({ "key_id": key.id, "expires": key.expires, "description": description, "removed_devices": removed }),
        )
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
