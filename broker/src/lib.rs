//! The Weir broker: partition logs, the controller, consumer groups, the protocol front ends,
//! and the client side of the `weir` command. `main.rs` is only the command line.

pub mod bench;
pub mod cli;
pub mod controller;
pub mod deployments;
pub mod groups;
pub mod idempotence;
pub mod kafka;
pub mod log;
pub mod metadata;
pub mod module_cli;
pub mod plugins;
pub mod quic;
pub mod schema_cli;
pub mod server;
pub mod service;
pub mod tls;
pub mod transforms;
