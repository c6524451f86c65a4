#![doc = include_str!("../README.md")]
//!
//! Castle's engine: it rebuilds an ephemeral Talos/Kubernetes cluster on Proxmox from
//! nothing, as one dependency graph, and razes it again.
//!
//! The pieces, each a module: [`config`] (castle.toml and its validation),
//! [`secrets`] (secret references resolved to `SecretString`), [`engine`] (the step
//! graph and its executor), [`journal`] (what is done, for `--resume`), [`events`]
//! (the typed event stream), [`report`] (timings and the critical path), [`state`]
//! (where the journal and the cluster lock live: files, or Vault).

#![warn(missing_docs)]

pub mod backends;
pub mod castle;
mod classify;
pub mod config;
pub mod engine;
pub mod error;
pub mod events;
pub mod git;
pub mod journal;
#[cfg(feature = "lab")]
pub mod lab;
pub mod report;
pub mod retry;
pub mod run;
pub mod secrets;
pub mod state;
mod steps;

pub use error::{Classify, Error, ErrorKind, Result, StepError};
