//! Weir's Rust SDK: the native protocol's wire types and the async client (producer, consumer,
//! admin) that speaks it over QUIC. Without the default `client` feature: the wire types, the
//! batch codec and the partitioner alone.

pub mod batch;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod consumer;
pub mod consumer_protocol;
pub mod error;
#[cfg(feature = "client")]
pub mod group;
pub mod inflate;
pub mod partitioner;
pub mod pool;
#[cfg(feature = "client")]
pub mod producer;
#[cfg(feature = "client")]
pub mod router;
#[cfg(feature = "client")]
mod tls;
pub mod wire;

pub use batch::{Compression, ConsumedRecord, Record};
#[cfg(feature = "client")]
pub use client::{Admin, Client, ClientConfig, TlsTrust};
#[cfg(feature = "client")]
pub use consumer::{Consumer, ConsumerConfig, OffsetReset};
#[cfg(feature = "client")]
pub use error::ClientError;
pub use error::{ErrorCode, WireError};
#[cfg(feature = "client")]
pub use group::{GroupConsumer, GroupConsumerConfig};
#[cfg(feature = "client")]
pub use producer::{BatchDelivery, BatchPart, Delivery, Producer, ProducerConfig};
#[cfg(feature = "client")]
pub use router::Router;
pub use wire::{now_ms, Acks, FlushMode, OffsetSpec, TopicConfig};
