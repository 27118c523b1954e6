//! The `weir` command line apart from `weir serve`: topic, produce and consume commands, `weir
//! module`, `weir schema` and `weir bench`. Clients of a running broker (the Rust SDK over QUIC
//! and the registry's REST API); the broker's internals are out of reach from here.

pub mod bench;
pub mod cli;
pub mod module_cli;
pub mod schema_cli;
