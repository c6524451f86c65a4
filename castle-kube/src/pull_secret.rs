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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape kubelet decodes (`pkg/credentialprovider/config.go`): `auths` keyed
    /// by registry; `auth` is base64 of `user:password`, split at the first colon.
    #[test]
    fn the_value_is_the_auths_shape_kubelet_reads() {
        let token = SecretString::from("ghp_canary:with-colon");
        let v: serde_json::Value =
            serde_json::from_str(docker_config_json("ghcr.io", "lab-bot", &token).expose_secret())
                .expect("JSON");
        let entry = &v["auths"]["ghcr.io"];
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
        assert_eq!(entry["username"], "lab-bot");
        assert_eq!(entry["password"], "ghp_canary:with-colon");
        let auth = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str().expect("auth is a string"))
            .expect("base64");
        let decoded = String::from_utf8(auth).expect("UTF-8");
        assert_eq!(
            decoded.split_once(':'),
            Some(("lab-bot", "ghp_canary:with-colon"))
        );
    }
}
