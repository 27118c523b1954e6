//! Idempotent producers: the rules for a batch's producer id, epoch and sequence numbers.
//!
//! Pure: the log writer looks up the producer's state for the partition, asks [`check`] what to
//! do with a batch, and after appending stores [`ProducerState::record`]'s result in the same
//! write batch as the records, so the state survives restart exactly when the records do.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use weir_sdk::{ErrorCode, WireError};

/// How many recent batches per producer and partition are remembered for duplicate detection
/// (Kafka keeps five, matching its max in-flight requests for idempotent producers).
pub const RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: i16,
    pub last_sequence: i32,
    /// (first sequence, last sequence, base offset) of the newest batches.
    pub recent: VecDeque<(i32, i32, i64)>,
    /// Wall-clock time of the producer's newest append to the partition; states idle longer
    /// than the producer id expiration are dropped (Kafka's `producer.id.expiration.ms`).
    #[serde(default)]
    pub last_append_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// The batch was appended before; answer with the offset it got then.
    Duplicate {
        base_offset: i64,
    },
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// Decides what to do with a batch of an idempotent producer.
pub fn check(state: Option<&ProducerState>, epoch: i16, first: i32, last: i32) -> Result<Verdict, WireError> {
    let Some(state) = state else { return Ok(Verdict::Append) };
    if epoch < state.epoch {
        return Err(WireError::new(
            ErrorCode::InvalidProducerEpoch,
            format!("producer epoch {epoch} is older than the current epoch {}", state.epoch),
        ));
    }
    if epoch > state.epoch {
        return Ok(Verdict::Append); // a new epoch starts its sequences afresh
    }
    if let Some(&(_, _, base_offset)) = state.recent.iter().find(|(f, l, _)| *f == first && *l == last) {
        return Ok(Verdict::Duplicate { base_offset });
    }
    let expected = next_sequence(state.last_sequence);
    if first != expected {
        return Err(WireError::new(
            ErrorCode::OutOfOrderSequence,
            format!("batch starts at sequence {first} but the next expected sequence is {expected}"),
        ));
    }
    Ok(Verdict::Append)
}

impl ProducerState {
    /// The state after appending a batch at `base_offset`, at `now_ms`.
    pub fn record(
        previous: Option<&ProducerState>,
        epoch: i16,
        first: i32,
        last: i32,
        base_offset: i64,
        now_ms: i64,
    ) -> Self {
        let mut state = match previous {
            Some(p) if p.epoch == epoch => p.clone(),
            _ => ProducerState { epoch, ..ProducerState::default() },
        };
        state.last_sequence = last;
        state.last_append_ms = now_ms;
        state.recent.push_back((first, last, base_offset));
        while state.recent.len() > RECENT_BATCHES {
            state.recent.pop_front();
        }
        state
    }

    /// Whether the producer has been idle for longer than `expiration_ms` at `now_ms`.
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_append_ms) > expiration_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_case(
        state: Option<&ProducerState>,
        epoch: i16,
        first: i32,
        last: i32,
        expected: Result<Verdict, ErrorCode>,
    ) {
        assert_eq!(
            check(state, epoch, first, last).map_err(|e| e.code),
            expected,
            "epoch {epoch} seq {first}..={last}"
        );
    }

    #[test]
    fn sequence_rules() {
        check_case(None, 0, 0, 4, Ok(Verdict::Append));
        let s = ProducerState::record(None, 0, 0, 4, 100, 0);
        check_case(Some(&s), 0, 5, 9, Ok(Verdict::Append));
        check_case(Some(&s), 0, 0, 4, Ok(Verdict::Duplicate { base_offset: 100 }));
        check_case(Some(&s), 0, 7, 9, Err(ErrorCode::OutOfOrderSequence));
        check_case(Some(&s), 0, 3, 4, Err(ErrorCode::OutOfOrderSequence));
        check_case(Some(&s), 1, 0, 0, Ok(Verdict::Append));
        let s2 = ProducerState::record(Some(&s), 1, 0, 0, 200, 0);
        check_case(Some(&s2), 0, 5, 9, Err(ErrorCode::InvalidProducerEpoch));
        let mut s3 = s.clone();
        for i in 1..=6 {
            s3 = ProducerState::record(Some(&s3), 0, i * 5, i * 5 + 4, 100 + i as i64 * 5, 0);
        }
        assert_eq!(s3.recent.len(), RECENT_BATCHES);
        check_case(Some(&s3), 0, 0, 4, Err(ErrorCode::OutOfOrderSequence));
        check_case(Some(&s3), 0, 30, 34, Ok(Verdict::Duplicate { base_offset: 130 }));
        let wrap = ProducerState { epoch: 0, last_sequence: i32::MAX, recent: VecDeque::new(), last_append_ms: 0 };
        check_case(Some(&wrap), 0, 0, 3, Ok(Verdict::Append));
    }

    #[test]
    fn idle_producers_expire() {
        let s = ProducerState::record(None, 0, 0, 4, 100, 1_000);
        assert!(!s.expired(1_000, 10));
        assert!(!s.expired(1_010, 10), "exactly the expiration is not past it");
        assert!(s.expired(1_011, 10));
        let again = ProducerState::record(Some(&s), 0, 5, 9, 105, 5_000);
        assert!(!again.expired(5_005, 10), "an append renews the producer");
    }
}
