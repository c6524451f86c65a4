//! `auth/<jwt mount>/login` for [`crate::MockVault`], as OpenBao's JWT auth method
//! judges a token (openbao `builtin/credential/jwt/path_login.go`, which hands the
//! token to hashicorp/cap `jwt/jwt.go` `Validator.Validate` with the static keys of
//! `jwt/keyset.go`): the signature by one of `jwt_validation_pubkeys`, then `iss`
//! against `bound_issuer`, `sub` against `bound_subject`, `aud` against
//! `bound_audiences` (any one), the time claims with cap's leeways, and finally a
//! token with audiences for a role bound to none is refused. Messages are theirs.
//! Keys are ECDSA P-256 (ES256), the kind Castle generates for a cluster.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};

/// cap's `jwt.DefaultLeeway` for clock skew (go-jose), in seconds.
const CLOCK_SKEW: u64 = 60;

/// The answer of a successful login: the `auth` block, without a client token (the
/// lab presents none afterwards).
pub(crate) fn login(
    config: &Value,
    role_name: &str,
    role: &Value,
    jwt: &str,
    now: u64,
) -> Result<Value, String> {
    let invalid = |m: &str| format!("error validating token: {m}");
    let claims = verified_claims(config, jwt)
        .map_err(|e| invalid(&format!("error verifying token signature: {e}")))?;
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let issuer = text(config, "bound_issuer");
    if !issuer.is_empty() && issuer != text(&claims, "iss") {
        return Err(invalid("invalid issuer (iss) claim"));
    }
    let subject = text(role, "bound_subject");
    if !subject.is_empty() && subject != text(&claims, "sub") {
        return Err(invalid("invalid subject (sub) claim"));
    }
    let strings = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    };
    let bound = strings(role.get("bound_audiences"));
    let audiences = strings(claims.get("aud"));
    if !bound.is_empty() && !bound.iter().any(|b| audiences.contains(b)) {
        return Err(invalid(
            "invalid audience (aud) claim: audience claim does not match any expected audience",
        ));
    }
    let time = |k: &str| claims.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (iat, nbf, exp) = (time("iat"), time("nbf"), time("exp"));
    if iat == 0 && nbf == 0 && exp == 0 {
        return Err(invalid(
            "no issued at (iat), not before (nbf), or expiration time (exp) claims in token",
        ));
    }
    if nbf != 0 && now + CLOCK_SKEW < nbf {
        return Err(invalid(
            "invalid not before (nbf) claim: token not yet valid",
        ));
    }
    if exp != 0 && now.saturating_sub(CLOCK_SKEW) > exp {
        return Err(invalid(
            "invalid expiration time (exp) claim: token is expired",
        ));
    }
    if iat != 0 && now + CLOCK_SKEW < iat {
        return Err(invalid(
            "invalid issued at (iat) claim: token issued in the future",
        ));
    }
    if !audiences.is_empty() && bound.is_empty() {
        return Err("audience claim found in JWT but no audiences bound to the role".into());
    }
    let user_claim = text(role, "user_claim");
    Ok(json!({
        "policies": role.get("token_policies").cloned().unwrap_or(json!([])),
        "token_policies": role.get("token_policies").cloned().unwrap_or(json!([])),
        "metadata": {"role": role_name},
        "lease_duration": role.get("token_ttl").cloned().unwrap_or(json!(0)),
        "display_name": text(&claims, &user_claim),
    }))
}

/// The claims of a compact ES256 JWS that one of the mount's keys signed.
fn verified_claims(config: &Value, jwt: &str) -> Result<Value, String> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("go-jose/go-jose: compact JWS format must have three parts".into());
    };
    let decode = |p: &str| {
        B64URL
            .decode(p.trim_end_matches('='))
            .map_err(|e| e.to_string())
    };
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    let signature = decode(signature)?;
    let signed = format!("{}.{payload}", jwt.split('.').next().unwrap_or_default());
    let verified = header.get("alg").and_then(Value::as_str) == Some("ES256")
        && config
            .get("jwt_validation_pubkeys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(p256_point)
            .any(|point| {
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_FIXED,
                    point,
                )
                .verify(signed.as_bytes(), &signature)
                .is_ok()
            });
    if !verified {
        return Err("no known key successfully validated the token signature".into());
    }
    serde_json::from_slice(&decode(payload)?).map_err(|e| e.to_string())
}

/// The uncompressed point of a P-256 `PUBLIC KEY` PEM (SubjectPublicKeyInfo).
fn p256_point(pem: &str) -> Option<Vec<u8>> {
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    der.strip_prefix(&PREFIX[..]).map(<[u8]>::to_vec)
}
