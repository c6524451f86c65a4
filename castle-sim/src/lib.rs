//! What every Castle simulator shares: seeded fault injection ([`FaultInjector`],
//! set up by [`Faults`]) and modelled time ([`Scale`]).
//!
//! Each mock keeps its own latency model (which operations take how long differs per
//! system) and turns a drawn [`Fault`] into the error its real system answers; the
//! drawing and the sleeping are done here, once.
//!
//! ```
//! use castle_sim::{Fault, FaultInjector, Faults, Scale};
//!
//! # async fn call() -> Result<(), String> {
//! let mut faults: FaultInjector = FaultInjector::default();
//! faults.set(Faults::transient(7, 0.1));
//! faults.fail_permanently("delete", "permission denied".to_string());
//! Scale::INSTANT.sleep(0.05).await;
//! match faults.draw(["delete"]) {
//!     Some(Fault::Permanent(message)) => Err(format!("403 {message}")),
//!     Some(Fault::Transient) => Err("503 Service Unavailable".into()),
//!     None => Ok(()),
//! }
//! # }
//! ```

#![warn(missing_docs)]

mod fault;
mod scale;

pub use fault::{Fault, FaultInjector, Faults, UnknownOp, check_op};
pub use scale::Scale;
