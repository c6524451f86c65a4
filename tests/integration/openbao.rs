//! The lab's Proxmox, Talos, tailnet and cluster with a real OpenBao as its Vault
//! (started by scripts/services.sh; the test command exports VAULT_ADDR and
//! VAULT_TOKEN): `destroy --wipe` and then `create` again.

use std::path::PathBuf;
use std::sync::Arc;

use castle_core::StepError;
use castle_core::backends::Backends;
use castle_core::castle::{Castle, RunOptions};
use castle_core::lab::{Lab, LabBackends};
use castle_tests::lab_copy;
use secrecy::SecretString;

/// Every backend from the lab but Vault, which is the real server.
#[derive(Debug)]
struct WithOpenBao(LabBackends, String, SecretString);

impl Backends for WithOpenBao {
    fn proxmox(
        &self,
        p: &castle_core::config::Proxmox,
        token: &SecretString,
        ca: Option<PathBuf>,
    ) -> Result<Arc<dyn castle_proxmox::ProxmoxApi>, StepError> {
        self.0.proxmox(p, token, ca)
    }
    fn talos(&self, tc: &SecretString) -> Result<Arc<dyn castle_talos::TalosApi>, StepError> {
        self.0.talos(tc)
    }
    fn vault(
        &self,
        _address: &str,
        _ca: Option<PathBuf>,
        _token: &SecretString,
    ) -> Result<Arc<dyn castle_vault::VaultApi>, StepError> {
        let client = castle_vault::VaultClient::new(castle_vault::VaultSettings::new(
            &self.1,
            self.2.clone(),
        ))
        .map_err(|e| StepError::permanent(e.to_string()))?;
        Ok(Arc::new(client))
    }
    fn tailscale(
        &self,
        tailnet: &str,
        id: &SecretString,
        secret: &SecretString,
    ) -> Result<Arc<dyn castle_tailscale::TailscaleApi>, StepError> {
        self.0.tailscale(tailnet, id, secret)
    }
    fn cluster(&self, kc: &SecretString) -> Result<Arc<dyn castle_kube::ClusterApi>, StepError> {
        self.0.cluster(kc)
    }
}

pub(crate) fn openbao() -> Option<(String, SecretString)> {
    match (std::env::var("VAULT_ADDR"), std::env::var("VAULT_TOKEN")) {
        (Ok(a), Ok(t)) => Some((a, SecretString::from(t))),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but VAULT_ADDR/VAULT_TOKEN are not: scripts/test.sh starts OpenBao"
            );
            eprintln!(
                "SKIPPED: no OpenBao (run scripts/services.sh and source target/services.env)"
            );
            None
        }
    }
}

/// `destroy --wipe`, then `create`, against a real OpenBao: the Talos bundle's KV
/// metadata goes with the wipe, and the next rebirth stores a fresh one.
// A real server needs the real clock: the lab runs fast instead of paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_wipe_then_create_against_openbao() {
    let Some((addr, token)) = openbao() else {
        return;
    };
    // Its own cluster name, so runs against one server do not share KV paths.
    let name = format!(
        "lab{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 0x00ff_ffff
    );
    let (_dir, path) = lab_copy(|t| {
        t.replace("time_scale = 0.02", "time_scale = 0.002")
            .replacen("name = \"lab\"", &format!("name = \"{name}\""), 1)
            .replace("castle/lab/", &format!("castle/{name}/"))
    });
    let config = castle_core::config::Config::load(&path).unwrap();
    let lab = Lab::open(Arc::new(config.clone())).unwrap();
    // The cluster's External Secrets logs in to the same real OpenBao.
    lab.set_eso_vault(Arc::new(
        castle_vault::VaultClient::new(castle_vault::VaultSettings::new(&addr, token.clone()))
            .unwrap(),
    ));
    let world = Arc::clone(&lab);
    let castle = Castle::with_backends(
        config,
        Arc::new(WithOpenBao(LabBackends(lab), addr.clone(), token.clone())),
    );
    let vault =
        castle_vault::VaultClient::new(castle_vault::VaultSettings::new(&addr, token)).unwrap();
    let bundle = format!("secret/metadata/castle/{name}/talos-secrets");
    for round in 0..2 {
        let created = castle.create(RunOptions::default()).await.unwrap();
        assert!(
            created.error.is_none(),
            "round {round}: {:?}",
            created.error.map(|e| e.to_string())
        );
        assert!(
            castle_vault::VaultApi::read(&vault, &bundle)
                .await
                .unwrap()
                .is_some(),
            "round {round}: the bundle is kept in OpenBao"
        );
        // ESO logged in to the real OpenBao with the JWT role Castle configured there.
        let store = castle_kube::ClusterApi::get(
            &world.cluster,
            &castle_kube::ObjectRef::new(
                "external-secrets.io/v1",
                "ClusterSecretStore",
                None,
                "lab-vault",
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            store["status"]["conditions"][0]["reason"], "Valid",
            "round {round}: {store}"
        );
        let wiped = castle.destroy(RunOptions::default(), true).await.unwrap();
        assert!(
            wiped.error.is_none(),
            "round {round}: {:?}",
            wiped.error.map(|e| e.to_string())
        );
        assert!(
            castle_vault::VaultApi::read(&vault, &bundle)
                .await
                .unwrap()
                .is_none(),
            "round {round}: wipe deleted the bundle's metadata"
        );
    }
}
