//! Consumer groups' committed offsets, kept in the controller's replicated state so a group's
//! coordinator can move to any broker and find them there (Kafka keeps them in the replicated
//! `__consumer_offsets` topic). Pure: the rules of commits, deletions and a topic's removal.
//! The broker's group coordinator checks members and generations before it proposes a commit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_sdk::{ErrorCode, WireError};

use crate::topic::Topic;

/// Bytes of one committed offset's metadata (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// Partitions one commit or deletion may name. Each is one controller log entry, which every
/// voter stores, sends and keeps until a snapshot: a Kafka request may be 100 MiB, a message
/// between brokers at most 64 MiB, so a client's request must not become an entry that size.
pub const CHANGE_PARTITIONS_MAX: usize = 10_000;

/// Metadata bytes of all the offsets of one commit together (10,000 offsets of 4 KiB each
/// would make a 40 MiB entry).
pub const COMMIT_METADATA_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub metadata: Option<String>,
    /// When it was committed (ms since the epoch), as the coordinator's clock read it.
    #[serde(default)]
    pub commit_time_ms: i64,
}

/// Why a commit is refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitRefusal {
    /// The group id is empty.
    NoGroup,
    /// An offset's metadata is over [`OFFSET_METADATA_BYTES_MAX`].
    MetadataTooLarge,
    /// Over [`CHANGE_PARTITIONS_MAX`] partitions or [`COMMIT_METADATA_BYTES_MAX`] of metadata.
    TooLarge,
}

/// One partition's offset in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    pub committed: CommittedOffset,
}

/// Committed offsets by group, topic and partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    groups: BTreeMap<String, BTreeMap<String, BTreeMap<u32, CommittedOffset>>>,
}

impl GroupOffsets {
    /// Why a commit of `partitions` offsets with these metadata lengths is refused whole, if
    /// it is: one rule for the coordinator (which answers in its clients' codes) and for
    /// [`Self::check_commit`].
    pub fn refusal(group: &str, partitions: usize, metadata: impl Iterator<Item = usize>) -> Option<CommitRefusal> {
        if group.is_empty() {
            return Some(CommitRefusal::NoGroup);
        }
        if partitions > CHANGE_PARTITIONS_MAX {
            return Some(CommitRefusal::TooLarge);
        }
        let mut total = 0usize;
        for bytes in metadata {
            if bytes > OFFSET_METADATA_BYTES_MAX {
                return Some(CommitRefusal::MetadataTooLarge);
            }
            total += bytes;
        }
        (total > COMMIT_METADATA_BYTES_MAX).then_some(CommitRefusal::TooLarge)
    }

    /// Checks a commit before it is proposed (and again as it is applied): see [`Self::refusal`].
    pub fn check_commit(group: &str, offsets: &[OffsetCommit]) -> Result<(), WireError> {
        let metadata = offsets.iter().map(|c| c.committed.metadata.as_ref().map_or(0, String::len));
        let message = match Self::refusal(group, offsets.len(), metadata) {
            None => return Ok(()),
            Some(CommitRefusal::NoGroup) => "offsets are committed for a named group".to_owned(),
            Some(CommitRefusal::MetadataTooLarge) => {
                format!("an offset's metadata is over offset.metadata.max.bytes = {OFFSET_METADATA_BYTES_MAX}")
            }
            Some(CommitRefusal::TooLarge) => format!(
                "a commit names at most CHANGE_PARTITIONS_MAX = {CHANGE_PARTITIONS_MAX} partitions with at most \
                 COMMIT_METADATA_BYTES_MAX = {COMMIT_METADATA_BYTES_MAX} bytes of metadata; this one names {}",
                offsets.len()
            ),
        };
        Err(WireError::new(ErrorCode::InvalidRequest, message))
    }

    /// Checks how many partitions a commit or deletion names against [`CHANGE_PARTITIONS_MAX`].
    pub fn check_partitions(count: usize) -> Result<(), WireError> {
        if count > CHANGE_PARTITIONS_MAX {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("an offset commit or deletion names {count} partitions, over CHANGE_PARTITIONS_MAX = {CHANGE_PARTITIONS_MAX}"),
            ));
        }
        Ok(())
    }

    /// Stores a group's offsets, all or nothing; offsets of partitions that do not exist (a
    /// topic deleted after the commit was checked) are dropped. Returns how many were stored.
    pub fn commit(
        &mut self,
        group: &str,
        offsets: Vec<OffsetCommit>,
        topics: &BTreeMap<String, std::sync::Arc<Topic>>,
    ) -> Result<usize, WireError> {
        Self::check_commit(group, &offsets)?;
        let mut stored = 0;
        for OffsetCommit { topic, partition, committed } in offsets {
            if topics.get(&topic).is_none_or(|t| partition >= t.partitions) {
                continue;
            }
            self.groups.entry(group.to_owned()).or_default().entry(topic).or_default().insert(partition, committed);
            stored += 1;
        }
        Ok(stored)
    }

    /// Removes a group's offsets of the given partitions, or all of them; returns how many.
    pub fn delete(&mut self, group: &str, partitions: Option<&[(String, u32)]>) -> usize {
        let Some(topics) = self.groups.get_mut(group) else { return 0 };
        let removed = match partitions {
            None => topics.values().map(BTreeMap::len).sum(),
            Some(list) => list
                .iter()
                .filter(|(topic, partition)| {
                    topics.get_mut(topic).and_then(|partitions| partitions.remove(partition)).is_some()
                })
                .count(),
        };
        topics.retain(|_, partitions| !partitions.is_empty());
        if partitions.is_none() || topics.is_empty() {
            self.groups.remove(group);
        }
        removed
    }

    /// Removes every group's offsets of a deleted topic.
    pub fn remove_topic(&mut self, topic: &str) {
        self.groups.retain(|_, topics| {
            topics.remove(topic);
            !topics.is_empty()
        });
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Groups with committed offsets.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// A group's committed offsets: of the given partitions (`None` where nothing is
    /// committed), or every one when `partitions` is `None`.
    pub fn committed(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Vec<(String, u32, Option<CommittedOffset>)> {
        let topics = self.groups.get(group);
        match partitions {
            Some(list) => list
                .iter()
                .map(|(t, p)| (t.clone(), *p, topics.and_then(|g| g.get(t)).and_then(|g| g.get(p)).cloned()))
                .collect(),
            None => topics
                .into_iter()
                .flatten()
                .flat_map(|(t, partitions)| partitions.iter().map(|(p, c)| (t.clone(), *p, Some(c.clone()))))
                .collect(),
        }
    }

    /// The offsets committed before `cutoff_ms` of the groups `expires` accepts (those
    /// without members, coordinated by the asking broker), by group.
    pub fn committed_before(
        &self,
        cutoff_ms: i64,
        expires: impl Fn(&str) -> bool,
    ) -> Vec<(String, Vec<(String, u32)>)> {
        self.groups
            .iter()
            .filter(|(group, _)| expires(group))
            .filter_map(|(group, topics)| {
                let old: Vec<(String, u32)> = topics
                    .iter()
                    .flat_map(|(t, partitions)| {
                        partitions.iter().filter(|(_, c)| c.commit_time_ms < cutoff_ms).map(|(p, _)| (t.clone(), *p))
                    })
                    .collect();
                (!old.is_empty()).then(|| (group.clone(), old))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::wire::TopicConfig;

    fn topics() -> BTreeMap<String, std::sync::Arc<Topic>> {
        ["a", "b"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                (name.to_owned(), Topic::new(i as u64 + 1, name.to_owned(), 2, TopicConfig::default(), 1).into())
            })
            .collect()
    }

    fn at(topic: &str, partition: u32, offset: i64, time: i64) -> OffsetCommit {
        OffsetCommit {
            topic: topic.to_owned(),
            partition,
            committed: CommittedOffset { offset, metadata: None, commit_time_ms: time },
        }
    }

    fn offset(book: &GroupOffsets, group: &str, topic: &str, partition: u32) -> Option<i64> {
        book.committed(group, Some(&[(topic.to_owned(), partition)]))[0].2.as_ref().map(|c| c.offset)
    }

    #[test]
    fn commits_replace_offsets_and_skip_partitions_that_do_not_exist() {
        let mut book = GroupOffsets::default();
        let topics = topics();
        let stored = book.commit("g", vec![at("a", 0, 5, 1), at("a", 2, 7, 1), at("gone", 0, 1, 1)], &topics);
        assert_eq!(stored, Ok(1), "a/2 and gone/0 do not exist");
        assert_eq!(book.commit("g", vec![at("a", 0, 9, 2), at("b", 1, 3, 2)], &topics), Ok(2));
        assert_eq!(offset(&book, "g", "a", 0), Some(9));
        assert_eq!(offset(&book, "g", "b", 1), Some(3));
        assert_eq!(offset(&book, "g", "a", 1), None);
        assert_eq!(book.committed("g", None).len(), 2);
        assert_eq!(book.committed("other", None), vec![]);
        // A commit of only unknown partitions names no group.
        assert_eq!(book.commit("h", vec![at("gone", 0, 1, 1)], &topics), Ok(0));
        assert!(!book.has_group("h"));
        assert_eq!(book.group_count(), 1);
    }

    #[test]
    fn a_commit_is_refused_whole_for_oversized_metadata_or_no_group() {
        let mut book = GroupOffsets::default();
        let mut big = at("a", 1, 1, 1);
        big.committed.metadata = Some("x".repeat(OFFSET_METADATA_BYTES_MAX + 1));
        let refused = book.commit("g", vec![at("a", 0, 1, 1), big], &topics()).unwrap_err();
        assert!(refused.message.contains("offset.metadata.max.bytes = 4096"), "{}", refused.message);
        assert_eq!(book.group_count(), 0, "nothing of a refused commit is stored");
        let mut fits = at("a", 1, 1, 1);
        fits.committed.metadata = Some("x".repeat(OFFSET_METADATA_BYTES_MAX));
        assert_eq!(book.commit("g", vec![fits], &topics()), Ok(1));
        assert!(book.commit("", vec![at("a", 0, 1, 1)], &topics()).is_err());
    }

    #[test]
    fn a_commit_is_bounded_in_partitions_and_in_metadata_bytes() {
        let mut book = GroupOffsets::default();
        let many: Vec<OffsetCommit> = (0..=CHANGE_PARTITIONS_MAX as u32).map(|p| at("a", p, 1, 1)).collect();
        let refused = book.commit("g", many, &topics()).unwrap_err();
        assert!(refused.message.contains("CHANGE_PARTITIONS_MAX = 10000"), "{}", refused.message);
        assert_eq!(
            GroupOffsets::refusal("g", CHANGE_PARTITIONS_MAX + 1, std::iter::empty()),
            Some(CommitRefusal::TooLarge)
        );
        assert!(GroupOffsets::check_partitions(CHANGE_PARTITIONS_MAX).is_ok());
        let heavy: Vec<OffsetCommit> = (0..300)
            .map(|p| {
                let mut c = at("a", p, 1, 1);
                c.committed.metadata = Some("m".repeat(OFFSET_METADATA_BYTES_MAX));
                c
            })
            .collect();
        let refused = book.commit("g", heavy, &topics()).unwrap_err();
        assert!(refused.message.contains("COMMIT_METADATA_BYTES_MAX = 1048576"), "{}", refused.message);
        assert_eq!(
            GroupOffsets::refusal("g", 1, [OFFSET_METADATA_BYTES_MAX + 1].into_iter()),
            Some(CommitRefusal::MetadataTooLarge)
        );
        assert_eq!(GroupOffsets::refusal("", 1, std::iter::empty()), Some(CommitRefusal::NoGroup));
        assert_eq!(book.group_count(), 0, "nothing of a refused commit is stored");
    }

    #[test]
    fn deletions_by_partition_group_and_topic() {
        let mut book = GroupOffsets::default();
        let topics = topics();
        book.commit("g", vec![at("a", 0, 1, 1), at("a", 1, 2, 1), at("b", 0, 3, 1)], &topics).unwrap();
        book.commit("h", vec![at("a", 0, 4, 1)], &topics).unwrap();
        assert_eq!(book.delete("g", Some(&[("a".into(), 1), ("a".into(), 1), ("b".into(), 5)])), 1);
        assert_eq!(book.committed("g", None).len(), 2);
        book.remove_topic("a");
        assert!(!book.has_group("h"), "h only had offsets of a");
        assert_eq!(book.committed("g", None).len(), 1);
        assert_eq!(book.delete("g", None), 1);
        assert_eq!(book.group_count(), 0);
        assert_eq!(book.delete("g", None), 0);
    }

    #[test]
    fn old_offsets_of_the_groups_asked_about_are_listed_for_expiry() {
        let mut book = GroupOffsets::default();
        let topics = topics();
        book.commit("g", vec![at("a", 0, 1, 100), at("a", 1, 2, 300)], &topics).unwrap();
        book.commit("h", vec![at("b", 0, 1, 100)], &topics).unwrap();
        book.commit("busy", vec![at("b", 1, 1, 100)], &topics).unwrap();
        let expired = book.committed_before(200, |g| g != "busy");
        assert_eq!(
            expired,
            vec![("g".to_owned(), vec![("a".to_owned(), 0)]), ("h".to_owned(), vec![("b".to_owned(), 0)])]
        );
        assert_eq!(book.committed_before(100, |_| true), vec![]);
    }
}
