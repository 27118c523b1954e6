//! One key codec for every keyspace of the broker's fjall database. Integers are big-endian,
//! so keys sort as their numbers do; names are joined with a NUL byte, which no topic, group
//! or deployment name may hold.

/// The keyspaces, by name.
pub mod keyspace {
    /// Partition logs: [`super::log_key`] → a RecordBatch v2 with its assigned base offset.
    pub const LOG: &str = "log";
    /// Partition time indexes: [`super::time_index_key`] → the base offset (i64 big-endian) of
    /// the batch that raised the partition's largest timestamp to the key's.
    pub const TIME_INDEX: &str = "time_index";
    /// Log starts moved by DeleteRecords: [`super::partition_key`] → the log start offset (i64
    /// big-endian), which may lie inside a stored batch.
    pub const LOG_START: &str = "log_start";
    /// Leader-epoch caches: [`super::epoch_key`] → the first offset (i64 big-endian) the
    /// partition's log holds of that leader epoch.
    pub const LEADER_EPOCH: &str = "leader_epoch";
    /// High watermarks of replicated partitions, checkpointed every few seconds:
    /// [`super::partition_key`] → the offset (i64 big-endian). One read at start is at most the
    /// true high watermark, so a restarted replica never serves records that may not be
    /// committed.
    pub const HIGH_WATERMARK: &str = "high_watermark";
    /// Which partitions each segment file holds batches of: [`super::extent_key`] → the base
    /// offset (i64 big-endian) of the partition's last batch in that segment.
    pub const SEGMENT_EXTENT: &str = "segment_extent";
    /// Idempotent producers: [`super::producer_key`] → JSON `ProducerState`.
    pub const PRODUCER_STATE: &str = "producer_state";
    /// Committed offsets: [`super::group_offset_key`] → JSON `CommittedOffset`.
    pub const GROUP_OFFSETS: &str = "group_offsets";
    /// Plugin components: SHA-256 (hex) → component bytes.
    pub const MODULE_BLOBS: &str = "module_blobs";
    /// Transform progress: [`super::progress_key`] → next input offset, i64 big-endian.
    pub const MODULE_PROGRESS: &str = "module_progress";
    /// Connectors' stored values: [`super::connector_key`] → a source task's position (next
    /// offset, i64 big-endian, then the module's position bytes) or a value of the connector's
    /// key-value state.
    pub const CONNECTOR_STATE: &str = "connector_state";
    /// The controller's Raft log: [`super::raft_index_key`] → a JSON openraft entry.
    pub const RAFT_LOG: &str = "raft_log";
    /// The controller's vote, committed log id, last purged log id and snapshot.
    pub const RAFT_META: &str = "raft_meta";
}

/// A partition's identity in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic_id: u64,
    pub partition: u32,
}

pub const LOG_KEY_BYTES: usize = 20;

/// `topic id u64 | partition u32 | base offset u64`: a partition is one contiguous range and
/// "the batch holding offset X" is one reverse seek.
pub fn log_key(id: PartitionId, offset: i64) -> [u8; LOG_KEY_BYTES] {
    let mut key = [0u8; LOG_KEY_BYTES];
    key[..8].copy_from_slice(&id.topic_id.to_be_bytes());
    key[8..12].copy_from_slice(&id.partition.to_be_bytes());
    // Offsets are never negative; a negative one sorts after every real one.
    key[12..].copy_from_slice(&offset.to_be_bytes());
    key
}

/// The partition and base offset of a log key.
pub fn parse_log_key(key: &[u8]) -> Option<(PartitionId, i64)> {
    let (id, rest) = parse_partition(key)?;
    Some((id, i64::from_be_bytes(rest.try_into().ok()?)))
}

/// `segment id u64 | topic id u64 | partition u32`: a segment's partitions are one range.
pub fn extent_key(segment: u64, id: PartitionId) -> [u8; LOG_KEY_BYTES] {
    let mut key = [0u8; LOG_KEY_BYTES];
    key[..8].copy_from_slice(&segment.to_be_bytes());
    key[8..].copy_from_slice(&partition_key(id));
    key
}

/// The segment and partition of an extent key.
pub fn parse_extent_key(key: &[u8]) -> Option<(u64, PartitionId)> {
    if key.len() != LOG_KEY_BYTES {
        return None;
    }
    let segment = u64::from_be_bytes(key[..8].try_into().ok()?);
    let topic_id = u64::from_be_bytes(key[8..16].try_into().ok()?);
    let partition = u32::from_be_bytes(key[16..].try_into().ok()?);
    Some((segment, PartitionId { topic_id, partition }))
}

/// `topic id u64 | partition u32`.
pub fn partition_key(id: PartitionId) -> [u8; 12] {
    let mut key = [0u8; 12];
    key.copy_from_slice(&log_key(id, 0)[..12]);
    key
}

/// `topic id u64 | partition u32 | timestamp`, the timestamp's sign bit flipped so that a
/// partition's entries sort by timestamp, negative ones first.
pub fn time_index_key(id: PartitionId, timestamp: i64) -> [u8; LOG_KEY_BYTES] {
    let mut key = log_key(id, 0);
    let sortable = u64::from_be_bytes(timestamp.to_be_bytes()) ^ (1 << 63);
    key[12..].copy_from_slice(&sortable.to_be_bytes());
    key
}

/// The timestamp of a time index key.
pub fn parse_time_index_key(key: &[u8]) -> Option<(PartitionId, i64)> {
    let (id, rest) = parse_partition(key)?;
    let sortable = u64::from_be_bytes(rest.try_into().ok()?) ^ (1 << 63);
    Some((id, i64::from_be_bytes(sortable.to_be_bytes())))
}

/// `topic id u64 | partition u32 | producer id i64`.
pub fn producer_key(id: PartitionId, producer_id: i64) -> [u8; LOG_KEY_BYTES] {
    log_key(id, producer_id)
}

/// `topic id u64 | partition u32 | leader epoch` (epochs are never negative, so they sort).
pub fn epoch_key(id: PartitionId, epoch: i32) -> [u8; LOG_KEY_BYTES] {
    log_key(id, i64::from(epoch))
}

pub fn parse_producer_key(key: &[u8]) -> Option<(PartitionId, i64)> {
    parse_log_key(key)
}

/// The prefix of every key of a topic in the log and producer keyspaces.
pub fn topic_prefix(topic_id: u64) -> [u8; 8] {
    topic_id.to_be_bytes()
}

fn parse_partition(key: &[u8]) -> Option<(PartitionId, &[u8])> {
    if key.len() != LOG_KEY_BYTES {
        return None;
    }
    let topic_id = u64::from_be_bytes(key[..8].try_into().ok()?);
    let partition = u32::from_be_bytes(key[8..12].try_into().ok()?);
    Some((PartitionId { topic_id, partition }, &key[12..]))
}

/// `first \0 second \0 partition u32`: committed offsets (group, topic) and transform progress
/// (deployment, topic).
fn named_key(first: &str, second: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(first.len() + second.len() + 6);
    key.extend_from_slice(first.as_bytes());
    key.push(0);
    key.extend_from_slice(second.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn parse_named_key(key: &[u8]) -> Option<(String, String, u32)> {
    let first_end = key.iter().position(|b| *b == 0)?;
    let rest = &key[first_end + 1..];
    let partition_at = rest.len().checked_sub(5)?;
    if rest[partition_at] != 0 {
        return None;
    }
    let partition = u32::from_be_bytes(rest[partition_at + 1..].try_into().ok()?);
    Some((
        String::from_utf8(key[..first_end].to_vec()).ok()?,
        String::from_utf8(rest[..partition_at].to_vec()).ok()?,
        partition,
    ))
}

pub fn group_offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    named_key(group, topic, partition)
}

/// (group, topic, partition).
pub fn parse_group_offset_key(key: &[u8]) -> Option<(String, String, u32)> {
    parse_named_key(key)
}

pub fn progress_key(deployment: &str, topic: &str, partition: u32) -> Vec<u8> {
    named_key(deployment, topic, partition)
}

/// (deployment, topic, partition).
pub fn parse_progress_key(key: &[u8]) -> Option<(String, String, u32)> {
    parse_named_key(key)
}

/// What a connector key holds: a source task's position or a state value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorValue {
    Position,
    State,
}

/// `deployment \0 kind-byte name`: a connector's stored values ([`ConnectorValue`]).
pub fn connector_key(deployment: &str, what: ConnectorValue, name: &str) -> Vec<u8> {
    let mut key = connector_prefix(deployment, what);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The prefix of every key of one kind of a connector's values.
pub fn connector_prefix(deployment: &str, what: ConnectorValue) -> Vec<u8> {
    let mut key = progress_prefix(deployment);
    key.push(match what {
        ConnectorValue::Position => b'p',
        ConnectorValue::State => b's',
    });
    key
}

/// The prefix of every progress key of a deployment.
pub fn progress_prefix(deployment: &str) -> Vec<u8> {
    let mut prefix = deployment.as_bytes().to_vec();
    prefix.push(0);
    prefix
}

pub fn raft_index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn parse_raft_index_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId { topic_id: 7, partition: 3 };

    #[test]
    fn keys_round_trip_and_sort_as_their_numbers() {
        for offset in [0, 1, 255, 256, i64::MAX] {
            assert_eq!(parse_log_key(&log_key(P, offset)), Some((P, offset)));
        }
        assert!(log_key(P, 9) < log_key(P, 10));
        assert!(log_key(P, i64::MAX) < log_key(PartitionId { topic_id: 7, partition: 4 }, 0));
        assert!(log_key(P, 0).starts_with(&topic_prefix(7)));
        assert_eq!(parse_producer_key(&producer_key(P, 1000)), Some((P, 1000)));
        assert_eq!(parse_log_key(b"short"), None);
        assert_eq!(parse_raft_index_key(&raft_index_key(42)), Some(42));
        assert!(raft_index_key(255) < raft_index_key(256));
        let stamps = [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for pair in stamps.windows(2) {
            assert!(time_index_key(P, pair[0]) < time_index_key(P, pair[1]), "{pair:?} sort");
        }
        for t in stamps {
            assert_eq!(parse_time_index_key(&time_index_key(P, t)), Some((P, t)));
        }
        assert_eq!(parse_extent_key(&extent_key(9, P)), Some((9, P)));
        assert!(extent_key(9, P) < extent_key(10, PartitionId { topic_id: 0, partition: 0 }), "by segment first");
        assert_eq!(parse_extent_key(&extent_key(9, P)[..19]), None);
    }

    #[test]
    fn named_keys_round_trip_and_reject_what_is_not_one() {
        let check = |key: &[u8], expected: Option<(&str, &str, u32)>| {
            let got = parse_group_offset_key(key);
            assert_eq!(got.as_ref().map(|(a, b, p)| (a.as_str(), b.as_str(), *p)), expected, "{key:?}");
        };
        check(&group_offset_key("g", "orders", 0), Some(("g", "orders", 0)));
        check(&group_offset_key("g", "t", u32::MAX), Some(("g", "t", u32::MAX)));
        check(&progress_key("copy", "a.b-c", 7), Some(("copy", "a.b-c", 7)));
        check(b"no-separator", None);
        check(b"g\0t", None);
        check(b"g\0t\x01\0\0\0\x01", None);
        assert!(progress_key("copy", "t", 0).starts_with(&progress_prefix("copy")));
        assert!(!progress_key("copy2", "t", 0).starts_with(&progress_prefix("copy")));
    }
}
