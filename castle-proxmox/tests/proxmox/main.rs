//! castle-proxmox: the HTTP client against wiremock (every request checked against
//! the PVE API schema), the mock's rules, the platform operations, task waiting.

// A test that meets the unexpected should stop right there.
#![allow(clippy::unwrap_used)]

mod client;
mod mock_rules;
mod older_server;
mod ops;
mod preflight;
mod probes;
mod schema;
mod wait;
