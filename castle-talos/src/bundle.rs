use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE};
use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A certificate (public, PEM) and its key (secret, PEM).
#[derive(Clone)]
pub struct CertKey {
    /// PEM certificate.
    pub crt: String,
    /// PEM private key.
    pub key: SecretString,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("crt", &format!("{} bytes", self.crt.len()))
            .field("key", &"(redacted)")
            .finish()
    }
}

/// The key that encrypts Kubernetes Secrets at rest. talosctl writes secretbox since
/// Talos 1.3; bundles from older releases carry AES-CBC, which Talos still accepts
/// (exactly one of the two: generate/secrets/bundle.go `Validate` at v1.12.11).
#[derive(Clone)]
pub enum EncryptionSecret {
    /// `secretboxEncryptionSecret` (32 bytes, base64).
    Secretbox(SecretString),
    /// `aescbcEncryptionSecret` (32 bytes, base64).
    AesCbc(SecretString),
}

impl EncryptionSecret {
    /// The `cluster` field of the machine config that carries it, and the value.
    pub fn config_field(&self) -> (&'static str, &SecretString) {
        match self {
            Self::Secretbox(s) => ("secretboxEncryptionSecret", s),
            Self::AesCbc(s) => ("aescbcEncryptionSecret", s),
        }
    }
}

impl std::fmt::Debug for EncryptionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Secretbox(_) => "Secretbox(redacted)",
            Self::AesCbc(_) => "AesCbc(redacted)",
        })
    }
}

/// What `talosctl gen secrets` holds: the cluster's identity and every CA.
#[derive(Clone)]
pub struct SecretsBundle {
    /// Cluster id (32 random bytes, URL-safe base64 as talosctl writes it).
    pub cluster_id: String,
    /// Cluster secret (32 random bytes, base64).
    pub cluster_secret: SecretString,
    /// Kubernetes bootstrap token `[0-9a-z]{6}.[0-9a-z]{16}`.
    pub bootstrap_token: SecretString,
    /// trustd token, same format.
    pub trustd_token: SecretString,
    /// The Secrets encryption key.
    pub encryption: EncryptionSecret,
    /// etcd CA (ECDSA P-256).
    pub etcd: CertKey,
    /// Kubernetes CA (ECDSA P-256).
    pub k8s: CertKey,
    /// Front-proxy (aggregator) CA (ECDSA P-256).
    pub aggregator: CertKey,
    /// Talos API CA (Ed25519, O=talos).
    pub os: CertKey,
    /// Service-account signing key (PEM), generated or supplied from Vault.
    pub service_account_key: SecretString,
}

impl std::fmt::Debug for SecretsBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsBundle")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

fn random_b64(n: usize) -> String {
    B64.encode(random_bytes(n))
}

fn token() -> SecretString {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut pick = |n| {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect::<String>()
    };
    SecretString::from(format!("{}.{}", pick(6), pick(16)))
}

fn ca_params(common_name: &str, org: Option<&str>) -> Result<CertificateParams> {
    let mut p =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Pki(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    if !common_name.is_empty() {
        dn.push(DnType::CommonName, common_name);
    }
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

fn new_ca(
    common_name: &str,
    org: Option<&str>,
    alg: &'static rcgen::SignatureAlgorithm,
) -> Result<CertKey> {
    let key = KeyPair::generate_for(alg).map_err(|e| Error::Pki(e.to_string()))?;
    let cert = ca_params(common_name, org)?
        .self_signed(&key)
        .map_err(|e| Error::Pki(e.to_string()))?;
    Ok(CertKey {
        crt: cert.pem(),
        key: SecretString::from(key.serialize_pem()),
    })
}

/// The YAML layout of talosctl's secrets.yaml (certs and keys as base64 of PEM).
#[derive(Serialize, Deserialize)]
struct Layout {
    cluster: LayoutCluster,
    secrets: LayoutSecrets,
    trustdinfo: LayoutTrustd,
    certs: LayoutCerts,
}
#[derive(Serialize, Deserialize)]
struct LayoutCluster {
    id: String,
    secret: String,
}
#[derive(Serialize, Deserialize)]
struct LayoutSecrets {
    bootstraptoken: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secretboxencryptionsecret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aescbcencryptionsecret: Option<String>,
}
#[derive(Serialize, Deserialize)]
struct LayoutTrustd {
    token: String,
}
#[derive(Serialize, Deserialize)]
struct LayoutPair {
    crt: String,
    key: String,
}
#[derive(Serialize, Deserialize)]
struct LayoutKey {
    key: String,
}
#[derive(Serialize, Deserialize)]
struct LayoutCerts {
    etcd: LayoutPair,
    k8s: LayoutPair,
    k8saggregator: LayoutPair,
    k8sserviceaccount: LayoutKey,
    os: LayoutPair,
}

impl SecretsBundle {
    /// A new bundle; `service_account_key` is the PEM key kept in Vault, or `None`
    /// to generate one here.
    ///
    /// # Errors
    /// Key generation failed, or the supplied key is not a PEM private key.
    pub fn generate(service_account_key: Option<SecretString>) -> Result<Self> {
        let sa = match service_account_key {
            Some(k) => {
                KeyPair::from_pem(k.expose_secret())
                    .map_err(|e| Error::Pki(format!("service-account key: {e}")))?;
                k
            }
            None => SecretString::from(
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| Error::Pki(e.to_string()))?
                    .serialize_pem(),
            ),
        };
        Ok(Self {
            cluster_id: URL_SAFE.encode(random_bytes(32)),
            cluster_secret: SecretString::from(random_b64(32)),
            bootstrap_token: token(),
            trustd_token: token(),
            encryption: EncryptionSecret::Secretbox(SecretString::from(random_b64(32))),
            // Subjects as generate/secrets/ca.go (v1.12.11) makes them.
            etcd: new_ca("", Some("etcd"), &rcgen::PKCS_ECDSA_P256_SHA256)?,
            k8s: new_ca("", Some("kubernetes"), &rcgen::PKCS_ECDSA_P256_SHA256)?,
            aggregator: new_ca("front-proxy", None, &rcgen::PKCS_ECDSA_P256_SHA256)?,
            os: new_ca("", Some("talos"), &rcgen::PKCS_ED25519)?,
            service_account_key: sa,
        })
    }

    /// The bundle in talosctl's secrets.yaml layout. The text holds every key:
    /// keep it in memory or Vault, never in a log.
    ///
    /// # Errors
    /// Serialization failed.
    pub fn to_yaml(&self) -> Result<SecretString> {
        let pair = |c: &CertKey| LayoutPair {
            crt: B64.encode(&c.crt),
            key: B64.encode(c.key.expose_secret()),
        };
        let layout = Layout {
            cluster: LayoutCluster {
                id: self.cluster_id.clone(),
                secret: self.cluster_secret.expose_secret().to_string(),
            },
            secrets: LayoutSecrets {
                bootstraptoken: self.bootstrap_token.expose_secret().to_string(),
                secretboxencryptionsecret: match &self.encryption {
                    EncryptionSecret::Secretbox(k) => Some(k.expose_secret().to_string()),
                    EncryptionSecret::AesCbc(_) => None,
                },
                aescbcencryptionsecret: match &self.encryption {
                    EncryptionSecret::AesCbc(k) => Some(k.expose_secret().to_string()),
                    EncryptionSecret::Secretbox(_) => None,
                },
            },
            trustdinfo: LayoutTrustd {
                token: self.trustd_token.expose_secret().to_string(),
            },
            certs: LayoutCerts {
                etcd: pair(&self.etcd),
                k8s: pair(&self.k8s),
                k8saggregator: pair(&self.aggregator),
                k8sserviceaccount: LayoutKey {
                    key: B64.encode(self.service_account_key.expose_secret()),
                },
                os: pair(&self.os),
            },
        };
        serde_saphyr::to_string(&layout)
            .map(SecretString::from)
            .map_err(|e| Error::Config(format!("secrets bundle: {e}")))
    }

    /// Reads a bundle in talosctl's secrets.yaml layout.
    ///
    /// # Errors
    /// The YAML is not a secrets bundle.
    pub fn from_yaml(text: &SecretString) -> Result<Self> {
        let l: Layout = serde_saphyr::from_str(text.expose_secret()).map_err(|_| {
            Error::Config("not a talos secrets bundle (secrets.yaml layout)".into())
        })?;
        let dec = |s: &str| -> Result<String> {
            B64.decode(s)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::Config(
                        "secrets bundle: a certificate or key is not base64 of PEM".into(),
                    )
                })
        };
        let pair = |p: &LayoutPair| -> Result<CertKey> {
            Ok(CertKey {
                crt: dec(&p.crt)?,
                key: SecretString::from(dec(&p.key)?),
            })
        };
        let encryption = match (
            l.secrets.secretboxencryptionsecret,
            l.secrets.aescbcencryptionsecret,
        ) {
            (Some(k), None) => EncryptionSecret::Secretbox(SecretString::from(k)),
            (None, Some(k)) => EncryptionSecret::AesCbc(SecretString::from(k)),
            (None, None) => {
                return Err(Error::Config(
                    "secrets bundle: one of [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is required".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "secrets bundle: only one of [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is allowed".into(),
                ));
            }
        };
        Ok(Self {
            cluster_id: l.cluster.id,
            cluster_secret: SecretString::from(l.cluster.secret),
            bootstrap_token: SecretString::from(l.secrets.bootstraptoken),
            trustd_token: SecretString::from(l.trustdinfo.token),
            encryption,
            etcd: pair(&l.certs.etcd)?,
            k8s: pair(&l.certs.k8s)?,
            aggregator: pair(&l.certs.k8saggregator)?,
            os: pair(&l.certs.os)?,
            service_account_key: SecretString::from(dec(&l.certs.k8sserviceaccount.key)?),
        })
    }

    /// Signs a client certificate for the Talos API with the os CA: Ed25519,
    /// Organization `os:admin`, ExtKeyUsage ClientAuth, valid one year.
    ///
    /// # Errors
    /// The os CA key is unusable.
    pub fn admin_client_cert(&self) -> Result<CertKey> {
        let ca_key = KeyPair::from_pem(self.os.key.expose_secret())
            .map_err(|e| Error::Pki(format!("os CA key: {e}")))?;
        // The issuer comes from the CA certificate itself, so a bundle made by talosctl
        // (whose subject encoding we do not control) signs certificates that chain.
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.os.crt, ca_key)
            .map_err(|e| Error::Pki(format!("os CA certificate: {e}")))?;
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| Error::Pki(e.to_string()))?;
        let mut p =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Pki(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "os:admin");
        p.distinguished_name = dn;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let cert = p
            .signed_by(&key, &issuer)
            .map_err(|e| Error::Pki(e.to_string()))?;
        Ok(CertKey {
            crt: cert.pem(),
            key: SecretString::from(key.serialize_pem()),
        })
    }
}
