//! Produce and fetch rates per topic, from the service's counters ([`Traffic`]) read at most
//! twice a second and kept for [`WINDOW`]: a rate is the difference between the newest and the
//! oldest reading over the time between them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;
use weir_broker::service::{TopicCounts, Traffic};

/// How far back a rate looks.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Readings closer together than this are not taken.
const READ_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct Rate {
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub fetch_bytes_per_sec: f64,
}

type Reading = (Instant, BTreeMap<String, TopicCounts>);

#[derive(Debug, Default)]
pub struct Rates {
    readings: Mutex<VecDeque<Reading>>,
}

/// The rate between two readings of one topic's counters, `seconds` apart.
pub fn rate(old: &TopicCounts, new: &TopicCounts, seconds: f64) -> Rate {
    if seconds <= 0.0 {
        return Rate::default();
    }
    let per_sec = |new: u64, old: u64| new.saturating_sub(old) as f64 / seconds;
    Rate {
        records_per_sec: per_sec(new.produced_records, old.produced_records),
        bytes_per_sec: per_sec(new.produced_bytes, old.produced_bytes),
        fetch_bytes_per_sec: per_sec(new.fetched_bytes, old.fetched_bytes),
    }
}

impl Rates {
    /// Each topic's rate now (a topic new in the window counts from zero).
    pub fn current(&self, traffic: &Traffic) -> BTreeMap<String, Rate> {
        let now = Instant::now();
        let mut readings = self.readings.lock().expect("rates lock");
        if readings.back().is_none_or(|(at, _)| now.duration_since(*at) >= READ_EVERY) {
            readings.push_back((now, traffic.topics().into_iter().collect()));
        }
        while readings.len() > 2 && readings.front().is_some_and(|(at, _)| now.duration_since(*at) > WINDOW) {
            readings.pop_front();
        }
        let (Some((first_at, first)), Some((last_at, last))) = (readings.front(), readings.back()) else {
            return BTreeMap::new();
        };
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        last.iter()
            .map(|(topic, new)| (topic.clone(), rate(&first.get(topic).copied().unwrap_or_default(), new, seconds)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_counters_difference_over_the_time_between_readings() {
        let old = TopicCounts { produced_records: 100, produced_bytes: 1000, fetched_bytes: 0, ..Default::default() };
        let new = TopicCounts { produced_records: 300, produced_bytes: 5000, fetched_bytes: 800, ..Default::default() };
        assert_eq!(
            rate(&old, &new, 2.0),
            Rate { records_per_sec: 100.0, bytes_per_sec: 2000.0, fetch_bytes_per_sec: 400.0 }
        );
        assert_eq!(rate(&old, &new, 0.0), Rate::default());
        // Counters of a topic made again start lower: never a negative rate.
        assert_eq!(rate(&new, &old, 1.0), Rate::default());
    }
}
