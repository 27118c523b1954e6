//! The cluster metadata: what the controller's Raft log replicates and its state machine
//! applies. Pure: no I/O, no clock, no configuration read while applying, so replaying the
//! same log always rebuilds the same state. No dependency on the Wasm runtime, the network
//! or storage (the crate's dependencies are the arrows that keep it so).

// Non-test code states why a value fits where it is narrowed, and never unwraps.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::cast_possible_truncation))]

pub mod deployments;
pub mod metadata;
pub mod offsets;
pub mod replication;
pub mod topic;
