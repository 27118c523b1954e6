//! The native protocol's frames and messages, shared by the client and the broker.
//!
//! A frame is `u32 length | u8 version | u8 kind | u32 header length | header | payload`, all
//! integers big-endian. `length` counts everything after itself. The header is a JSON document
//! (control data, small); the payload is raw bytes (record batches) that are never re-encoded.
//! One request and one response travel on one bidirectional QUIC stream.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{ErrorCode, WireError};

/// ALPN protocol id of the native protocol.
pub const ALPN: &[u8] = b"weir/1";
/// Version byte of every frame this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes before the header: length (4), version (1), kind (1), header length (4).
pub const FRAME_PREFIX_BYTES: usize = 10;
/// Default upper bound of a whole frame; brokers and clients may configure their own.
pub const DEFAULT_FRAME_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Upper bound of a frame's JSON header, independent of the frame limit.
pub const HEADER_BYTES_LIMIT: usize = 1024 * 1024;

/// What a frame carries. Numbers are stable: a retired kind is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Error = 0,
    CreateTopic = 1,
    DeleteTopic = 2,
    ListTopics = 3,
    DescribeTopic = 4,
    AlterTopic = 5,
    Produce = 6,
    Fetch = 7,
    ListOffsets = 8,
    JoinGroup = 9,
    SyncGroup = 10,
    Heartbeat = 11,
    LeaveGroup = 12,
    OffsetCommit = 13,
    OffsetFetch = 14,
    DeployModule = 15,
    ListModules = 16,
    DescribeModule = 17,
    ModuleAction = 18,
    InitProducerId = 19,
    ClusterStatus = 20,
    ReassignPartitions = 21,
    ElectLeaders = 22,
    ListGroups = 23,
    DescribeGroup = 24,
    ResetGroupOffsets = 25,
    DeleteGroup = 26,
}

impl FrameKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Error,
            1 => Self::CreateTopic,
            2 => Self::DeleteTopic,
            3 => Self::ListTopics,
            4 => Self::DescribeTopic,
            5 => Self::AlterTopic,
            6 => Self::Produce,
            7 => Self::Fetch,
            8 => Self::ListOffsets,
            9 => Self::JoinGroup,
            10 => Self::SyncGroup,
            11 => Self::Heartbeat,
            12 => Self::LeaveGroup,
            13 => Self::OffsetCommit,
            14 => Self::OffsetFetch,
            15 => Self::DeployModule,
            16 => Self::ListModules,
            17 => Self::DescribeModule,
            18 => Self::ModuleAction,
            19 => Self::InitProducerId,
            20 => Self::ClusterStatus,
            21 => Self::ReassignPartitions,
            22 => Self::ElectLeaders,
            23 => Self::ListGroups,
            24 => Self::DescribeGroup,
            25 => Self::ResetGroupOffsets,
            26 => Self::DeleteGroup,
            _ => return None,
        })
    }
}

/// A decoded frame. `header` is still JSON; [`Frame::header`] parses it into a message type.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: FrameKind,
    pub header: Bytes,
    pub payload: Bytes,
}

impl Frame {
    pub fn new<H: Serialize>(kind: FrameKind, header: &H, payload: Bytes) -> Self {
        let header = serde_json::to_vec(header).expect("message types serialize");
        Self { kind, header: Bytes::from(header), payload }
    }

    pub fn error(error: &WireError) -> Self {
        Self::new(FrameKind::Error, error, Bytes::new())
    }

    pub fn header<H: DeserializeOwned>(&self) -> Result<H, WireError> {
        serde_json::from_slice(&self.header).map_err(|e| {
            WireError::new(
                ErrorCode::MalformedFrame,
                format!("frame header is not a valid {:?} message: {e}", self.kind),
            )
        })
    }

    pub fn encoded_len(&self) -> usize {
        FRAME_PREFIX_BYTES + self.header.len() + self.payload.len()
    }

    /// Encodes the frame; the payload is the only large part and is copied once.
    pub fn encode(&self) -> BytesMut {
        let mut buf = self.encode_with_payload_len(self.payload.len());
        buf.put_slice(&self.payload);
        buf
    }

    /// The encoded frame as two chunks, prefix and header, then the payload, so a large payload
    /// is sent without being copied.
    pub fn encode_chunks(&self) -> [Bytes; 2] {
        [self.encode_head(self.payload.len()), self.payload.clone()]
    }

    /// The length prefix and header of this frame as if its payload were `payload_len` bytes
    /// sent after it in chunks (a produce request's batches, each in its own buffer);
    /// `self.payload` is not in it.
    pub fn encode_head(&self, payload_len: usize) -> Bytes {
        self.encode_with_payload_len(payload_len).freeze()
    }

    fn encode_with_payload_len(&self, payload_len: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(FRAME_PREFIX_BYTES + self.header.len());
        let body_len = FRAME_PREFIX_BYTES - 4 + self.header.len() + payload_len;
        buf.put_u32(u32::try_from(body_len).expect("frame fits u32"));
        buf.put_u8(PROTOCOL_VERSION);
        buf.put_u8(self.kind as u8);
        buf.put_u32(self.header.len() as u32);
        buf.put_slice(&self.header);
        buf
    }

    /// Decodes one whole frame. Lengths are checked against `frame_bytes_limit` and against the
    /// bytes actually present before anything is allocated.
    pub fn decode(buf: &[u8], frame_bytes_limit: usize) -> Result<Self, WireError> {
        let declared = read_length_prefix(buf, frame_bytes_limit)?;
        let body = &buf[4..];
        if body.len() != declared {
            return Err(WireError::new(
                ErrorCode::MalformedFrame,
                format!("frame declares {declared} bytes after its length prefix but {} arrived", body.len()),
            ));
        }
        Self::decode_body(Bytes::copy_from_slice(body))
    }

    /// Decodes the part after the length prefix. Header and payload are slices of `body`.
    pub fn decode_body(body: Bytes) -> Result<Self, WireError> {
        if body.len() < FRAME_PREFIX_BYTES - 4 {
            return Err(WireError::new(
                ErrorCode::MalformedFrame,
                format!(
                    "frame body of {} bytes is shorter than the {}-byte frame header",
                    body.len(),
                    FRAME_PREFIX_BYTES - 4
                ),
            ));
        }
        let version = body[0];
        if version != PROTOCOL_VERSION {
            return Err(WireError::new(
                ErrorCode::UnsupportedVersion,
                format!("frame version {version} is not supported; this broker speaks version {PROTOCOL_VERSION}"),
            ));
        }
        let kind = FrameKind::from_u8(body[1])
            .ok_or_else(|| WireError::new(ErrorCode::UnknownRequest, format!("unknown frame kind {}", body[1])))?;
        let header_len = u32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
        let rest = body.slice(6..);
        if header_len > HEADER_BYTES_LIMIT || header_len > rest.len() {
            return Err(WireError::new(
                ErrorCode::MalformedFrame,
                format!(
                    "frame header length {header_len} exceeds the {} bytes left in the frame (header limit {HEADER_BYTES_LIMIT})",
                    rest.len()
                ),
            ));
        }
        Ok(Self { kind, header: rest.slice(..header_len), payload: rest.slice(header_len..) })
    }
}

/// Reads and checks the 4-byte length prefix; returns the body length it declares.
pub fn read_length_prefix(buf: &[u8], frame_bytes_limit: usize) -> Result<usize, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Err(WireError::new(
            ErrorCode::MalformedFrame,
            format!("frame of {} bytes has no 4-byte length prefix", buf.len()),
        ));
    };
    let declared = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if declared.saturating_add(4) > frame_bytes_limit {
        return Err(WireError::new(
            ErrorCode::FrameTooLarge,
            format!("frame of {} bytes exceeds max.frame.bytes = {frame_bytes_limit}", declared.saturating_add(4)),
        ));
    }
    Ok(declared)
}

// ---- messages -------------------------------------------------------------------------------

/// The longest finite `retention.ms` (100 years); `-1` keeps batches for ever.
pub const RETENTION_MS_MAX: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Topic configuration. Every field has a default, so a create request names only what it sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Delete whole batches older than this; `None` keeps them forever.
    pub retention_ms: Option<u64>,
    /// Delete whole batches from the front while a partition holds more than this.
    pub retention_bytes: Option<u64>,
    /// Largest record batch a producer may send, in bytes.
    pub max_message_bytes: u32,
    /// `Always`: fsync before acknowledging; `IntervalMs(n)`: fsync every n ms in the background.
    pub flush: FlushMode,
    /// Every record value must carry the Confluent wire format (magic 0, schema id) of a schema
    /// registered for the value subject, and decode with it.
    pub value_schema_validation: bool,
    /// The same for record keys.
    pub key_schema_validation: bool,
    /// How the subject of a record's schema is named.
    pub subject_name_strategy: SubjectNameStrategy,
    /// Kafka topic configs set on the topic that Weir stores, checks and reports but does not
    /// act on ([`KAFKA_TOPIC_CONFIGS`]); a config at its default is not kept.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub kafka: std::collections::BTreeMap<String, String>,
}

/// Longest value a topic config may have.
pub const TOPIC_CONFIG_VALUE_BYTES_MAX: usize = 1024;

/// What a Kafka topic config's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// A whole number at least this.
    Long(i64),
    /// A number from 0 to 1.
    Ratio,
    Bool,
    /// One of these.
    Choice(&'static [&'static str]),
    /// A comma-separated list of these.
    List(&'static [&'static str]),
    /// Any text.
    Text,
}

/// Every topic config Kafka 3.7 defines that Weir does not act on, with its kind and Kafka's
/// default: Weir accepts, checks, stores and reports them, so tools that set them work, but
/// they change nothing (there is no compaction, one replica, no segments, no tiered storage).
/// `retention.ms`, `retention.bytes` and `max.message.bytes` are Kafka configs Weir acts on.
pub const KAFKA_TOPIC_CONFIGS: &[(&str, ConfigKind, &str)] = &[
    ("cleanup.policy", ConfigKind::List(&["delete", "compact"]), "delete"),
    (
        "compression.type",
        ConfigKind::Choice(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        "producer",
    ),
    ("delete.retention.ms", ConfigKind::Long(0), "86400000"),
    ("file.delete.delay.ms", ConfigKind::Long(0), "60000"),
    ("flush.messages", ConfigKind::Long(1), "9223372036854775807"),
    ("flush.ms", ConfigKind::Long(0), "9223372036854775807"),
    ("follower.replication.throttled.replicas", ConfigKind::Text, ""),
    ("index.interval.bytes", ConfigKind::Long(0), "4096"),
    ("leader.replication.throttled.replicas", ConfigKind::Text, ""),
    ("local.retention.bytes", ConfigKind::Long(-2), "-2"),
    ("local.retention.ms", ConfigKind::Long(-2), "-2"),
    ("max.compaction.lag.ms", ConfigKind::Long(1), "9223372036854775807"),
    ("message.downconversion.enable", ConfigKind::Bool, "true"),
    ("message.format.version", ConfigKind::Text, "3.0-IV1"),
    ("message.timestamp.after.max.ms", ConfigKind::Long(0), "9223372036854775807"),
    ("message.timestamp.before.max.ms", ConfigKind::Long(0), "9223372036854775807"),
    ("message.timestamp.difference.max.ms", ConfigKind::Long(0), "9223372036854775807"),
    ("message.timestamp.type", ConfigKind::Choice(&["CreateTime", "LogAppendTime"]), "CreateTime"),
    ("min.cleanable.dirty.ratio", ConfigKind::Ratio, "0.5"),
    ("min.compaction.lag.ms", ConfigKind::Long(0), "0"),
    ("min.insync.replicas", ConfigKind::Long(1), "1"),
    ("preallocate", ConfigKind::Bool, "false"),
    ("remote.storage.enable", ConfigKind::Bool, "false"),
    ("segment.bytes", ConfigKind::Long(14), "1073741824"),
    ("segment.index.bytes", ConfigKind::Long(4), "10485760"),
    ("segment.jitter.ms", ConfigKind::Long(0), "0"),
    ("segment.ms", ConfigKind::Long(1), "604800000"),
    ("unclean.leader.election.enable", ConfigKind::Bool, "false"),
];

impl ConfigKind {
    /// Why `value` is not one of this kind, if it is not.
    pub fn check(self, value: &str) -> Result<(), String> {
        match self {
            Self::Long(min) => match value.trim().parse::<i64>() {
                Ok(n) if n >= min => Ok(()),
                _ => Err(format!("expected a whole number of at least {min}")),
            },
            Self::Ratio => match value.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
                _ => Err("expected a number from 0 to 1".into()),
            },
            Self::Bool => match value {
                "true" | "false" => Ok(()),
                _ => Err("expected true or false".into()),
            },
            Self::Choice(options) if options.contains(&value) => Ok(()),
            Self::Choice(options) => Err(format!("expected one of {}", options.join(", "))),
            Self::List(options) if !value.is_empty() && value.split(',').all(|v| options.contains(&v.trim())) => Ok(()),
            Self::List(options) => Err(format!("expected a comma-separated list of {}", options.join(", "))),
            Self::Text => Ok(()),
        }
    }
}

/// How the schema registry subject of a record is named (Confluent's strategies, by their
/// names on the wire and in stored configs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubjectNameStrategy {
    /// `<topic>-value` / `<topic>-key`.
    #[default]
    #[serde(rename = "TopicNameStrategy")]
    TopicName,
    /// The record's full name.
    #[serde(rename = "RecordNameStrategy")]
    RecordName,
    /// `<topic>-<full name>`.
    #[serde(rename = "TopicRecordNameStrategy")]
    TopicRecordName,
}

impl SubjectNameStrategy {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "TopicNameStrategy" => Some(Self::TopicName),
            "RecordNameStrategy" => Some(Self::RecordName),
            "TopicRecordNameStrategy" => Some(Self::TopicRecordName),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TopicName => "TopicNameStrategy",
            Self::RecordName => "RecordNameStrategy",
            Self::TopicRecordName => "TopicRecordNameStrategy",
        }
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            value_schema_validation: false,
            key_schema_validation: false,
            subject_name_strategy: SubjectNameStrategy::TopicName,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1024 * 1024,
            flush: FlushMode::Always,
            kafka: std::collections::BTreeMap::new(),
        }
    }
}

impl TopicConfig {
    /// Applies Kafka-style `key=value` settings: `retention.ms` and `retention.bytes` (`-1` for
    /// unlimited), `max.message.bytes`, `flush.mode` (`always` or `interval`) and
    /// `flush.interval.ms`. Names the key and the value it could not take.
    pub fn with_entries<'a>(
        mut self,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, WireError> {
        let mut interval_ms = match self.flush {
            FlushMode::IntervalMs(ms) => Some(ms),
            FlushMode::Always => None,
        };
        let mut mode_interval = interval_ms.is_some();
        for (key, value) in entries {
            let invalid =
                |why: &str| WireError::new(ErrorCode::InvalidConfig, format!("topic config {key}={value:?}: {why}"));
            // Stored with the topic in the replicated metadata: a value is short.
            if value.len() > TOPIC_CONFIG_VALUE_BYTES_MAX {
                return Err(WireError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "topic config {key}: a value is at most {TOPIC_CONFIG_VALUE_BYTES_MAX} bytes, not {}",
                        value.len()
                    ),
                ));
            }
            let unlimited_or_u64 = || -> Result<Option<u64>, WireError> {
                match value.parse::<i64>() {
                    Ok(-1) => Ok(None),
                    Ok(n) if n >= 0 => Ok(Some(n as u64)),
                    _ => Err(invalid("expected a non-negative integer or -1 for unlimited")),
                }
            };
            match key {
                "retention.ms" => {
                    self.retention_ms = unlimited_or_u64()?;
                    if self.retention_ms.is_some_and(|ms| ms > RETENTION_MS_MAX) {
                        return Err(invalid("longer than 100 years (3153600000000 ms); use -1 to keep batches for ever"));
                    }
                }
                "retention.bytes" => self.retention_bytes = unlimited_or_u64()?,
                "max.message.bytes" => {
                    self.max_message_bytes = value.parse().map_err(|_| invalid("expected a positive integer number of bytes"))?
                }
                "flush.mode" => {
                    mode_interval = match value {
                        "always" => false,
                        "interval" => true,
                        _ => return Err(invalid("expected always or interval")),
                    }
                }
                "flush.interval.ms" => {
                    interval_ms = Some(value.parse().map_err(|_| invalid("expected a positive integer number of milliseconds"))?)
                }
                "value.schema.validation" | "key.schema.validation" => {
                    let on = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid("expected true or false")),
                    };
                    if key.starts_with("value") {
                        self.value_schema_validation = on;
                    } else {
                        self.key_schema_validation = on;
                    }
                }
                "subject.name.strategy" => {
                    self.subject_name_strategy = SubjectNameStrategy::parse(value).ok_or_else(|| {
                        invalid("expected TopicNameStrategy, RecordNameStrategy or TopicRecordNameStrategy")
                    })?
                }
                _ => match KAFKA_TOPIC_CONFIGS.iter().find(|(name, _, _)| *name == key) {
                    Some((_, kind, default)) => {
                        kind.check(value).map_err(|why| invalid(&why))?;
                        if value == *default {
                            self.kafka.remove(key);
                        } else {
                            self.kafka.insert(key.to_owned(), value.to_owned());
                        }
                    }
                    None => {
                        return Err(invalid(
                            "not a topic config Kafka or Weir defines; Weir's own are flush.mode, flush.interval.ms, value.schema.validation, key.schema.validation, subject.name.strategy",
                        ))
                    }
                },
            }
        }
        self.flush = if mode_interval { FlushMode::IntervalMs(interval_ms.unwrap_or(1000)) } else { FlushMode::Always };
        Ok(self)
    }

    /// The settings as Kafka-style `key=value` pairs.
    pub fn entries(&self) -> Vec<(String, String)> {
        let unlimited = |v: Option<u64>| v.map_or("-1".to_owned(), |n| n.to_string());
        let mut out = vec![
            ("retention.ms".to_owned(), unlimited(self.retention_ms)),
            ("retention.bytes".to_owned(), unlimited(self.retention_bytes)),
            ("max.message.bytes".to_owned(), self.max_message_bytes.to_string()),
            ("value.schema.validation".to_owned(), self.value_schema_validation.to_string()),
            ("key.schema.validation".to_owned(), self.key_schema_validation.to_string()),
            ("subject.name.strategy".to_owned(), self.subject_name_strategy.as_str().to_owned()),
        ];
        match self.flush {
            FlushMode::Always => out.push(("flush.mode".into(), "always".into())),
            FlushMode::IntervalMs(ms) => {
                out.push(("flush.mode".into(), "interval".into()));
                out.push(("flush.interval.ms".into(), ms.to_string()));
            }
        }
        // Kafka's other configs: set or at their defaults.
        for (name, _, default) in KAFKA_TOPIC_CONFIGS {
            let value = self.kafka.get(*name).map_or(*default, String::as_str);
            out.push(((*name).to_owned(), value.to_owned()));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushMode {
    Always,
    IntervalMs(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    #[serde(default)]
    pub config: TopicConfig,
    /// Replicas of each partition (a cluster's brokers; 1 on a single node).
    #[serde(default = "one_replica")]
    pub replication_factor: u32,
}

fn one_replica() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicNameRequest {
    pub name: String,
}

/// Changes the named settings of a topic's config; partitions can only grow.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlterTopicRequest {
    pub name: String,
    pub partitions: Option<u32>,
    pub config: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub id: u64,
    pub partitions: Vec<PartitionDescription>,
    pub config: TopicConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDescription {
    pub partition: u32,
    /// The broker leading it; `None` while it has no leader (its replicas are fenced).
    pub leader: Option<u64>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    /// Its replicas (the preferred leader first) and in-sync replicas, in a cluster.
    #[serde(default)]
    pub replicas: Vec<u64>,
    #[serde(default)]
    pub isr: Vec<u64>,
    /// The answering broker's log end offset of its replica (the high watermark and the
    /// offsets above are its replica's too; zeros when it holds none).
    #[serde(default)]
    pub log_end_offset: i64,
    /// A reassignment under way: the replicas being added (copying the log) and removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<u64>,
}

/// Moves partitions of a topic to new replicas (`weir partition reassign`); answered with the
/// topic's description right after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignPartitionsRequest {
    pub topic: String,
    pub partitions: Vec<PartitionMove>,
    /// The most bytes per second a leader sends the new replicas (unthrottled if absent).
    #[serde(default)]
    pub throttle_bytes_per_sec: Option<u64>,
}

/// Gives the partitions of `topic` (of every topic if absent) whose preferred replica is live
/// and in sync their leadership back (`weir partition elect-leaders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectLeadersRequest {
    #[serde(default)]
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectLeadersResponse {
    /// The partitions whose leadership moved, as `topic/partition`.
    pub moved: Vec<String>,
}

/// One partition's target replicas, the preferred leader first; `None` cancels its move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    pub partition: u32,
    pub replicas: Option<Vec<u64>>,
}

/// The cluster's controller as the answering broker sees it (`weir cluster status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusResponse {
    /// The broker that answered.
    pub node_id: u64,
    /// The controller leader's node id; `None` during an election or without a majority.
    pub controller_leader: Option<u64>,
    /// The controller's Raft term as this broker knows it.
    pub controller_term: u64,
    /// The controller's voters with their cluster addresses.
    pub voters: Vec<ClusterVoter>,
    /// Brokers that joined as learners (`weir serve --join`): they hold the metadata log and
    /// vote in no election.
    #[serde(default)]
    pub learners: Vec<ClusterVoter>,
    /// The last controller log entry this broker has applied to its metadata.
    pub last_applied: Option<u64>,
    /// The brokers registered with the controller (a cluster's), in node id order.
    #[serde(default)]
    pub brokers: Vec<ClusterBroker>,
    /// Partitions without a leader (every replica that may lead is fenced), as `topic/partition`,
    /// the first [`OFFLINE_PARTITIONS_LISTED`] of them; `offline_partitions` counts them all.
    #[serde(default)]
    pub offline: Vec<String>,
    #[serde(default)]
    pub offline_partitions: u64,
    /// Partitions with fewer in-sync replicas than replicas (the first
    /// [`OFFLINE_PARTITIONS_LISTED`]), and how many there are.
    #[serde(default)]
    pub under_replicated: Vec<String>,
    #[serde(default)]
    pub under_replicated_partitions: u64,
    /// Partitions with a reassignment under way.
    #[serde(default)]
    pub reassigning_partitions: u64,
}

/// How many offline partitions a cluster status names (it counts them all).
pub const OFFLINE_PARTITIONS_LISTED: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBroker {
    pub node_id: u64,
    /// Goes up each time the broker registers.
    pub epoch: u64,
    /// Missed its session timeout (or stopped): leads nothing until it registers again.
    pub fenced: bool,
    pub quic_addr: String,
    /// `host:port` of its Kafka listener as clients are told.
    pub kafka_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterVoter {
    pub node_id: u64,
    pub cluster_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListTopicsResponse {
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// The broker sends no response; the client learns nothing about the outcome.
    None,
    /// The leader acknowledges once the batch is in its log (and fsynced if the topic says so).
    Leader,
    /// All in-sync replicas have the batch. On a single node this is the leader.
    All,
}

/// A produce request's header; the payload holds the batches back to back, in the order and with
/// the lengths listed here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub topic: String,
    pub acks: Acks,
    pub timeout_ms: u32,
    pub partitions: Vec<ProducePartition>,
}

/// The partition of a produce entry whose records the broker places.
pub const PARTITION_UNASSIGNED: u32 = u32::MAX;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducePartition {
    /// [`PARTITION_UNASSIGNED`] lets the broker pick each record's partition: the topic's
    /// partitioner module if one is deployed, else Kafka's murmur2 of the key.
    pub partition: u32,
    pub bytes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceResponse {
    pub partitions: Vec<ProducePartitionResponse>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducePartitionResponse {
    pub partition: u32,
    /// Offset given to the first record of the partition's first batch.
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    /// How long the broker may hold the request while fewer than `min_bytes` are available.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Upper bound of the whole response's payload. At least one batch is returned per partition
    /// even when it is larger, so a consumer never gets stuck.
    pub max_bytes: u32,
    pub partitions: Vec<FetchPartition>,
    /// Read each partition from the answering broker's replica where it holds one (up to that
    /// replica's high watermark), as Kafka consumers read from a nearby follower (KIP-392);
    /// otherwise from the leader.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replica_reads: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub max_bytes: u32,
    /// A transform deployment to run on the broker over what is read (a consume-time filter or
    /// map): only its outputs cross the network, each keeping its input record's offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// The payload holds each partition's batches back to back, in the order listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchResponse {
    pub partitions: Vec<FetchPartitionResponse>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchPartitionResponse {
    pub topic: String,
    pub partition: u32,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub bytes: u32,
    pub error: Option<WireError>,
    /// With a fetch module: the offset after the last record read, which may be past the last
    /// record returned (the module dropped the rest); the consumer continues from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose batch holds a record with a timestamp at or after this (ms).
    Timestamp(i64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListOffsetsRequest {
    pub topic: String,
    pub partitions: Vec<u32>,
    pub spec: OffsetSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListOffsetsResponse {
    pub partitions: Vec<ListOffsetsPartition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListOffsetsPartition {
    pub partition: u32,
    /// `-1` when no record has a timestamp at or after the one asked for.
    pub offset: i64,
    pub timestamp: i64,
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Empty {}

/// A new producer identity for an idempotent producer (request: [`Empty`]). Ids are handed
/// out by the controller in blocks, so they are unique across brokers and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProducerIdResponse {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

// ---- consumer groups: Kafka's classic group protocol, shared with Kafka clients ------------------

/// Joins (or rejoins) a group. `protocols` carry Kafka consumer-protocol metadata, so native and
/// Kafka consumers can be members of one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinGroupRequest {
    pub group_id: String,
    /// Empty on the first join; the broker assigns one.
    pub member_id: String,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<GroupProtocol>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupProtocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinGroupResponse {
    pub generation_id: i32,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; only the leader gets it.
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupMember {
    pub member_id: String,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// Filled by the leader: each member's assignment in the consumer-protocol format.
    pub assignments: Vec<GroupMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncGroupResponse {
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupMemberRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    /// -1 with an empty member id for a consumer outside group membership.
    pub generation_id: i32,
    pub member_id: String,
    pub offsets: Vec<PartitionOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffsetFetchRequest {
    pub group_id: String,
    pub partitions: Vec<(String, u32)>,
}

/// Committed offsets; a partition with none is absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffsetFetchResponse {
    pub offsets: Vec<PartitionOffset>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs every decoder a broker applies to untrusted bytes; the fuzz target and the seeded
/// property test call it. Panics only if a decoder does.
pub fn fuzz_decode(data: &[u8]) {
    let Ok(frame) = Frame::decode(data, DEFAULT_FRAME_BYTES_LIMIT) else { return };
    let _ = frame.header::<ProduceRequest>();
    let _ = frame.header::<FetchRequest>();
    let _ = frame.header::<CreateTopicRequest>();
    let _ = frame.header::<AlterTopicRequest>();
    let _ = frame.header::<ListOffsetsRequest>();
    if let Ok(batches) = crate::batch::split_batches(&frame.payload) {
        for (header, batch) in batches {
            let batch = Bytes::copy_from_slice(batch);
            let _ = crate::batch::inflated_batch_len(&header, &batch, 1 << 20);
            let _ = crate::batch::decode_batch_records(batch, 1 << 20);
        }
    }
    let _ = crate::batch::decode_batches_within("fuzz", 0, frame.payload.clone(), 0, 1 << 20);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded stand-in for the fuzzer that runs with the tests: mutated valid frames and raw
    /// noise never panic the decoders. Prints its seed so a failure can be replayed.
    #[test]
    fn decoders_never_panic_on_mutated_input() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("WEIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
        eprintln!("decoder property test seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let records = [crate::batch::Record { value: Some(Bytes::from_static(b"value")), ..Default::default() }];
        let batch = crate::batch::encode_batch(&records, crate::batch::Compression::None).unwrap();
        let request = ProduceRequest {
            topic: "t".into(),
            acks: Acks::All,
            timeout_ms: 1,
            partitions: vec![ProducePartition { partition: 0, bytes: batch.len() as u32 }],
        };
        let valid = Frame::new(FrameKind::Produce, &request, batch).encode().to_vec();
        for _ in 0..20_000 {
            let mut input = valid.clone();
            for _ in 0..rng.gen_range(1..8) {
                let at = rng.gen_range(0..input.len());
                input[at] = rng.gen();
            }
            if rng.gen_bool(0.2) {
                input.truncate(rng.gen_range(0..input.len()));
            }
            fuzz_decode(&input);
            let noise: Vec<u8> = (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect();
            fuzz_decode(&noise);
        }
    }

    fn check_decode_error(bytes: &[u8], limit: usize, code: ErrorCode, needle: &str) {
        let err = Frame::decode(bytes, limit).unwrap_err();
        assert_eq!(err.code, code, "{err}");
        assert!(err.message.contains(needle), "message {:?} lacks {needle:?}", err.message);
    }

    #[test]
    fn round_trip() {
        let frame = Frame::new(FrameKind::ListTopics, &Empty {}, Bytes::from_static(b"raw"));
        let decoded = Frame::decode(&frame.encode(), 1024).unwrap();
        assert_eq!(decoded.kind, FrameKind::ListTopics);
        assert_eq!(&decoded.payload[..], b"raw");
        let _: Empty = decoded.header().unwrap();
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        check_decode_error(&[0, 0], 1024, ErrorCode::MalformedFrame, "length prefix");
        check_decode_error(&[0xff, 0xff, 0xff, 0xff], 1024, ErrorCode::FrameTooLarge, "max.frame.bytes = 1024");
        check_decode_error(&[0, 0, 0, 9, 1, 1], 1024, ErrorCode::MalformedFrame, "declares 9 bytes");
        check_decode_error(&[0, 0, 0, 2, 1, 1], 1024, ErrorCode::MalformedFrame, "shorter than");
        check_decode_error(&[0, 0, 0, 6, 9, 1, 0, 0, 0, 0], 1024, ErrorCode::UnsupportedVersion, "version 9");
        check_decode_error(&[0, 0, 0, 6, 1, 200, 0, 0, 0, 0], 1024, ErrorCode::UnknownRequest, "kind 200");
        check_decode_error(
            &[0, 0, 0, 6, 1, 1, 0xff, 0xff, 0xff, 0xff],
            1024,
            ErrorCode::MalformedFrame,
            "header length",
        );
    }

    #[test]
    fn topic_config_entries() {
        let c = TopicConfig::default()
            .with_entries([("retention.ms", "-1"), ("flush.mode", "interval"), ("flush.interval.ms", "50")])
            .unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.flush, FlushMode::IntervalMs(50));
        let err = TopicConfig::default().with_entries([("retention.bytes", "lots")]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
        assert!(err.message.contains("retention.bytes"), "{err}");
        let long = "x".repeat(TOPIC_CONFIG_VALUE_BYTES_MAX + 1);
        let err = TopicConfig::default().with_entries([("message.format.version", long.as_str())]).unwrap_err();
        assert!(err.message.contains("at most 1024 bytes"), "{err}");
        let err = TopicConfig::default().with_entries([("colour", "red")]).unwrap_err();
        assert!(err.message.contains("not a topic config Kafka or Weir defines"), "{err}");
        // Kafka's other topic configs are accepted, checked by kind, kept unless at their
        // default, and listed.
        let kafka = TopicConfig::default()
            .with_entries([
                ("message.format.version", "3.0-IV1"),
                ("cleanup.policy", "compact,delete"),
                ("min.insync.replicas", "2"),
                ("min.cleanable.dirty.ratio", "0.1"),
            ])
            .unwrap();
        assert_eq!(kafka.kafka.len(), 3, "the version is Kafka's default: {:?}", kafka.kafka);
        let listed: std::collections::BTreeMap<_, _> = kafka.entries().into_iter().collect();
        assert_eq!(listed["cleanup.policy"], "compact,delete");
        assert_eq!(listed["segment.bytes"], "1073741824");
        for (key, value, why) in [
            ("min.insync.replicas", "0", "at least 1"),
            ("cleanup.policy", "shred", "comma-separated list of delete, compact"),
            ("message.timestamp.type", "WallClock", "CreateTime, LogAppendTime"),
            ("preallocate", "yes", "true or false"),
            ("min.cleanable.dirty.ratio", "2", "from 0 to 1"),
        ] {
            let err = TopicConfig::default().with_entries([(key, value)]).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig);
            assert!(err.message.contains(key) && err.message.contains(why), "{err}");
        }
        let err = TopicConfig::default().with_entries([("retention.ms", "9223372036854775807")]).unwrap_err();
        assert!(err.message.contains("100 years"), "{err}");
        let century = RETENTION_MS_MAX.to_string();
        assert_eq!(
            TopicConfig::default().with_entries([("retention.ms", century.as_str())]).unwrap().retention_ms,
            Some(RETENTION_MS_MAX)
        );
    }

    #[test]
    fn header_of_wrong_shape_is_malformed() {
        let frame = Frame { kind: FrameKind::Produce, header: Bytes::from_static(b"{\"x\":1}"), payload: Bytes::new() };
        let err = frame.header::<ProduceRequest>().unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedFrame);
    }
}

// ---- Wasm modules: deployments of plugin components ------------------------------------------

/// Deploys a plugin; the frame's payload is the component's bytes. Deploying a name again makes
/// a new version of that deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployModuleRequest {
    pub name: String,
    /// `transform`, `partitioner` or `validator`.
    pub kind: String,
    /// Transforms: the topics read.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Transforms: where outputs that name no topic go.
    #[serde(default)]
    pub output: Option<String>,
    /// Partitioners and validators: the topic they serve.
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Per-batch deadline; the broker's default when absent.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Where records of failed batches go; `<name>.dlq` when absent.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Consecutive failed batches after which the deployment is paused.
    #[serde(default)]
    pub failures_max: Option<u32>,
    /// Sources and sinks (`weir connector create`): grants and settings.
    #[serde(default)]
    pub connector: Option<ConnectorConfig>,
}

/// What a connector is granted, and how it runs. A source writes to the request's `output`,
/// a sink reads its `inputs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorConfig {
    /// Read by name by the module; never logged nor shown back.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// The one host directory the module may use (absolute), seen by it as `/data`.
    #[serde(default)]
    pub dir: Option<String>,
    /// May the module write in `dir`? Read-only otherwise.
    #[serde(default)]
    pub dir_writable: bool,
    /// Sources: tasks polling (default 1), each on the leader of one partition of the topic.
    #[serde(default)]
    pub tasks_max: Option<u32>,
    /// Sources: the pause after a poll that found nothing (default 200 ms).
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// Sources: at most this many records per poll (default 500).
    #[serde(default)]
    pub batch_records: Option<u32>,
    /// `host:port` entries the module may send HTTP requests to (wasi:http); none by default.
    #[serde(default)]
    pub http_allow: Vec<String>,
    /// Deployed transforms the records pass through, in order (a source's before its topic, a
    /// sink's before the module).
    #[serde(default)]
    pub transforms: Vec<String>,
}

/// A connector's grants as `describe` shows them: secrets by name only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorDescription {
    pub secret_names: Vec<String>,
    pub dir: Option<String>,
    pub dir_writable: bool,
    pub tasks_max: u32,
    pub poll_interval_ms: u64,
    pub batch_records: u32,
    #[serde(default)]
    pub http_allow: Vec<String>,
    #[serde(default)]
    pub transforms: Vec<String>,
}

/// A consumer group as `ListGroups` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupListing {
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub state: String,
    pub protocol_type: String,
    pub members: usize,
    /// Records behind the high watermarks, over every partition the group committed.
    pub total_lag: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListGroupsResponse {
    pub groups: Vec<GroupListing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupTopicPartition {
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// What the member was assigned (Kafka's consumer protocol; empty for other protocols).
    pub assignment: Vec<GroupTopicPartition>,
}

/// A committed offset with the partition's high watermark and the lag between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupOffset {
    pub topic: String,
    pub partition: u32,
    pub committed: i64,
    /// Absent when the partition no longer exists (or is not readable here).
    pub high_watermark: Option<i64>,
    pub lag: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupDescribed {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub generation_id: i32,
    pub members: Vec<GroupMemberView>,
    pub offsets: Vec<GroupOffset>,
    pub total_lag: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupNameRequest {
    pub group_id: String,
}

/// Where a reset moves a group's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first offset at or after this time (ms since the epoch); the end when none is.
    Timestamp(i64),
    /// These offsets, by partition.
    Offsets(std::collections::BTreeMap<u32, i64>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetOffsetsRequest {
    pub group_id: String,
    pub topic: String,
    pub to: ResetTo,
    /// Every partition of the topic when absent (with `Offsets`, the partitions it names).
    #[serde(default)]
    pub partitions: Option<Vec<u32>>,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffsetMove {
    pub topic: String,
    pub partition: u32,
    /// The committed offset before; absent when there was none.
    pub from: Option<i64>,
    pub to: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetOffsetsResponse {
    pub dry_run: bool,
    pub offsets: Vec<OffsetMove>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleNameRequest {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleAction {
    Pause,
    Resume,
    /// Back to the version before the active one.
    Rollback,
    Remove,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleActionRequest {
    pub name: String,
    pub action: ModuleAction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListModulesResponse {
    pub modules: Vec<ModuleDescription>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleDescription {
    pub name: String,
    pub kind: String,
    /// The version in use; versions count from 1.
    pub active_version: u32,
    pub versions: Vec<ModuleVersionDescription>,
    /// Why the deployment is paused; `None` while it runs.
    pub paused: Option<String>,
    pub metrics: ModuleMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleVersionDescription {
    pub version: u32,
    pub sha256: String,
    pub size_bytes: u64,
    pub deployed_at_ms: i64,
    pub inputs: Vec<String>,
    pub output: Option<String>,
    pub topic: Option<String>,
    pub params: std::collections::BTreeMap<String, String>,
    pub deadline_ms: u64,
    pub memory_bytes: u64,
    pub dead_letter_topic: String,
    pub failures_max: u32,
    /// Sources and sinks.
    #[serde(default)]
    pub connector: Option<ConnectorDescription>,
}

/// Counted since the broker started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModuleMetrics {
    pub records_in: u64,
    pub records_out: u64,
    pub records_rejected: u64,
    pub records_dead_lettered: u64,
    pub batches: u64,
    pub batches_failed: u64,
    pub failures_consecutive: u32,
    pub call_latency_us_p50: u64,
    pub call_latency_us_p99: u64,
    /// Wall time spent inside the module.
    pub call_time_us_total: u64,
    pub memory_high_water_bytes: u64,
    pub last_error: Option<String>,
    /// Counters the module adds to with `counter-add`.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// The last lines it logged (at most 50), newest last: `ms LEVEL instance: message`.
    #[serde(default)]
    pub recent_logs: Vec<String>,
    /// Transforms and sinks: next input offset per `topic/partition`.
    pub progress: std::collections::BTreeMap<String, i64>,
    /// Sources: each task's position (UTF-8, or hex), as last stored.
    #[serde(default)]
    pub positions: std::collections::BTreeMap<String, String>,
    /// Transforms and sinks: records behind the high watermark per `topic/partition`.
    #[serde(default)]
    pub lag: std::collections::BTreeMap<String, i64>,
}
