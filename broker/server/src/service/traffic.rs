//! What the service has carried, for `/metrics` and the console's rates: per topic, records
//! and bytes produced and fetched and the time requests took; per error code, the requests
//! refused with it. Counters only grow; rates are their differences over time, taken by the
//! reader. A topic's entry is made when it first carries traffic and dropped with the topic,
//! so entries are bounded by the topics that exist.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use weir_sdk::ErrorCode;

#[derive(Debug, Default)]
pub struct TopicTraffic {
    pub produced_records: AtomicU64,
    pub produced_bytes: AtomicU64,
    /// Partition appends answered, and the microseconds they took (queue, store, replicas).
    pub produce_requests: AtomicU64,
    pub produce_micros: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub fetch_micros: AtomicU64,
}

/// A topic's counters as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicCounts {
    pub produced_records: u64,
    pub produced_bytes: u64,
    pub produce_requests: u64,
    pub produce_micros: u64,
    pub fetched_bytes: u64,
    pub fetch_requests: u64,
    pub fetch_micros: u64,
}

/// Error codes are small numbers (`ErrorCode`, never reused); codes past this are counted as
/// the last slot.
const ERROR_SLOTS: usize = 64;

#[derive(Debug)]
pub struct Traffic {
    topics: DashMap<Arc<str>, Arc<TopicTraffic>>,
    errors: [AtomicU64; ERROR_SLOTS],
}

impl Default for Traffic {
    fn default() -> Self {
        Self { topics: DashMap::new(), errors: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Traffic {
    fn topic(&self, name: &str) -> Arc<TopicTraffic> {
        if let Some(t) = self.topics.get(name) {
            return t.clone();
        }
        self.topics.entry(Arc::from(name)).or_default().clone()
    }

    pub fn produced(&self, topic: &str, records: u64, bytes: u64, took: Duration) {
        let t = self.topic(topic);
        t.produced_records.fetch_add(records, Ordering::Relaxed);
        t.produced_bytes.fetch_add(bytes, Ordering::Relaxed);
        t.produce_requests.fetch_add(1, Ordering::Relaxed);
        t.produce_micros.fetch_add(micros(took), Ordering::Relaxed);
    }

    pub fn fetched(&self, topic: &str, bytes: u64, took: Duration) {
        let t = self.topic(topic);
        t.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
        t.fetch_requests.fetch_add(1, Ordering::Relaxed);
        t.fetch_micros.fetch_add(micros(took), Ordering::Relaxed);
    }

    pub fn refused(&self, code: ErrorCode) {
        let slot = usize::from(u16::from(code)).min(ERROR_SLOTS - 1);
        self.errors[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the counters of a topic that no longer exists.
    pub fn forget(&self, topic: &str) {
        self.topics.remove(topic);
    }

    /// Drops the counters of topics `exists` says are gone: a fetch answered just as its
    /// topic was deleted can count after [`Traffic::forget`] ran.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.topics.retain(|name, _| exists(name));
    }

    /// Every topic's counters, by name.
    pub fn topics(&self) -> Vec<(String, TopicCounts)> {
        let mut out: Vec<(String, TopicCounts)> = self
            .topics
            .iter()
            .map(|e| {
                let t = e.value();
                let counts = TopicCounts {
                    produced_records: t.produced_records.load(Ordering::Relaxed),
                    produced_bytes: t.produced_bytes.load(Ordering::Relaxed),
                    produce_requests: t.produce_requests.load(Ordering::Relaxed),
                    produce_micros: t.produce_micros.load(Ordering::Relaxed),
                    fetched_bytes: t.fetched_bytes.load(Ordering::Relaxed),
                    fetch_requests: t.fetch_requests.load(Ordering::Relaxed),
                    fetch_micros: t.fetch_micros.load(Ordering::Relaxed),
                };
                (e.key().to_string(), counts)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Requests refused, by error code (codes with none left out).
    pub fn errors(&self) -> Vec<(ErrorCode, u64)> {
        self.errors
            .iter()
            .enumerate()
            .filter_map(|(slot, n)| {
                let n = n.load(Ordering::Relaxed);
                let code = ErrorCode::try_from(u16::try_from(slot).ok()?).ok()?;
                (n > 0).then_some((code, n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_topic_and_a_forgotten_topic_leaves_no_entry() {
        let traffic = Traffic::default();
        traffic.produced("a", 10, 1000, Duration::from_millis(2));
        traffic.produced("a", 5, 500, Duration::from_millis(1));
        traffic.fetched("b", 300, Duration::from_micros(50));
        traffic.refused(ErrorCode::UnknownTopic);
        traffic.refused(ErrorCode::UnknownTopic);
        traffic.refused(ErrorCode::MessageTooLarge);
        let topics = traffic.topics();
        assert_eq!(topics.len(), 2);
        assert_eq!(
            topics[0],
            (
                "a".to_owned(),
                TopicCounts {
                    produced_records: 15,
                    produced_bytes: 1500,
                    produce_requests: 2,
                    produce_micros: 3000,
                    ..TopicCounts::default()
                }
            )
        );
        assert_eq!(topics[1].1.fetched_bytes, 300);
        assert_eq!(traffic.errors(), vec![(ErrorCode::UnknownTopic, 2), (ErrorCode::MessageTooLarge, 1)]);
        traffic.forget("a");
        assert_eq!(traffic.topics().len(), 1);
        traffic.produced("c", 1, 1, Duration::ZERO);
        traffic.retain(|name| name == "c");
        assert_eq!(traffic.topics().iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["c"]);
    }
}
