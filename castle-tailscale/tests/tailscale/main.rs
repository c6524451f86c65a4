//! castle-tailscale: the real client against wiremock (bodies checked against the
//! OpenAPI description), the mock control plane's rules, and the step's operations.

#![allow(clippy::unwrap_used)]

mod client;
mod mock;
mod ops;
mod preflight;
mod spec;

use castle_tailscale::KeyRequest;

/// The rebirth's key policy.
pub fn policy() -> KeyRequest {
    KeyRequest {
        reusable: true,
        ephemeral: true,
        preauthorized: true,
        tags: vec!["tag:lab-k8s".into()],
        expiry_seconds: 3600,
        description: "castle rebirth of lab".into(),
    }
}
