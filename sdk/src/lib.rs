//! Weir's Rust SDK: the native protocol's wire types and the async client (producer, consumer,
//! admin) that speaks it over QUIC.

pub mod batch;
pub mod client;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
mod tls;
pub mod wire;

pub use batch::{Compression, ConsumedRecord, Record};
pub use client::{Admin, Client, ClientConfig, TlsTrust};
pub use consumer::{Consumer, ConsumerConfig, OffsetReset};
pub use error::{ClientError, ErrorCode, WireError};
pub use group::{GroupConsumer, GroupConsumerConfig};
pub use producer::{Delivery, Producer, ProducerConfig};
pub use wire::{Acks, FlushMode, OffsetSpec, TopicConfig};
