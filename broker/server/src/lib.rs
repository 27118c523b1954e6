//! The Weir broker: the service core and its rules, the protocol front ends (native QUIC and
//! Kafka), the controller (openraft) over the metadata of `weir-meta`, consumer groups, the
//! plugin host and transform tasks, partition logs, and `weir serve`'s start-up. The `weir`
//! command line (client commands, bench) is the `weir-cli` crate.

// Non-test code states why a value fits where it is narrowed, and never unwraps.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::cast_possible_truncation))]

pub mod budget;
pub mod cluster;
pub mod connectors;
pub mod controller;
pub mod groups;
pub mod http;
pub mod kafka;
pub mod plugins;
pub mod quic;
pub mod server;
pub mod service;
pub mod tls;
pub mod transforms;
