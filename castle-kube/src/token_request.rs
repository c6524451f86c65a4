//! TokenRequest for [`crate::MockCluster`]: service-account tokens as kube-apiserver
//! signs them with `--service-account-signing-key-file` (an ECDSA P-256 key here, as
//! Castle generates it): a compact JWS, `alg` ES256, `kid` the base64url SHA-256 of
//! the public key's DER (kubernetes `pkg/serviceaccount/jwt.go`, `keyIDFromPublicKey`),
//! claims as `pkg/serviceaccount/claims.go` makes them (`iss`, `sub`
//! `system:serviceaccount:<namespace>:<name>`, `aud`, `iat`, `nbf`, `exp`, `jti` and
//! `kubernetes.io`), audiences defaulting to the API server's (its issuer, when
//! `--api-audiences` is not set).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The API server's signer: the private key (PKCS#8 PEM) and the issuer.
pub(crate) struct Signer {
    key: SecretString,
    pub(crate) issuer: String,
}

impl Signer {
    /// A signer, once the key is known to be a P-256 PKCS#8 key.
    ///
    /// # Errors
    /// What is wrong with the key (never the key).
    pub(crate) fn new(key_pem: &SecretString, issuer: &str) -> Result<Self, String> {
        key_pair(key_pem)?;
        Ok(Self {
            key: key_pem.clone(),
            issuer: issuer.to_string(),
        })
    }

    /// A token for `namespace/name`, valid `seconds` from `now` (Unix seconds).
    pub(crate) fn token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        now: u64,
        seconds: u64,
    ) -> Result<SecretString, String> {
        let pair = key_pair(&self.key)?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let kid = B64URL.encode(Sha256::digest(&spki));
        let audiences = if audiences.is_empty() {
            vec![self.issuer.clone()]
        } else {
            audiences.to_vec()
        };
        let header = json!({"alg": "ES256", "kid": kid});
        let claims = json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": hex::encode(&Sha256::digest(format!("{namespace}/{name}/{now}"))[..16]),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": hex::encode(&Sha256::digest(format!("{namespace}/{name}"))[..16])}},
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = pair
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "signing the token failed".to_string())?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            B64URL.encode(signature.as_ref())
        )))
    }
}

fn key_pair(pem: &SecretString) -> Result<EcdsaKeyPair, String> {
    let body: String = pem
        .expose_secret()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| "the service-account key is not PEM".to_string())?;
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|e| format!("the service-account key is not an ECDSA P-256 PKCS#8 key: {e}"))
}
