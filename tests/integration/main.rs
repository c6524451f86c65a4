//! The one integration-test binary: whole rebirths against the lab.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod answers;
mod audit;
mod charts;
mod faults;
mod lab;
mod openbao;
mod plan;
mod shared_state;
mod talos;
