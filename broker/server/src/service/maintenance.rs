//! Background work the server runs on a timer: retention, idle producer expiry, the flush
//! interval.

use std::time::Duration;

use weir_sdk::{FlushMode, WireError};

use weir_storage::log::ProducerFilter;

use super::Broker;

impl Broker {
    /// One retention pass over every topic, then the segment files no batch is left in
    /// (retention, DeleteRecords, truncations and deleted topics free them).
    pub fn enforce_retention(&self, now_ms: i64) {
        for topic in self.topics() {
            if topic.config.retention_ms.is_none() && topic.config.retention_bytes.is_none() {
                continue;
            }
            for p in 0..topic.partitions {
                let Ok(state) = self.partition(&topic, p) else { continue };
                if let Err(e) =
                    self.log.enforce_retention(&state, topic.config.retention_ms, topic.config.retention_bytes, now_ms)
                {
                    tracing::error!(topic = %topic.name, partition = p, error = %e, "retention pass failed");
                }
            }
        }
        if let Err(e) = self.log.collect_segments() {
            tracing::error!(error = %e, "deleting unused segment files failed");
        }
    }

    /// Drops the sequence state of idempotent producers idle past the expiration.
    pub async fn expire_producers(&self, now_ms: i64) -> Result<usize, WireError> {
        let expiration_ms = i64::try_from(self.config.producer_id_expiration_ms).unwrap_or(i64::MAX);
        self.log.forget_producers(ProducerFilter::IdleAt { now_ms, expiration_ms }).await
    }

    /// The shortest flush interval among topics that flush on an interval.
    pub fn flush_interval(&self) -> Option<Duration> {
        self.topics()
            .iter()
            .filter_map(|t| match t.config.flush {
                FlushMode::IntervalMs(ms) => Some(Duration::from_millis(ms)),
                FlushMode::Always => None,
            })
            .min()
    }
}
