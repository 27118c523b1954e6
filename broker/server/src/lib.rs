//! The Weir broker: the service core and its rules, the protocol front ends (native QUIC and
//! Kafka), the controller (openraft) over the metadata of `weir-meta`, consumer groups, the
//! plugin host and transform tasks, partition logs, and `weir serve`'s start-up. The `weir`
//! command line (client commands, bench) is the `weir-cli` crate.

pub mod controller;
pub mod groups;
pub mod kafka;
pub mod plugins;
pub mod quic;
pub mod server;
pub mod service;
pub mod tls;
pub mod transforms;
