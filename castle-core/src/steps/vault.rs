use std::sync::Arc;

use async_trait::async_trait;
use castle_vault::{VaultApi, VaultSpec};
use serde_json::json;

use super::{Ctx, fail};
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

pub(crate) fn api(ctx: &Ctx) -> Result<Arc<dyn VaultApi>, StepError> {
    let v = ctx
        .config
        .vault
        .as_ref()
        .ok_or_else(|| StepError::permanent("no [vault] section"))?;
    let token = ctx.secret(&v.token)?;
    ctx.backends.vault(
        &v.address,
        v.ca_file.as_deref().map(|f| ctx.config.path(f)),
        &token,
    )
}

pub(crate) fn resolved(
    ctx: &Ctx,
    part: VaultSpec<crate::secrets::SecretRef>,
) -> Result<VaultSpec, StepError> {
    // Policy files are relative to castle.toml, not to the working directory.
    Ok(part
        .resolve_secrets(|r| ctx.secret(r))?
        .with_policy_files_under(ctx.config.base_dir()))
}

/// The spec as a plan needs it: a plan never shows or compares a connection's
/// password, so a generated one (`{ vault = ... }`, perhaps not made yet) stands in
/// unread.
pub(crate) fn resolved_for_plan(
    ctx: &Ctx,
    part: VaultSpec<crate::secrets::SecretRef>,
) -> Result<VaultSpec, StepError> {
    Ok(part
        .resolve_secrets(|r| match r.generated() {
            Some(_) => Ok(secrecy::SecretString::from(GENERATED_PLACEHOLDER)),
            None => ctx.secret(r),
        })?
        .with_policy_files_under(ctx.config.base_dir()))
}

/// What stands in for a generated password in a plan; never sent.
pub(crate) const GENERATED_PLACEHOLDER: &str = "(generated in Vault)";

/// Plans and applies `spec`; the number of changes.
async fn converge(ctx: &Ctx, step: &StepCtx, spec: &VaultSpec) -> Result<usize, StepError> {
    let api = api(ctx)?;
    let plan = castle_vault::plan(api.as_ref(), spec)
        .await
        .map_err(fail("reading vault"))?;
    for c in &plan.changes {
        step.progress(format!("{:?} {} {}", c.op, c.kind, c.path).to_lowercase());
    }
    castle_vault::apply(api.as_ref(), spec, &plan)
        .await
        .map_err(fail("applying the vault plan"))?;
    Ok(plan.changes.len())
}

/// `vault-jwt`: JWT auth, policies and the service-account keypair (generated once,
/// kept in Vault KV), configured before the cluster exists.
pub(crate) struct VaultJwt(pub(crate) Arc<Ctx>);

#[async_trait]
impl Step for VaultJwt {
    fn id(&self) -> &str {
        "vault-jwt"
    }
    fn deps(&self) -> Vec<String> {
        vec!["secrets".into()]
    }
    fn fingerprint(&self) -> String {
        let v = self.0.config.vault.as_ref();
        super::fingerprint(&[
            &v.map(|v| format!("{:?}", v.spec.auth_part())),
            &v.map(|v| &v.address),
        ])
    }
    fn keeps_outputs_in_memory(&self) -> bool {
        true
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let v = self
            .0
            .config
            .vault
            .as_ref()
            .ok_or_else(|| StepError::permanent("no [vault] section"))?;
        let spec = resolved(&self.0, v.spec.auth_part())?;
        let out = json!({ "changes": converge(&self.0, ctx, &spec).await? });
        if let Some(name) = &v.service_account_key {
            let api = api(&self.0)?;
            let key = castle_vault::generated_value(api.as_ref(), &spec, name, "private_key")
                .await
                .map_err(fail("reading the service-account key"))?
                .ok_or_else(|| {
                    StepError::permanent(format!(
                        "generated keypair `{name}` has no private_key in Vault"
                    ))
                    .on(name.clone())
                })?;
            Ctx::put(&self.0.shared.service_account_key, key);
            ctx.progress("service-account key handed to talos in memory");
        }
        Ok(out)
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        // Auth and keys outlive the cluster (that is their point); --wipe removes the
        // generated material and the Talos bundle kept for rebirths.
        if !self.0.wipe {
            return Ok(());
        }
        let v = self
            .0
            .config
            .vault
            .as_ref()
            .ok_or_else(|| StepError::permanent("no [vault] section"))?;
        let api = api(&self.0)?;
        for g in &v.spec.generated {
            api.delete(&format!("{}/metadata/{}", g.mount, g.path))
                .await
                .map_err(fail("wiping generated values"))?;
            api.delete(&format!("{}/data/{}", g.mount, g.path))
                .await
                .map_err(fail("wiping generated values"))?;
        }
        // The metadata, not only the data: a soft-deleted key keeps its versions, and
        // the next rebirth would find a key it cannot create.
        if let Some((mount, path)) = super::talos::bundle_location(&self.0.config) {
            castle_vault::delete_kv(api.as_ref(), &mount, &path)
                .await
                .map_err(fail("wiping the talos bundle"))?;
        }
        ctx.progress("wiped generated values and the talos bundle");
        Ok(())
    }
}

/// `vault-db`: the database engine, its connection and roles, generate-once passwords.
pub(crate) struct VaultDb(pub(crate) Arc<Ctx>);

#[async_trait]
impl Step for VaultDb {
    fn id(&self) -> &str {
        "vault-db"
    }
    fn deps(&self) -> Vec<String> {
        vec!["secrets".into()]
    }
    fn fingerprint(&self) -> String {
        let v = self.0.config.vault.as_ref();
        super::fingerprint(&[
            &v.map(|v| format!("{:?}", v.spec.database_part())),
            &v.map(|v| &v.address),
        ])
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let v = self
            .0
            .config
            .vault
            .as_ref()
            .ok_or_else(|| StepError::permanent("no [vault] section"))?;
        let part = v.spec.database_part();
        let mut changes = 0;
        // One source of truth: a connection password that names a generated value
        // (`{ vault = ... }`) is that value, read back from Vault after it exists.
        if part.secret_refs().iter().any(|r| r.generated().is_some()) {
            let generated = resolved(&self.0, part.generated_part())?;
            changes += converge(&self.0, ctx, &generated).await?;
            self.0.read_generated(part.secret_refs()).await?;
        }
        let spec = resolved(&self.0, part)?;
        changes += converge(&self.0, ctx, &spec).await?;
        Ok(json!({ "changes": changes }))
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let v = self
            .0
            .config
            .vault
            .as_ref()
            .ok_or_else(|| StepError::permanent("no [vault] section"))?;
        let api = api(&self.0)?;
        let revoked = castle_vault::revoke_leases(api.as_ref(), &v.spec)
            .await
            .map_err(fail("revoking database leases"))?;
        ctx.progress(format!("revoked leases under {}", revoked.join(", ")));
        Ok(())
    }
}
