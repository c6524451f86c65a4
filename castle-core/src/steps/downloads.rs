//! The `downloads` step: every component manifest pinned by `url` and `sha256`
//! (Flux's release manifest first among them) is fetched once into
//! `<cluster dir>/.castle/downloads/<sha256>.yaml` and checked, before anything is
//! created; the install steps read that copy. A download that fails, or whose digest
//! is not the pin, stops the rebirth before a VM exists.

use std::sync::Arc;

use async_trait::async_trait;
use castle_kube::Bundle;
use serde_json::{Value, json};

use super::Ctx;
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

pub(crate) struct Downloads(pub(crate) Arc<Ctx>);

/// The pinned manifest at `url`: the kept copy, else downloaded (and kept).
pub(crate) async fn fetch(ctx: &Ctx, url: &str, sha256: &str) -> Result<Bundle, StepError> {
    let dir = ctx.config.downloads_dir();
    if let Some(b) = Bundle::cached(url, sha256, &dir) {
        return Ok(b);
    }
    #[cfg(feature = "client")]
    {
        Bundle::fetch(url, sha256, &dir)
            .await
            .map_err(super::fail(format!("downloading {url}")))
    }
    #[cfg(not(feature = "client"))]
    {
        Err(StepError::permanent(format!(
            "{url} is not kept in {}, and this build has no HTTP client (feature `client`)",
            dir.display()
        )))
    }
}

#[async_trait]
impl Step for Downloads {
    fn id(&self) -> &str {
        "downloads"
    }
    fn deps(&self) -> Vec<String> {
        vec![]
    }
    fn fingerprint(&self) -> String {
        super::fingerprint(&[&self.0.config.downloads()])
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let mut kept = Vec::new();
        for (name, url, sha256) in self.0.config.downloads() {
            let b = ctx
                .guard(async {
                    fetch(&self.0, url, sha256)
                        .await
                        .map_err(|e| e.context(format!("components.{name}")))
                })
                .await?;
            ctx.progress(format!(
                "components.{name}: {url} matches its sha256 ({} objects)",
                b.objects.len()
            ));
            kept.push(json!({"component": name, "url": url, "sha256": b.sha256, "objects": b.objects.len()}));
        }
        Ok(json!({ "downloads": kept }))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
