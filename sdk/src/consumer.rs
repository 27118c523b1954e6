//! The consumer: assigned partitions, a position per partition, long-polling fetches.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::batch::{decode_batches, split_batches, ConsumedRecord};
use crate::client::{Admin, Client};
use crate::error::{ClientError, ErrorCode};
use crate::wire::{FetchPartition, FetchRequest, FetchResponse, FrameKind, OffsetSpec};

/// What to do when the position is outside the log (deleted by retention, or past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Return the OffsetOutOfRange error to the caller.
    Fail,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub fetch_max_bytes: u32,
    pub partition_max_bytes: u32,
    pub offset_reset: OffsetReset,
    /// A transform deployment the broker runs over what this consumer reads (a consume-time
    /// filter or map); `None` reads records as stored.
    pub module: Option<String>,
    /// Read from the connected broker's replica of each partition where it holds one (up to
    /// its high watermark, which may trail the leader's) rather than from the leader.
    pub read_replica: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            fetch_max_bytes: 8 * 1024 * 1024,
            partition_max_bytes: 2 * 1024 * 1024,
            offset_reset: OffsetReset::Latest,
            module: None,
            read_replica: false,
        }
    }
}

pub struct Consumer {
    client: Client,
    admin: Admin,
    config: ConsumerConfig,
    positions: BTreeMap<(String, u32), i64>,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self { admin: Admin::new(client.clone()), client, config, positions: BTreeMap::new() }
    }

    /// Assigns every partition of `topic`, each starting at `start`.
    pub async fn assign_topic(&mut self, topic: &str, start: OffsetSpec) -> Result<(), ClientError> {
        let partitions = self.admin.describe_topic(topic).await?.partitions.iter().map(|p| p.partition).collect();
        self.assign(topic, partitions, start).await
    }

    /// Adds partitions of `topic` to the assignment, each starting at `start`.
    pub async fn assign(&mut self, topic: &str, partitions: Vec<u32>, start: OffsetSpec) -> Result<(), ClientError> {
        for p in self.admin.list_offsets(topic, partitions, start).await? {
            if let Some(e) = p.error {
                return Err(e.into());
            }
            let offset =
                if p.offset < 0 { self.resolve(topic, p.partition, OffsetSpec::Latest).await? } else { p.offset };
            self.positions.insert((topic.to_owned(), p.partition), offset);
        }
        Ok(())
    }

    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) {
        self.positions.insert((topic.to_owned(), partition), offset);
    }

    /// The offset of the next record `poll` returns for the partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.positions.get(&(topic.to_owned(), partition)).copied()
    }

    pub fn assignment(&self) -> impl Iterator<Item = (&str, u32, i64)> {
        self.positions.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    async fn resolve(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<i64, ClientError> {
        let answer = self.admin.list_offsets(topic, vec![partition], spec).await?;
        let p = answer
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Invalid("list offsets answered no partition".into()))?;
        match p.error {
            Some(e) => Err(e.into()),
            None => Ok(p.offset),
        }
    }

    /// Fetches from every assigned partition, waiting up to `max_wait` for data. Returns the
    /// records in offset order within each partition and moves the positions past them.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        let (records, _) = self.poll_with_high_watermarks(max_wait).await?;
        Ok(records)
    }

    /// As [`Consumer::poll`], also returning each partition's high watermark, so a caller can
    /// tell when it has reached the end of the log.
    pub async fn poll_with_high_watermarks(
        &mut self,
        max_wait: Duration,
    ) -> Result<(Vec<ConsumedRecord>, BTreeMap<(String, u32), i64>), ClientError> {
        if self.positions.is_empty() {
            return Err(ClientError::Invalid("the consumer has no assigned partitions".into()));
        }
        let request = FetchRequest {
            max_wait_ms: max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
            min_bytes: 1,
            max_bytes: self.config.fetch_max_bytes,
            partitions: self
                .positions
                .iter()
                .map(|((topic, partition), offset)| FetchPartition {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    max_bytes: self.config.partition_max_bytes,
                    module: self.config.module.clone(),
                })
                .collect(),
            replica_reads: self.config.read_replica,
        };
        let (response, mut payload): (FetchResponse, Bytes) =
            self.client.call(FrameKind::Fetch, &request, Bytes::new()).await?;
        let mut records = Vec::new();
        let mut high_watermarks = BTreeMap::new();
        for p in response.partitions {
            let len = (p.bytes as usize).min(payload.len());
            let bytes = payload.split_to(len);
            let key = (p.topic.clone(), p.partition);
            high_watermarks.insert(key.clone(), p.high_watermark);
            if let Some(e) = p.error {
                if e.code == ErrorCode::OffsetOutOfRange && self.config.offset_reset != OffsetReset::Fail {
                    let spec = if self.config.offset_reset == OffsetReset::Earliest {
                        OffsetSpec::Earliest
                    } else {
                        OffsetSpec::Latest
                    };
                    let offset = self.resolve(&p.topic, p.partition, spec).await?;
                    tracing::info!(topic = %p.topic, partition = p.partition, offset, "position out of range, reset");
                    self.positions.insert(key, offset);
                    continue;
                }
                return Err(e.into());
            }
            let Some(position) = self.positions.get(&key).copied() else { continue };
            let next = split_batches(&bytes)?.last().map(|(h, _)| h.last_offset() + 1).max(p.next_offset);
            records.extend(decode_batches(&p.topic, p.partition, bytes, position)?);
            if let Some(next) = next {
                self.positions.insert(key, next.max(position));
            }
        }
        Ok((records, high_watermarks))
    }
}
