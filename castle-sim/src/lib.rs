#![doc = include_str!("../README.md")]
//!
//! What every Castle simulator shares: seeded fault injection ([`FaultInjector`],
//! set up by [`Faults`]) and modelled time ([`Scale`]).
//!
//! Each mock keeps its own latency model (which operations take how long differs per
//! system) and turns a drawn [`Fault`] into the error its real system answers; the
//! drawing and the sleeping are done here, once.

#![warn(missing_docs)]

mod fault;
mod scale;

pub use fault::{Fault, FaultInjector, Faults, UnknownOp, check_op};
pub use scale::Scale;
