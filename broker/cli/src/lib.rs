//! The `weir` command line apart from `weir serve`: topic, produce and consume commands, `weir
//! module`, `weir group`, `weir schema`, `weir cluster` and `weir bench`. Clients of a running broker (the Rust SDK over QUIC
//! and the registry's REST API); the broker's internals are out of reach from here.

// Non-test code states why a value fits where it is narrowed, and never unwraps.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::cast_possible_truncation))]

pub mod bench;
pub mod cli;
pub mod cluster_cli;
pub mod connector_cli;
pub mod group_cli;
pub mod module_cli;
pub mod scaffold;
pub mod schema_cli;
