//! Errors that cross the wire. Codes are stable: a retired code is never reused.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
#[repr(u16)]
pub enum ErrorCode {
    /// A bug or an unexpected condition in the broker; the message says what.
    Internal = 1,
    /// The frame is longer than the broker's or client's frame limit.
    FrameTooLarge = 2,
    /// The frame is truncated, garbage, or its header does not parse.
    MalformedFrame = 3,
    UnsupportedVersion = 4,
    UnknownRequest = 5,
    UnknownTopic = 6,
    UnknownPartition = 7,
    InvalidTopicName = 8,
    TopicAlreadyExists = 9,
    InvalidPartitions = 10,
    /// A record batch failed its CRC-32C check or its header is inconsistent.
    CorruptBatch = 11,
    /// A record batch is larger than the topic's max message bytes.
    MessageTooLarge = 12,
    OffsetOutOfRange = 13,
    InvalidConfig = 14,
    InvalidRequest = 15,
    Storage = 16,
    RequestTimedOut = 17,
    /// The broker is at a configured limit (connections, in-flight requests, queue depth).
    LimitReached = 18,
    /// The client could not reach the broker or lost the connection.
    Connection = 19,
    /// An idempotent producer's batch does not follow its previous sequence number.
    OutOfOrderSequence = 20,
    /// An idempotent producer's batch repeats a sequence older than the broker remembers.
    DuplicateSequence = 21,
    /// An idempotent producer's epoch is older than the one the broker has seen (fenced).
    InvalidProducerEpoch = 22,
    /// The group does not know this member (expired, or never joined): join again.
    UnknownMemberId = 23,
    /// The request names another generation of the group: rejoin.
    IllegalGeneration = 24,
    /// The group is rebalancing: rejoin.
    RebalanceInProgress = 25,
    NonEmptyGroup = 26,
    GroupNotFound = 27,
    InvalidSessionTimeout = 28,
    InconsistentGroupProtocol = 29,
    InvalidGroupId = 30,
    CoordinatorNotAvailable = 31,
    /// A record failed the topic's schema validation; the message names the record and why.
    InvalidRecord = 32,
    /// No module deployment of that name.
    UnknownModule = 33,
    /// The file is not a plugin component this broker accepts (not Wasm, a core module, a
    /// refused import, a missing export), or the deployment's settings are invalid.
    InvalidModule = 34,
    /// A plugin failed on the request's records (trap, deadline, memory cap), or its
    /// deployment is paused after repeated failures.
    ModuleFailed = 35,
    /// A replication factor the cluster cannot give (more replicas than brokers).
    InvalidReplicationFactor = 36,
    /// A record timestamp further ahead of the broker's clock than it accepts.
    InvalidTimestamp = 37,
    /// A batch names a producer id this cluster never handed out.
    UnknownProducerId = 38,
    /// The cluster's controller has no leader this broker can reach (an election is under
    /// way, or too few controller voters are up); retry.
    NotController = 39,
    /// The partition is led by another broker (the message names it); ask that one, after
    /// refreshing metadata.
    NotLeaderOrFollower = 40,
    /// The partition has no leader: every replica that may lead is fenced; retry later.
    LeaderNotAvailable = 41,
    /// `acks=all` was asked but fewer replicas are in sync than the topic's
    /// `min.insync.replicas`: nothing was written; retry when the replicas are back.
    NotEnoughReplicas = 42,
    /// Written on the leader, but the in-sync replicas fell below `min.insync.replicas`
    /// before they all had it: not acknowledged; a retry of an idempotent producer is stored once.
    NotEnoughReplicasAfterAppend = 43,
    /// The request names an older leader epoch than the partition's: refresh metadata.
    FencedLeaderEpoch = 44,
    /// The request names a newer leader epoch than this broker knows: it is behind; retry.
    UnknownLeaderEpoch = 45,
    /// A reassignment's target replicas are invalid (none, a broker twice, a broker that is
    /// not live), or it would leave no in-sync replica to lead.
    InvalidReplicaAssignment = 46,
    /// A cancel of a partition reassignment when none is under way.
    NoReassignmentInProgress = 47,
}

impl ErrorCode {
    /// Whether a client may retry the same request and expect a different outcome.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            Self::RequestTimedOut
                | Self::LimitReached
                | Self::Connection
                | Self::Storage
                | Self::NotController
                | Self::NotLeaderOrFollower
                | Self::LeaderNotAvailable
                | Self::NotEnoughReplicas
                | Self::NotEnoughReplicasAfterAppend
                | Self::FencedLeaderEpoch
                | Self::UnknownLeaderEpoch
        )
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code as u16
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = String;
    fn try_from(value: u16) -> Result<Self, String> {
        use ErrorCode::*;
        Ok(match value {
            1 => Internal,
            2 => FrameTooLarge,
            3 => MalformedFrame,
            4 => UnsupportedVersion,
            5 => UnknownRequest,
            6 => UnknownTopic,
            7 => UnknownPartition,
            8 => InvalidTopicName,
            9 => TopicAlreadyExists,
            10 => InvalidPartitions,
            11 => CorruptBatch,
            12 => MessageTooLarge,
            13 => OffsetOutOfRange,
            14 => InvalidConfig,
            15 => InvalidRequest,
            16 => Storage,
            17 => RequestTimedOut,
            18 => LimitReached,
            19 => Connection,
            20 => OutOfOrderSequence,
            21 => DuplicateSequence,
            22 => InvalidProducerEpoch,
            23 => UnknownMemberId,
            24 => IllegalGeneration,
            25 => RebalanceInProgress,
            26 => NonEmptyGroup,
            27 => GroupNotFound,
            28 => InvalidSessionTimeout,
            29 => InconsistentGroupProtocol,
            30 => InvalidGroupId,
            31 => CoordinatorNotAvailable,
            32 => InvalidRecord,
            33 => UnknownModule,
            34 => InvalidModule,
            35 => ModuleFailed,
            36 => InvalidReplicationFactor,
            37 => InvalidTimestamp,
            38 => UnknownProducerId,
            39 => NotController,
            40 => NotLeaderOrFollower,
            41 => LeaderNotAvailable,
            42 => NotEnoughReplicas,
            43 => NotEnoughReplicasAfterAppend,
            44 => FencedLeaderEpoch,
            45 => UnknownLeaderEpoch,
            46 => InvalidReplicaAssignment,
            47 => NoReassignmentInProgress,
            other => return Err(format!("unknown error code {other}")),
        })
    }
}

/// An error with its stable code and a message that names the field or limit involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (error {code:?}, code {})", *code as u16)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    /// For a refused record: its index among the records the request sent for the partition
    /// (Kafka's per-record produce errors, KIP-467).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_index: Option<u32>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), record_index: None }
    }

    /// The same error, naming the record it is about.
    pub fn for_record(mut self, index: usize) -> Self {
        self.record_index = u32::try_from(index).ok();
        self
    }
}

/// Errors of the Rust client.
#[cfg(feature = "client")]
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Broker(#[from] WireError),
    #[error("connection to {addr} failed: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("record batch: {0}")]
    Batch(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the producer is closed")]
    Closed,
}

#[cfg(feature = "client")]
impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker(e) => Some(e.code),
            Self::Connect { .. } | Self::ConnectionLost(_) => Some(ErrorCode::Connection),
            _ => None,
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.code().is_some_and(ErrorCode::is_retriable)
    }
}
