//! Image pull secrets: the `.dockerconfigjson` key of a `kubernetes.io/dockerconfigjson`
//! Secret, as kubelet reads it.

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};

/// The value of `.dockerconfigjson` for one registry:
/// `{"auths":{"<registry>":{"username":..,"password":..,"auth":base64("user:password")}}}`.
///
/// kubelet reads this shape (`pkg/credentialprovider/config.go`: `DockerConfigJSON`
/// holds `auths`, each `DockerConfigEntry` `username`, `password` and `auth`); when
/// `auth` is present it wins and is split at its first colon into user and password,
/// so both are written and agree.
pub fn docker_config_json(registry: &str, username: &str, password: &SecretString) -> SecretString {
    let secret = password.expose_secret();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"));
    let value = serde_json::json!({
        "auths": {
            registry: { "username": username, "password": secret, "auth": auth }
        }
    });
    SecretString::from(value.to_string())
}
