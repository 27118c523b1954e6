//! The Kafka wire protocol front end: TCP, decoded and encoded with the `kafka-protocol` crate,
//! translated to calls on the [`Broker`] service and the [`GroupCoordinator`]. No rule lives
//! here: this module maps names, versions and error codes.
//!
//! Requests of one connection are answered in order, as Kafka clients expect, while several are
//! in flight: produce requests are queued on the log in arrival order before the next request
//! is read, so pipelining keeps records in order.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use weir_sdk::batch::put_unsigned_varint;
use weir_sdk::wire::OffsetSpec;
use weir_sdk::{ErrorCode, WireError};

use crate::budget::{Budgets, ConnectionBudget, Held};
use crate::groups::{CommittedOffset, GroupCoordinator, GroupError, GroupState, JoinRequest};
use crate::service::{Broker, CommitError, ConfigChange, Fetch, FetchFrom, FetchedPartition, NewTopic, Produce};

/// Kafka error codes this front end sends (`org.apache.kafka.common.protocol.Errors`).
mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_TIMESTAMP: i16 = 32;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const INVALID_RECORD: i16 = 87;
}

fn wire_code(e: &WireError) -> i16 {
    match e.code {
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => code::UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode::MessageTooLarge => code::MESSAGE_TOO_LARGE,
        ErrorCode::CorruptBatch => code::CORRUPT_MESSAGE,
        ErrorCode::InvalidTopicName => code::INVALID_TOPIC_EXCEPTION,
        ErrorCode::TopicAlreadyExists => code::TOPIC_ALREADY_EXISTS,
        ErrorCode::InvalidPartitions => code::INVALID_PARTITIONS,
        ErrorCode::InvalidConfig => code::INVALID_CONFIG,
        ErrorCode::OffsetOutOfRange => code::OFFSET_OUT_OF_RANGE,
        ErrorCode::RequestTimedOut => code::REQUEST_TIMED_OUT,
        ErrorCode::InvalidRequest | ErrorCode::MalformedFrame => code::INVALID_REQUEST,
        ErrorCode::Storage => code::KAFKA_STORAGE_ERROR,
        ErrorCode::OutOfOrderSequence => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorCode::DuplicateSequence => code::DUPLICATE_SEQUENCE_NUMBER,
        ErrorCode::InvalidProducerEpoch => code::INVALID_PRODUCER_EPOCH,
        ErrorCode::InvalidRecord => code::INVALID_RECORD,
        ErrorCode::InvalidReplicationFactor => code::INVALID_REPLICATION_FACTOR,
        ErrorCode::InvalidTimestamp => code::INVALID_TIMESTAMP,
        ErrorCode::UnknownProducerId => code::UNKNOWN_PRODUCER_ID,
        ErrorCode::NotController => code::NOT_CONTROLLER,
        ErrorCode::NotLeaderOrFollower => code::NOT_LEADER_OR_FOLLOWER,
        ErrorCode::LeaderNotAvailable => code::LEADER_NOT_AVAILABLE,
        ErrorCode::NotEnoughReplicas => code::NOT_ENOUGH_REPLICAS,
        ErrorCode::NotEnoughReplicasAfterAppend => code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode::FencedLeaderEpoch => code::FENCED_LEADER_EPOCH,
        ErrorCode::UnknownLeaderEpoch => code::UNKNOWN_LEADER_EPOCH,
        ErrorCode::InvalidReplicaAssignment => code::INVALID_REPLICA_ASSIGNMENT,
        ErrorCode::NoReassignmentInProgress => code::NO_REASSIGNMENT_IN_PROGRESS,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

fn group_code(e: GroupError) -> i16 {
    match e {
        GroupError::UnknownMember => code::UNKNOWN_MEMBER_ID,
        GroupError::IllegalGeneration => code::ILLEGAL_GENERATION,
        GroupError::RebalanceInProgress => code::REBALANCE_IN_PROGRESS,
        GroupError::NonEmptyGroup => code::NON_EMPTY_GROUP,
        GroupError::GroupIdNotFound => code::GROUP_ID_NOT_FOUND,
        GroupError::InvalidSessionTimeout => code::INVALID_SESSION_TIMEOUT,
        GroupError::InconsistentProtocol => code::INCONSISTENT_GROUP_PROTOCOL,
        GroupError::InvalidGroupId => code::INVALID_GROUP_ID,
        GroupError::Storage => code::KAFKA_STORAGE_ERROR,
        GroupError::CoordinatorNotAvailable => code::COORDINATOR_NOT_AVAILABLE,
        GroupError::InvalidRebalanceTimeout | GroupError::MetadataTooLarge | GroupError::ChangeTooLarge => {
            code::INVALID_REQUEST
        }
        GroupError::GroupMaxSizeReached => code::GROUP_MAX_SIZE_REACHED,
        GroupError::OffsetMetadataTooLarge => code::OFFSET_METADATA_TOO_LARGE,
        GroupError::GroupsMaxReached => code::POLICY_VIOLATION,
    }
}

fn result_code<T>(r: &Result<T, GroupError>) -> i16 {
    r.as_ref().err().map_or(code::NONE, |e| group_code(*e))
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// The versions this front end implements, intersected with what the crate can encode.
fn supported_versions() -> Vec<(ApiKey, i16, i16)> {
    let mine = [
        (ApiKey::Produce, 3, 11),
        (ApiKey::Fetch, 4, 12),
        (ApiKey::ListOffsets, 1, 8),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::OffsetCommit, 2, 8),
        (ApiKey::OffsetFetch, 1, 8),
        (ApiKey::FindCoordinator, 0, 4),
        (ApiKey::JoinGroup, 0, 9),
        (ApiKey::Heartbeat, 0, 4),
        (ApiKey::LeaveGroup, 0, 5),
        (ApiKey::SyncGroup, 0, 5),
        (ApiKey::DescribeGroups, 0, 5),
        (ApiKey::ListGroups, 0, 4),
        (ApiKey::ApiVersions, 0, 3),
        (ApiKey::CreateTopics, 2, 7),
        (ApiKey::DeleteTopics, 1, 6),
        (ApiKey::DeleteGroups, 0, 2),
        (ApiKey::InitProducerId, 0, 4),
        (ApiKey::DescribeConfigs, 1, 4),
        (ApiKey::AlterConfigs, 0, 2),
        (ApiKey::CreatePartitions, 0, 3),
        (ApiKey::OffsetDelete, 0, 0),
        (ApiKey::IncrementalAlterConfigs, 0, 1),
        (ApiKey::DescribeCluster, 0, 1),
        (ApiKey::DeleteRecords, 0, 2),
        (ApiKey::AlterPartitionReassignments, 0, 0),
        (ApiKey::ListPartitionReassignments, 0, 0),
        (ApiKey::ElectLeaders, 0, 2),
    ];
    mine.into_iter()
        .map(|(key, min, max)| {
            let valid = key.valid_versions();
            (key, min.max(valid.min), max.min(valid.max))
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Host and port clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    pub advertised_port: u16,
    pub request_bytes_max: usize,
    pub connections_max: usize,
    pub in_flight_per_connection_max: usize,
    pub node_id: i32,
    /// A connection that sends no whole request for this long is closed (Kafka's
    /// `connections.max.idle.ms`); a request trickled in slower than that is cut off too.
    pub idle_timeout: std::time::Duration,
    /// Budget a Fetch takes for its answer, on top of the request's bytes.
    pub fetch_answer_bytes: usize,
    /// Largest answer sent; past it the connection is closed.
    pub response_bytes_max: usize,
}

#[derive(Clone)]
pub struct KafkaContext {
    pub broker: Broker,
    pub groups: GroupCoordinator,
    pub config: Arc<KafkaConfig>,
    pub budgets: Budgets,
}

pub struct KafkaServer {
    listener: TcpListener,
}

impl KafkaServer {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await? })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn serve(self, ctx: KafkaContext) {
        let connections = Arc::new(Semaphore::new(ctx.config.connections_max));
        let mut back_off = ACCEPT_BACK_OFF_MIN;
        loop {
            let (stream, remote) = match self.listener.accept().await {
                Ok(accepted) => {
                    back_off = ACCEPT_BACK_OFF_MIN;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE) or another accept failure: wait before
                    // trying again instead of spinning on the error.
                    tracing::warn!(error = %e, back_off_ms = back_off.as_millis(), "kafka accept failed; backing off");
                    tokio::time::sleep(back_off).await;
                    back_off = (back_off * 2).min(ACCEPT_BACK_OFF_MAX);
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(%remote, limit = ctx.config.connections_max, "refusing kafka connection: kafka connections_max reached");
                continue;
            };
            let budget = match ctx.budgets.connect(remote.ip()) {
                Ok(budget) => budget,
                Err(e) => {
                    tracing::warn!(%remote, "refusing kafka connection: {e}");
                    continue;
                }
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve_connection(stream, remote, ctx, budget).await {
                    tracing::debug!(%remote, error = %e, "kafka connection ended");
                }
            });
        }
    }
}

/// Writes an answer's pieces in order, as many at once as one vectored write takes.
async fn write_pieces(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    mut pieces: Vec<Bytes>,
) -> std::io::Result<()> {
    /// Pieces handed to one write call (the kernel takes up to 1024).
    const SLICES_MAX: usize = 64;
    pieces.retain(|p| !p.is_empty());
    let mut first = 0;
    while first < pieces.len() {
        let mut written = {
            let slices: Vec<std::io::IoSlice<'_>> =
                pieces[first..].iter().take(SLICES_MAX).map(|p| std::io::IoSlice::new(p)).collect();
            writer.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let piece = &mut pieces[first];
            let n = written.min(piece.len());
            piece.advance(n);
            written -= n;
            if piece.is_empty() {
                first += 1;
            }
        }
    }
    Ok(())
}

/// Shortest and longest wait after a failed accept.
const ACCEPT_BACK_OFF_MIN: std::time::Duration = std::time::Duration::from_millis(10);
const ACCEPT_BACK_OFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: KafkaContext,
    budget: ConnectionBudget,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    // Responses in request order: the reader queues one receiver per request, with the budget
    // the request holds until its answer is written.
    let (order_tx, mut order_rx) =
        mpsc::channel::<(oneshot::Receiver<Option<Vec<Bytes>>>, Held)>(ctx.config.in_flight_per_connection_max);
    let idle = ctx.config.idle_timeout;
    let writer_task = tokio::spawn(async move {
        while let Some((rx, held)) = order_rx.recv().await {
            match rx.await {
                // A client that does not take its answers within the idle timeout loses the
                // connection, and gives back the budget its requests hold.
                Ok(Some(pieces)) => match tokio::time::timeout(idle, write_pieces(&mut writer, pieces)).await {
                    Ok(written) => written?,
                    Err(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the client did not take an answer within the idle timeout",
                        ))
                    }
                },
                Ok(None) => {}
                Err(_) => break,
            }
            drop(held);
        }
        Ok::<_, std::io::Error>(())
    });
    let client_host = format!("/{}", remote.ip());
    let produces = Arc::new(tokio::sync::RwLock::new(()));
    loop {
        // The next request, whole, within the idle timeout: an idle or trickling client does
        // not hold its connection (and its slot under connections_max) for ever.
        let size = match tokio::time::timeout(idle, reader.read_i32()).await {
            Err(_) => {
                tracing::debug!(%remote, idle_ms = idle.as_millis(), "kafka connection idle; closing it");
                break;
            }
            Ok(Ok(size)) => size,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e.into()),
        };
        let Some(size) = usize::try_from(size).ok().filter(|s| (8..=ctx.config.request_bytes_max).contains(s)) else {
            // As Kafka does (socket.request.max.bytes): the stream cannot be resynchronised.
            tracing::warn!(%remote, size, limit = ctx.config.request_bytes_max, "kafka request size outside 8 ..= kafka request_bytes_max; closing the connection");
            break;
        };
        // The request's bytes are taken from the connection's budget before they are read;
        // out of budget, this connection is not read from until earlier answers are sent.
        let mut held = match budget.take(size).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(%remote, "kafka request refused: {e}; closing the connection");
                break;
            }
        };
        // Read into the buffer's spare capacity, not a zero-filled buffer: a 1 MiB produce
        // request is not written twice.
        let mut buf = BytesMut::with_capacity(size);
        let read_whole = async {
            while buf.len() < size {
                let missing = (size - buf.len()) as u64;
                if (&mut reader).take(missing).read_buf(&mut buf).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
            }
            Ok::<_, std::io::Error>(())
        };
        // A connection that ends (or fails) inside a request is closed: nothing of a partly
        // read request is decoded.
        match tokio::time::timeout(idle, read_whole).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                tracing::debug!(%remote, size, "kafka request not sent whole within the idle timeout; closing");
                break;
            }
        }
        let (tx, rx) = oneshot::channel();
        let decoded = decode_request(buf.freeze());
        if matches!(decoded, Ok(Decoded { body: RequestKind::Fetch(_), .. })) {
            match budget.take(ctx.config.fetch_answer_bytes).await {
                Ok(answer) => held.add(answer),
                Err(e) => {
                    tracing::warn!(%remote, "kafka fetch refused: {e}; closing the connection");
                    break;
                }
            }
        }
        order_tx.send((rx, held)).await?;
        let ctx = ctx.clone();
        let (header, api_key, api_version, body) = match decoded {
            Ok(Decoded { header, api_key, api_version, body }) => (header, api_key, api_version, body),
            Err(DecodeError::Unsupported { correlation_id, api_key, api_version }) => {
                // An ApiVersions request of a newer version than ours lands here too: clients
                // expect exactly this v0-encoded error with our version list, and retry with a
                // version from it.
                tracing::debug!(%remote, api_key, api_version, "unsupported kafka api or version");
                let _ = tx.send(Some(vec![unsupported_response(correlation_id)]));
                continue;
            }
            Err(DecodeError::Malformed(e)) => {
                tracing::debug!(%remote, error = %e, "malformed kafka request; closing");
                let _ = tx.send(None);
                break;
            }
        };
        let correlation_id = header.correlation_id;
        let client_id = header.client_id.as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default();
        let request_ctx = RequestContext {
            api_key,
            api_version,
            correlation_id,
            client_id,
            client_host: client_host.clone(),
            response_bytes_max: ctx.config.response_bytes_max,
            producer_id_wait: match api_key {
                ApiKey::InitProducerId => budget.take_producer_id().err(),
                _ => None,
            },
        };
        // Kafka's per-connection rule: a request takes effect after the ones before it. Produce
        // queues its appends here, before the next request is read, and holds a read guard of
        // `produces` until they are stored; any other request first waits for the produces
        // before it (the write guard). Fetches then run beside later requests (a long poll
        // must not hold the connection); every other request is handled before the next one
        // is read.
        if let RequestKind::Produce(produce) = body {
            let stored = produces.clone().read_owned().await;
            let pending = produce_enqueue(&ctx, api_version, produce).await;
            tokio::spawn(async move {
                let (acks, response) = pending.await;
                drop(stored);
                if acks == 0 {
                    let _ = tx.send(None);
                } else if let Some(bytes) = encode_response(&request_ctx, ResponseKind::Produce(response)) {
                    let _ = tx.send(Some(vec![bytes]));
                }
                // Otherwise `tx` is dropped unsent, which closes the connection.
            });
            continue;
        }
        let earlier_produces = produces.clone().write_owned();
        let answer = async move {
            drop(earlier_produces.await);
            // A fetch answer's batches go to the socket as they were read, not copied into it.
            let answer = match body {
                RequestKind::Fetch(r) => fetch(&ctx, r).await.encode(&request_ctx),
                body => encode_response(&request_ctx, handle(&ctx, &request_ctx, body).await).map(|b| vec![b]),
            };
            if let Some(pieces) = answer {
                let _ = tx.send(Some(pieces));
            }
        };
        if matches!(api_key, ApiKey::Fetch) {
            tokio::spawn(answer);
        } else {
            answer.await;
        }
    }
    drop(order_tx);
    let _ = writer_task.await;
    Ok(())
}

struct RequestContext {
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    client_id: String,
    client_host: String,
    response_bytes_max: usize,
    /// For an InitProducerId past the address's allowance: how long until one is left.
    producer_id_wait: Option<std::time::Duration>,
}

/// The encoded size of a response body, without encoding it.
fn response_size(response: &ResponseKind, version: i16) -> anyhow::Result<usize> {
    macro_rules! sizes {
        ($($kind:ident),*) => {
            match response {
                $(ResponseKind::$kind(r) => r.compute_size(version),)*
                _ => Ok(0),
            }
        };
    }
    sizes!(
        DeleteRecords,
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteGroups,
        InitProducerId,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        OffsetDelete,
        IncrementalAlterConfigs,
        DescribeCluster
    )
}

/// Whether an answer of `size` bytes exceeds `response_bytes_max`; says so in the log if it does.
fn too_large(ctx: &RequestContext, size: usize) -> bool {
    if size <= ctx.response_bytes_max {
        return false;
    }
    tracing::warn!(
        api_key = ?ctx.api_key,
        bytes = size,
        limit = ctx.response_bytes_max,
        client_id = %ctx.client_id,
        "a kafka answer would exceed response_bytes_max; closing the connection instead"
    );
    true
}

/// Encodes a response; `None` when it would exceed `response_bytes_max` (the caller closes
/// the connection, as Kafka does with what it cannot frame), sized before anything is
/// encoded.
fn encode_response(ctx: &RequestContext, response: ResponseKind) -> Option<Bytes> {
    if response_size(&response, ctx.api_version).is_ok_and(|size| too_large(ctx, size)) {
        return None;
    }
    Some(encode_response_body(ctx, response))
}

fn encode_response_body(ctx: &RequestContext, response: ResponseKind) -> Bytes {
    let mut body = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(ctx.correlation_id);
    let header_version = ctx.api_key.response_header_version(ctx.api_version);
    let mut out = BytesMut::new();
    let encoded = header.encode(&mut body, header_version).and_then(|()| response.encode(&mut body, ctx.api_version));
    if let Err(e) = encoded {
        tracing::error!(api_key = ?ctx.api_key, version = ctx.api_version, error = %e, "encoding a kafka response failed");
        return unsupported_response(ctx.correlation_id);
    }
    let Ok(size) = i32::try_from(body.len()) else {
        tracing::error!(api_key = ?ctx.api_key, bytes = body.len(), "a kafka response over 2 GiB cannot be framed");
        return unsupported_response(ctx.correlation_id);
    };
    out.put_i32(size);
    out.extend_from_slice(&body);
    out.freeze()
}

/// For an API key or version this broker does not implement: the correlation id and
/// UNSUPPORTED_VERSION, the shape of an ApiVersions v0 error, which clients understand.
fn unsupported_response(correlation_id: i32) -> Bytes {
    let mut out = BytesMut::new();
    let response =
        ApiVersionsResponse::default().with_error_code(code::UNSUPPORTED_VERSION).with_api_keys(api_version_list());
    let mut body = BytesMut::new();
    body.put_i32(correlation_id);
    response.encode(&mut body, 0).expect("ApiVersions v0 encodes");
    // An ApiVersions answer is a few hundred bytes.
    out.put_i32(i32::try_from(body.len()).expect("a few hundred bytes"));
    out.extend_from_slice(&body);
    out.freeze()
}

fn api_version_list() -> Vec<api_versions_response::ApiVersion> {
    supported_versions()
        .into_iter()
        .map(|(key, min, max)| {
            api_versions_response::ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

async fn handle(ctx: &KafkaContext, req: &RequestContext, body: RequestKind) -> ResponseKind {
    match body {
        RequestKind::ApiVersions(_) => {
            ResponseKind::ApiVersions(ApiVersionsResponse::default().with_api_keys(api_version_list()))
        }
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(ctx, req.api_version, r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(ctx, req.api_version, r)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(create_topics(ctx, req.api_version, r).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(delete_topics(ctx, req.api_version, r).await),
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(delete_records(ctx, r).await),
        RequestKind::AlterPartitionReassignments(r) => {
            ResponseKind::AlterPartitionReassignments(alter_partition_reassignments(ctx, r).await)
        }
        RequestKind::ElectLeaders(r) => ResponseKind::ElectLeaders(elect_leaders(ctx, r).await),
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(list_partition_reassignments(ctx, r))
        }
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(create_partitions(ctx, r).await),
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(describe_configs(ctx, req.api_version, r)),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(alter_configs(ctx, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs(ctx, r).await)
        }
        RequestKind::DescribeCluster(_) => ResponseKind::DescribeCluster(
            DescribeClusterResponse::default()
                .with_cluster_id(s("weir"))
                .with_controller_id(BrokerId(controller_id(ctx)))
                .with_brokers(
                    kafka_brokers(ctx)
                        .into_iter()
                        .map(|(id, host, port)| {
                            describe_cluster_response::DescribeClusterBroker::default()
                                .with_broker_id(BrokerId(id))
                                .with_host(s(host))
                                .with_port(port)
                        })
                        .collect(),
                ),
        ),
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(find_coordinator(ctx, req, r)),
        RequestKind::InitProducerId(_) if req.producer_id_wait.is_some() => {
            let wait = req.producer_id_wait.unwrap_or_default();
            ResponseKind::InitProducerId(
                InitProducerIdResponse::default()
                    .with_error_code(code::THROTTLING_QUOTA_EXCEEDED)
                    .with_throttle_time_ms(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
        }
        RequestKind::InitProducerId(_) => {
            let response = match ctx.broker.init_producer_id().await {
                Ok(id) => InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(id.producer_id))
                    .with_producer_epoch(id.producer_epoch),
                Err(e) => InitProducerIdResponse::default()
                    .with_error_code(wire_code(&e))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            };
            ResponseKind::InitProducerId(response)
        }
        // In a cluster a group is served by the one broker FindCoordinator names; another
        // answers NOT_COORDINATOR, so a client that found an earlier coordinator looks again
        // and a group never has two coordinators.
        RequestKind::JoinGroup(r) if elsewhere(ctx, r.group_id.0.as_str()) => {
            ResponseKind::JoinGroup(JoinGroupResponse::default().with_error_code(code::NOT_COORDINATOR))
        }
        RequestKind::SyncGroup(r) if elsewhere(ctx, r.group_id.0.as_str()) => {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code::NOT_COORDINATOR))
        }
        RequestKind::Heartbeat(r) if elsewhere(ctx, r.group_id.0.as_str()) => {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code::NOT_COORDINATOR))
        }
        RequestKind::LeaveGroup(r) if elsewhere(ctx, r.group_id.0.as_str()) => {
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(code::NOT_COORDINATOR))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(join_group(ctx, req, r).await),
        RequestKind::SyncGroup(r) => {
            let assignments =
                r.assignments.into_iter().map(|a| (a.member_id.as_str().to_owned(), a.assignment)).collect();
            let outcome =
                ctx.groups.sync(r.group_id.0.as_str(), r.generation_id, r.member_id.as_str(), assignments).await;
            let response = match outcome {
                Ok(assignment) => SyncGroupResponse::default()
                    .with_assignment(assignment)
                    .with_protocol_type(r.protocol_type)
                    .with_protocol_name(r.protocol_name),
                Err(e) => SyncGroupResponse::default().with_error_code(group_code(e)),
            };
            ResponseKind::SyncGroup(response)
        }
        RequestKind::Heartbeat(r) => {
            let outcome = ctx.groups.heartbeat(r.group_id.0.as_str(), r.generation_id, r.member_id.as_str());
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(result_code(&outcome)))
        }
        RequestKind::LeaveGroup(r) => {
            let mut ids: Vec<String> = r.members.iter().map(|m| m.member_id.as_str().to_owned()).collect();
            if ids.is_empty() {
                ids.push(r.member_id.as_str().to_owned());
            }
            let outcomes = ctx.groups.leave(r.group_id.0.as_str(), &ids);
            let members = ids
                .iter()
                .zip(&outcomes)
                .map(|(id, o)| {
                    leave_group_response::MemberResponse::default()
                        .with_member_id(s(id.clone()))
                        .with_error_code(result_code(o))
                })
                .collect();
            let top = if req.api_version < 3 { outcomes.first().map_or(code::NONE, result_code) } else { code::NONE };
            let members = if req.api_version >= 3 { members } else { Vec::new() };
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(top).with_members(members))
        }
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offset_commit(ctx, r).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch(ctx, req, r)),
        RequestKind::ListGroups(_) => {
            let groups = ctx
                .groups
                .list()
                .into_iter()
                .map(|(id, protocol_type, state)| {
                    list_groups_response::ListedGroup::default()
                        .with_group_id(GroupId(s(id)))
                        .with_protocol_type(s(protocol_type))
                        .with_group_state(if req.api_version >= 4 { s(state_name(state)) } else { StrBytes::default() })
                        .with_group_type(if req.api_version >= 5 { s("classic") } else { StrBytes::default() })
                })
                .collect();
            ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(groups))
        }
        RequestKind::DescribeGroups(r) => {
            // Each group once, however often the request names it.
            let mut seen = std::collections::HashSet::new();
            let groups = r
                .groups
                .iter()
                .filter(|id| seen.insert(id.0.as_str().to_owned()))
                .map(|id| match ctx.groups.describe(id.0.as_str()) {
                    Some(d) => describe_groups_response::DescribedGroup::default()
                        .with_group_id(id.clone())
                        .with_group_state(s(state_name(d.state)))
                        .with_protocol_type(s(d.protocol_type))
                        .with_protocol_data(s(d.protocol_name))
                        .with_members(
                            d.members
                                .into_iter()
                                .map(|m| {
                                    describe_groups_response::DescribedGroupMember::default()
                                        .with_member_id(s(m.member_id))
                                        .with_client_id(s(m.client_id))
                                        .with_client_host(s(m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        ),
                    None => describe_groups_response::DescribedGroup::default()
                        .with_group_id(id.clone())
                        .with_group_state(s("Dead")),
                })
                .collect();
            ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
        }
        RequestKind::DeleteGroups(r) => {
            let mut results = Vec::new();
            // Each group once, however often the request names it.
            let mut seen = std::collections::HashSet::new();
            for id in r.groups_names.iter().filter(|id| seen.insert(id.0.as_str().to_owned())) {
                let outcome = ctx.groups.delete(id.0.as_str()).await;
                results.push(
                    delete_groups_response::DeletableGroupResult::default()
                        .with_group_id(id.clone())
                        .with_error_code(result_code(&outcome)),
                );
            }
            ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
        }
        RequestKind::OffsetDelete(r) => {
            let partitions: Vec<(String, u32)> = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.as_str().to_owned(), p.partition_index as u32)))
                .collect();
            let outcome = ctx.groups.delete_offsets(r.group_id.0.as_str(), &partitions).await;
            let topics = r
                .topics
                .into_iter()
                .map(|t| {
                    offset_delete_response::OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                offset_delete_response::OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                            })
                            .collect(),
                    )
                })
                .collect();
            ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_error_code(result_code(&outcome)).with_topics(topics),
            )
        }
        other => {
            // Only keys listed in `supported_versions` get here, and each has an arm above.
            tracing::error!(api_key = ?req.api_key, "supported kafka api without a handler: {other:?}");
            ResponseKind::ApiVersions(
                ApiVersionsResponse::default()
                    .with_error_code(code::UNSUPPORTED_VERSION)
                    .with_api_keys(api_version_list()),
            )
        }
    }
}

fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Empty => "Empty",
        GroupState::PreparingRebalance => "PreparingRebalance",
        GroupState::CompletingRebalance => "CompletingRebalance",
        GroupState::Stable => "Stable",
    }
}

async fn metadata(ctx: &KafkaContext, version: i16, r: MetadataRequest) -> MetadataResponse {
    let broker = &ctx.broker;
    // Each topic once, however often the request names it (as Kafka does): the answer stays in
    // proportion to the topics, not to the request's repetitions.
    let names: Vec<String> = match &r.topics {
        None => broker.list_topics(),
        Some(topics) => {
            let mut seen = std::collections::HashSet::new();
            topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_owned()))
                .filter(|name| seen.insert(name.clone()))
                .collect()
        }
    };
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let described = broker.topic_for_metadata(&name, r.allow_auto_topic_creation && r.topics.is_some()).await;
        let topic = match described {
            Ok(d) => {
                metadata_response::MetadataResponseTopic::default().with_name(Some(TopicName(s(name)))).with_partitions(
                    d.partitions
                        .iter()
                        .map(|p| {
                            let ids = |ids: &[u64]| ids.iter().map(|&id| BrokerId(broker_id(id))).collect();
                            metadata_response::MetadataResponsePartition::default()
                                .with_partition_index(p.partition as i32)
                                .with_error_code(if p.leader.is_some() {
                                    code::NONE
                                } else {
                                    code::LEADER_NOT_AVAILABLE
                                })
                                .with_leader_id(BrokerId(p.leader.map_or(-1, broker_id)))
                                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                                .with_replica_nodes(ids(&p.replicas))
                                .with_isr_nodes(ids(&p.isr))
                        })
                        .collect(),
                )
            }
            Err(e) => metadata_response::MetadataResponseTopic::default()
                .with_name(Some(TopicName(s(name))))
                .with_error_code(wire_code(&e)),
        };
        topics.push(topic);
    }
    // Fields a version lacks must keep their defaults, or the encoder refuses the response.
    MetadataResponse::default()
        .with_brokers(
            kafka_brokers(ctx)
                .into_iter()
                .map(|(id, host, port)| {
                    metadata_response::MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(s(host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_id(if version >= 2 { Some(s("weir")) } else { None })
        .with_controller_id(BrokerId(if version >= 1 { controller_id(ctx) } else { -1 }))
        .with_topics(topics)
}

/// A node id as Kafka's i32 broker id (checked at start for this broker; others register
/// the same way).
fn broker_id(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(-1)
}

/// The brokers Kafka clients are told about: the live registered ones in a cluster, this one
/// alone on a single node.
fn kafka_brokers(ctx: &KafkaContext) -> Vec<(i32, String, i32)> {
    let live = ctx.broker.live_brokers();
    if live.is_empty() {
        return vec![(ctx.config.node_id, ctx.config.advertised_host.clone(), i32::from(ctx.config.advertised_port))];
    }
    live.into_iter().map(|b| (broker_id(b.node_id), b.kafka_host, i32::from(b.kafka_port))).collect()
}

/// The controller leader's id (this broker on a single node; -1 during an election).
fn controller_id(ctx: &KafkaContext) -> i32 {
    match ctx.broker.cluster_status() {
        status if status.voters.len() <= 1 => ctx.config.node_id,
        status => status.controller_leader.map_or(-1, broker_id),
    }
}

/// Queues every partition's batches in request order; the returned future yields the acks
/// level and the response.
async fn produce_enqueue(
    ctx: &KafkaContext,
    version: i16,
    r: ProduceRequest,
) -> impl std::future::Future<Output = (i16, ProduceResponse)> + Send + 'static {
    let acks = r.acks;
    let mut topics = Vec::new();
    for topic in r.topic_data {
        let name = topic.name.0.as_str().to_owned();
        let mut partitions = Vec::new();
        for p in topic.partition_data {
            let records = p.records.unwrap_or_default();
            let queued = match u32::try_from(p.index) {
                Ok(partition) => {
                    let request = Produce {
                        topic: name.clone(),
                        partitions: vec![(Some(partition), records)],
                        acks_all: acks == -1,
                    };
                    ctx.broker.produce_enqueue(request).await
                }
                Err(_) => {
                    Err(WireError::new(ErrorCode::UnknownPartition, format!("partition {} does not exist", p.index)))
                }
            };
            partitions.push((p.index, queued));
        }
        topics.push((topic.name, partitions));
    }
    async move {
        let mut responses = Vec::new();
        for (name, partitions) in topics {
            let mut partition_responses = Vec::new();
            for (index, queued) in partitions {
                let outcome = match queued {
                    Ok(pending) => pending.await.pop().map_or_else(
                        || Err(WireError::new(ErrorCode::Internal, "the service answered no partition")),
                        |p| p.base_offset,
                    ),
                    Err(e) => Err(e),
                };
                let response =
                    produce_response::PartitionProduceResponse::default().with_index(index).with_log_append_time_ms(-1);
                partition_responses.push(match outcome {
                    Ok(base_offset) => response.with_base_offset(base_offset),
                    // KIP-467: a refused record is named in record_errors.
                    Err(e) if version >= 8 => response
                        .with_base_offset(-1)
                        .with_error_code(wire_code(&e))
                        .with_record_errors(
                            e.record_index
                                .and_then(|i| i32::try_from(i).ok())
                                .map(|i| {
                                    produce_response::BatchIndexAndErrorMessage::default()
                                        .with_batch_index(i)
                                        .with_batch_index_error_message(Some(s(e.message.clone())))
                                })
                                .into_iter()
                                .collect(),
                        )
                        .with_error_message(Some(s(e.message))),
                    Err(e) => response.with_base_offset(-1).with_error_code(wire_code(&e)),
                });
            }
            responses.push(
                produce_response::TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        (acks, ProduceResponse::default().with_responses(responses))
    }
}

async fn fetch(ctx: &KafkaContext, r: FetchRequest) -> FetchAnswer {
    let non_negative = |n: i32| u32::try_from(n).unwrap_or(0);
    let request = Fetch {
        max_wait_ms: non_negative(r.max_wait_ms),
        min_bytes: non_negative(r.min_bytes),
        max_bytes: u32::try_from(r.max_bytes).ok().filter(|b| *b > 0).unwrap_or(u32::MAX),
        partitions: r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| FetchFrom {
                    topic: t.topic.0.as_str().to_owned(),
                    // A negative partition does not exist: u32::MAX is refused as unknown.
                    partition: u32::try_from(p.partition).unwrap_or(u32::MAX),
                    offset: p.fetch_offset,
                    max_bytes: non_negative(p.partition_max_bytes),
                    module: None,
                })
            })
            .collect(),
        from_replica: false,
    };
    match ctx.broker.fetch(request).await {
        Ok(fetched) => FetchAnswer::from_fetched(fetched),
        Err(e) => FetchAnswer { error_code: wire_code(&e), topics: Vec::new() },
    }
}

/// A fetch's answer as the broker read it: each topic's partitions, and their stored batches.
struct FetchAnswer {
    error_code: i16,
    topics: Vec<(String, Vec<AnsweredPartition>)>,
}

struct AnsweredPartition {
    index: i32,
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    batches: Vec<Bytes>,
}

impl FetchAnswer {
    /// Each topic once, in the order it first comes, with its partitions in order. A topic is
    /// found by a map, not a scan: a request may name as many topics as its bytes can hold.
    fn from_fetched(fetched: Vec<FetchedPartition>) -> Self {
        let mut topics: Vec<(String, Vec<AnsweredPartition>)> = Vec::new();
        let mut place: HashMap<String, usize> = HashMap::new();
        for p in fetched {
            let answered = AnsweredPartition {
                index: p.partition as i32,
                error_code: p.error.as_ref().map_or(code::NONE, wire_code),
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                batches: p.batches,
            };
            match place.get(&p.topic) {
                Some(&at) => topics[at].1.push(answered),
                None => {
                    place.insert(p.topic.clone(), topics.len());
                    topics.push((p.topic, vec![answered]));
                }
            }
        }
        Self { error_code: code::NONE, topics }
    }

    /// The answer as kafka-protocol's message; a partition's batches are joined into the one
    /// buffer its `records` field holds. [`FetchAnswer::encode`] is checked against it.
    fn message(&self, version: i16) -> FetchResponse {
        let responses = self
            .topics
            .iter()
            .map(|(topic, partitions)| {
                let partitions = partitions
                    .iter()
                    .map(|p| {
                        fetch_response::PartitionData::default()
                            .with_partition_index(p.index)
                            .with_high_watermark(p.high_watermark)
                            .with_last_stable_offset(p.high_watermark)
                            .with_log_start_offset(if version >= 5 { p.log_start_offset } else { -1 })
                            .with_error_code(p.error_code)
                            .with_preferred_read_replica(BrokerId(-1))
                            .with_records(Some(Bytes::from(p.batches.concat())))
                    })
                    .collect();
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(TopicName(s(topic.clone())))
                    .with_partitions(partitions)
            })
            .collect();
        FetchResponse::default().with_error_code(self.error_code).with_responses(responses)
    }

    /// The whole answer frame (size, header, body) as pieces to write in order: the stored
    /// batches as they are, and the fields around them encoded into small buffers. The same
    /// bytes as kafka-protocol's encoding of [`FetchAnswer::message`], for the versions this
    /// broker serves (4 to 12; the test `fetch_answers_encode_as_the_crate_does` holds it to
    /// that), without joining and copying each partition's batches twice.
    fn encode(&self, ctx: &RequestContext) -> Option<Vec<Bytes>> {
        let version = ctx.api_version;
        if !(4..=12).contains(&version) {
            return encode_response(ctx, ResponseKind::Fetch(self.message(version))).map(|b| vec![b]);
        }
        let flexible = version >= 12;
        // The frame's size first, once it is known.
        let mut pieces = vec![Bytes::new()];
        let mut head = BytesMut::with_capacity(256);
        let header = ResponseHeader::default().with_correlation_id(ctx.correlation_id);
        if let Err(e) = header.encode(&mut head, ctx.api_key.response_header_version(version)) {
            tracing::error!(error = %e, "encoding a kafka response header failed");
            return Some(vec![unsupported_response(ctx.correlation_id)]);
        }
        head.put_i32(0); // throttle_time_ms
        if version >= 7 {
            head.put_i16(self.error_code);
            head.put_i32(0); // session_id
        }
        let count = |head: &mut BytesMut, n: usize| match flexible {
            true => put_unsigned_varint(head, n as u64 + 1),
            false => head.put_i32(i32::try_from(n).unwrap_or(i32::MAX)),
        };
        count(&mut head, self.topics.len());
        for (topic, partitions) in &self.topics {
            match flexible {
                true => put_unsigned_varint(&mut head, topic.len() as u64 + 1),
                false => head.put_i16(i16::try_from(topic.len()).unwrap_or(i16::MAX)),
            }
            head.put_slice(topic.as_bytes());
            count(&mut head, partitions.len());
            for p in partitions {
                head.put_i32(p.index);
                head.put_i16(p.error_code);
                head.put_i64(p.high_watermark);
                head.put_i64(p.high_watermark); // last_stable_offset
                if version >= 5 {
                    head.put_i64(p.log_start_offset);
                }
                count(&mut head, 0); // aborted_transactions: none
                if version >= 11 {
                    head.put_i32(-1); // preferred_read_replica
                }
                let records: usize = p.batches.iter().map(Bytes::len).sum();
                match flexible {
                    true => put_unsigned_varint(&mut head, records as u64 + 1),
                    false => head.put_i32(i32::try_from(records).unwrap_or(i32::MAX)),
                }
                if records > 0 {
                    pieces.push(head.split().freeze());
                    pieces.extend(p.batches.iter().cloned());
                }
                if flexible {
                    head.put_u8(0); // the partition's tagged fields: none
                }
            }
            if flexible {
                head.put_u8(0); // the topic's tagged fields
            }
        }
        if flexible {
            head.put_u8(0); // the answer's tagged fields
        }
        pieces.push(head.freeze());
        let size: usize = pieces.iter().map(Bytes::len).sum();
        if too_large(ctx, size) {
            return None;
        }
        let Ok(size_field) = i32::try_from(size) else {
            tracing::error!(api_key = ?ctx.api_key, bytes = size, "a kafka response over 2 GiB cannot be framed");
            return None;
        };
        pieces[0] = Bytes::copy_from_slice(&size_field.to_be_bytes());
        Some(pieces)
    }
}

fn list_offsets(ctx: &KafkaContext, version: i16, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let entries: Vec<(u32, OffsetSpec)> = t
                .partitions
                .iter()
                .map(|p| {
                    let spec = match p.timestamp {
                        -1 | -3 => OffsetSpec::Latest,
                        -2 | -4 | -5 => OffsetSpec::Earliest,
                        ts => OffsetSpec::Timestamp(ts),
                    };
                    // A negative partition does not exist: u32::MAX is answered as unknown.
                    (u32::try_from(p.partition_index).unwrap_or(u32::MAX), spec)
                })
                .collect();
            let listed = ctx.broker.list_offsets(t.name.0.as_str(), &entries);
            let partitions = t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let response = list_offsets_response::ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_leader_epoch(if version >= 4 { 0 } else { -1 });
                    let found = match &listed {
                        Ok(listed) => listed.get(i).map(|l| l.found.clone()),
                        Err(e) => Some(Err(e.clone())),
                    };
                    match found {
                        Some(Ok((offset, timestamp))) => response.with_offset(offset).with_timestamp(timestamp),
                        Some(Err(e)) => response.with_error_code(wire_code(&e)).with_offset(-1).with_timestamp(-1),
                        None => response.with_error_code(code::UNKNOWN_SERVER_ERROR).with_offset(-1).with_timestamp(-1),
                    }
                })
                .collect();
            list_offsets_response::ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

async fn create_topics(ctx: &KafkaContext, version: i16, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in r.topics {
        let name = t.name.0.as_str().to_owned();
        let entries: Vec<(String, String)> = t
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned())))
            .collect();
        let result = create_topics_response::CreatableTopicResult::default().with_name(t.name.clone());
        let (partitions, replication_factor) = match assigned(ctx, &t) {
            Ok(None) => (u32::try_from(t.num_partitions).ok(), u32::try_from(t.replication_factor).ok()),
            Ok(Some(counts)) => (Some(counts.0), Some(counts.1)),
            Err((code, message)) => {
                results.push(result.with_error_code(code).with_error_message(Some(s(message))));
                continue;
            }
        };
        // The factor the topic gets: the one asked for, else the broker's default of one.
        let factor = i16::try_from(replication_factor.unwrap_or(1)).unwrap_or(i16::MAX);
        let new = NewTopic { name, partitions, replication_factor, config: entries, validate_only: r.validate_only };
        let outcome = ctx.broker.create_topic_as_asked(new).await.map_err(|e| (wire_code(&e), e.message));
        results.push(match outcome {
            Ok(partitions) if version >= 5 => result
                .with_num_partitions(i32::try_from(partitions).unwrap_or(i32::MAX))
                .with_replication_factor(factor),
            Ok(_) => result,
            Err((code, message)) => result.with_error_code(code).with_error_message(Some(s(message))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// A CreateTopics entry's manual replica assignment, as Kafka checks it: (partitions, replicas
/// of each) when there is one, the count and factor then left at -1, partitions numbered from
/// 0, every replica a broker of this cluster.
fn assigned(
    ctx: &KafkaContext,
    t: &create_topics_request::CreatableTopic,
) -> Result<Option<(u32, u32)>, (i16, String)> {
    if t.assignments.is_empty() {
        return Ok(None);
    }
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err((
            code::INVALID_REQUEST,
            "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."
                .into(),
        ));
    }
    let mut replicas = None;
    for (i, a) in t.assignments.iter().enumerate() {
        if usize::try_from(a.partition_index).ok() != Some(i) {
            return Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                "Partitions should be a consecutive 0-based integer sequence".into(),
            ));
        }
        if let Some(b) = a.broker_ids.iter().find(|b| b.0 != ctx.config.node_id) {
            return Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                format!("Unknown broker id {} in the replica assignment", b.0),
            ));
        }
        let count = u32::try_from(a.broker_ids.len()).unwrap_or(u32::MAX);
        if count == 0 || replicas.is_some_and(|r| r != count) {
            return Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                "All partitions should have the same number of replicas, at least one".into(),
            ));
        }
        replicas = Some(count);
    }
    let partitions = u32::try_from(t.assignments.len()).unwrap_or(u32::MAX);
    Ok(Some((partitions, replicas.unwrap_or(1))))
}

async fn delete_topics(ctx: &KafkaContext, version: i16, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut names: Vec<TopicName> = r.topic_names;
    names.extend(r.topics.into_iter().filter_map(|t| t.name));
    let mut responses = Vec::new();
    for name in names {
        let outcome = ctx.broker.delete_topic(name.0.as_str()).await;
        let result = delete_topics_response::DeletableTopicResult::default().with_name(Some(name));
        responses.push(match outcome {
            Ok(()) => result,
            Err(e) if version >= 5 => result.with_error_code(wire_code(&e)).with_error_message(Some(s(e.message))),
            Err(e) => result.with_error_code(wire_code(&e)),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn delete_records(ctx: &KafkaContext, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let outcome = ctx.broker.delete_records(t.name.0.as_str(), p.partition_index, p.offset).await;
            let result = delete_records_response::DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index);
            partitions.push(match outcome {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(e) => result.with_low_watermark(-1).with_error_code(wire_code(&e)),
            });
        }
        topics.push(
            delete_records_response::DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Kafka's AlterPartitionReassignments: each topic named (once, however often the request
/// names it) that exists is one `Broker::reassign_partitions` command for its partitions,
/// all or nothing; unknown topics and partitions, negative indexes and broker ids are answered
/// without proposing anything. So a request makes at most one proposal per existing topic,
/// and answers each distinct partition once.
async fn alter_partition_reassignments(
    ctx: &KafkaContext,
    r: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    type Target = Option<Vec<i32>>;
    let mut named: BTreeMap<String, BTreeMap<i32, Target>> = BTreeMap::new();
    for t in r.topics {
        let partitions = named.entry(t.name.0.to_string()).or_default();
        for p in t.partitions {
            partitions.insert(p.partition_index, p.replicas.map(|ids| ids.iter().map(|b| b.0).collect()));
        }
    }
    let known: std::collections::BTreeSet<String> = ctx.broker.list_topics().into_iter().collect();
    let mut responses = Vec::with_capacity(named.len());
    for (topic, partitions) in named {
        let count = if known.contains(&topic) {
            ctx.broker.describe_topic(&topic).ok().map(|i| i.partitions.len())
        } else {
            None
        };
        let mut refused: BTreeMap<i32, WireError> = BTreeMap::new();
        let mut moves = BTreeMap::new();
        for (index, target) in partitions.iter() {
            let partition = u32::try_from(*index).ok().filter(|p| count.is_some_and(|c| (*p as usize) < c));
            let target =
                target.as_ref().map(|ids| ids.iter().map(|b| u64::try_from(*b)).collect::<Result<Vec<u64>, _>>());
            match (partition, target) {
                (None, _) => {
                    refused.insert(
                        *index,
                        WireError::new(ErrorCode::UnknownPartition, format!("{topic} has no partition {index}")),
                    );
                }
                (_, Some(Err(_))) => {
                    refused
                        .insert(*index, WireError::new(ErrorCode::InvalidReplicaAssignment, "a broker id is negative"));
                }
                (Some(partition), target) => {
                    moves.insert(partition, target.map(|t| t.unwrap_or_default()));
                }
            }
        }
        let outcome = match moves.is_empty() {
            true => Ok(()),
            false => ctx.broker.reassign_partitions(&topic, moves, None).await.map(|_| ()),
        };
        let answered = partitions
            .keys()
            .map(|index| {
                let result = alter_partition_reassignments_response::ReassignablePartitionResponse::default()
                    .with_partition_index(*index)
                    .with_error_message(None);
                match refused.get(index).or(outcome.as_ref().err()) {
                    None => result,
                    Some(e) => result.with_error_code(wire_code(e)).with_error_message(Some(s(e.message.clone()))),
                }
            })
            .collect();
        responses.push(
            alter_partition_reassignments_response::ReassignableTopicResponse::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(answered),
        );
    }
    AlterPartitionReassignmentsResponse::default().with_error_message(None).with_responses(responses)
}

/// Kafka's ElectLeaders: preferred elections (type 0) through the controller's
/// `ElectPreferredLeaders`, one for every topic or one per named topic that exists (never one
/// per name a request repeats or invents), then each named partition's outcome: moved, not
/// needed (its preferred replica leads), not available (it is not live and in sync), or
/// unknown. With no partitions named, every partition not led by its preferred replica is
/// answered. Unclean elections on request (type 1) are refused: a partition is led by an
/// out-of-sync replica only by the topic's `unclean.leader.election.enable`.
async fn elect_leaders(ctx: &KafkaContext, r: ElectLeadersRequest) -> ElectLeadersResponse {
    let result = |partition: i32, code: i16, message: Option<String>| {
        elect_leaders_response::PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(s))
    };
    // Each named topic once, its partitions as a set.
    let named: Option<BTreeMap<String, std::collections::BTreeSet<i32>>> = r.topic_partitions.map(|topics| {
        let mut named: BTreeMap<String, std::collections::BTreeSet<i32>> = BTreeMap::new();
        for t in topics {
            named.entry(t.topic.0.to_string()).or_default().extend(t.partitions);
        }
        named
    });
    let known: std::collections::BTreeSet<String> = ctx.broker.list_topics().into_iter().collect();
    let refused = |e: &WireError| ElectLeadersResponse::default().with_error_code(wire_code(e));
    if r.election_type != 0 {
        let e = WireError::new(
            ErrorCode::InvalidRequest,
            format!("election type {}: only preferred elections (0) are made on request", r.election_type),
        );
        let Some(named) = named else { return refused(&e) };
        let results = named
            .into_iter()
            .map(|(topic, partitions)| {
                elect_leaders_response::ReplicaElectionResult::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partition_result(
                        partitions.into_iter().map(|p| result(p, wire_code(&e), Some(e.message.clone()))).collect(),
                    )
            })
            .collect();
        return ElectLeadersResponse::default().with_replica_election_results(results);
    }
    let mut moved = std::collections::BTreeSet::new();
    let mut failed: BTreeMap<String, WireError> = BTreeMap::new();
    match &named {
        None => match ctx.broker.elect_preferred_leaders(None).await {
            Ok(m) => moved.extend(m),
            Err(e) => return refused(&e),
        },
        Some(named) => {
            for topic in named.keys().filter(|t| known.contains(*t)) {
                match ctx.broker.elect_preferred_leaders(Some(topic.clone())).await {
                    Ok(m) => moved.extend(m),
                    Err(e) => {
                        failed.insert(topic.clone(), e);
                    }
                }
            }
        }
    }
    let topics: Vec<String> = match &named {
        Some(named) => named.keys().cloned().collect(),
        None => known.iter().cloned().collect(),
    };
    let mut results = Vec::with_capacity(topics.len());
    for topic in topics {
        let wanted = named.as_ref().and_then(|n| n.get(&topic));
        let info = if known.contains(&topic) { ctx.broker.describe_topic(&topic).ok() } else { None };
        let partition_result: Vec<_> = match (&info, failed.get(&topic)) {
            (_, Some(e)) => {
                wanted.into_iter().flatten().map(|p| result(*p, wire_code(e), Some(e.message.clone()))).collect()
            }
            (None, None) => {
                wanted.into_iter().flatten().map(|p| result(*p, code::UNKNOWN_TOPIC_OR_PARTITION, None)).collect()
            }
            (Some(info), None) => {
                let mut answered: Vec<_> = info
                    .partitions
                    .iter()
                    .filter_map(|p| {
                        let index = i32::try_from(p.partition).unwrap_or(i32::MAX);
                        let preferred_leads = p.leader.is_some() && p.leader == p.replicas.first().copied();
                        match wanted {
                            Some(w) if !w.contains(&index) => None,
                            _ if moved.contains(&format!("{topic}/{}", p.partition)) => Some(result(index, 0, None)),
                            Some(_) if preferred_leads => Some(result(index, code::ELECTION_NOT_NEEDED, None)),
                            None if preferred_leads || p.replicas.len() <= 1 => None,
                            _ => Some(result(
                                index,
                                code::PREFERRED_LEADER_NOT_AVAILABLE,
                                Some(format!(
                                    "the preferred replica of {topic}/{} is not live and in sync",
                                    p.partition
                                )),
                            )),
                        }
                    })
                    .collect();
                // Partitions named that the topic does not have.
                let count = info.partitions.len();
                answered.extend(
                    wanted
                        .into_iter()
                        .flatten()
                        .filter(|index| usize::try_from(**index).map_or(true, |i| i >= count))
                        .map(|index| result(*index, code::UNKNOWN_TOPIC_OR_PARTITION, None)),
                );
                answered
            }
        };
        if !partition_result.is_empty() {
            results.push(
                elect_leaders_response::ReplicaElectionResult::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partition_result(partition_result),
            );
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// Kafka's ListPartitionReassignments: the moves under way, of the named partitions or all.
fn list_partition_reassignments(
    ctx: &KafkaContext,
    r: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let ids = |ids: &[u64]| ids.iter().map(|b| BrokerId(i32::try_from(*b).unwrap_or(i32::MAX))).collect::<Vec<_>>();
    // Named partitions as a set per topic: each is listed once however often it is named.
    let wanted: Option<BTreeMap<String, std::collections::BTreeSet<i32>>> = r.topics.map(|topics| {
        let mut wanted: BTreeMap<String, std::collections::BTreeSet<i32>> = BTreeMap::new();
        for t in topics {
            wanted.entry(t.name.0.to_string()).or_default().extend(t.partition_indexes);
        }
        wanted
    });
    let mut topics: Vec<list_partition_reassignments_response::OngoingTopicReassignment> = Vec::new();
    for (topic, partition, replicas, moving) in ctx.broker.reassignments() {
        let index = i32::try_from(partition).unwrap_or(i32::MAX);
        if wanted.as_ref().is_some_and(|w| !w.get(&topic).is_some_and(|p| p.contains(&index))) {
            continue;
        }
        let ongoing = list_partition_reassignments_response::OngoingPartitionReassignment::default()
            .with_partition_index(index)
            .with_replicas(ids(&replicas))
            .with_adding_replicas(ids(&moving.adding))
            .with_removing_replicas(ids(&moving.removing));
        match topics.last_mut().filter(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(ongoing),
            None => topics.push(
                list_partition_reassignments_response::OngoingTopicReassignment::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![ongoing]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_error_message(None).with_topics(topics)
}

async fn create_partitions(ctx: &KafkaContext, r: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in r.topics {
        let count = u32::try_from(t.count).unwrap_or(0);
        let outcome = ctx.broker.add_partitions(t.name.0.as_str(), count, r.validate_only).await;
        let result = create_partitions_response::CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => result.with_error_code(wire_code(&e)).with_error_message(Some(s(e.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn describe_configs(ctx: &KafkaContext, version: i16, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    // Each resource is answered once: a topic named 100,000 times would otherwise cost 100,000
    // copies of its 40-odd configs.
    let mut seen = std::collections::HashSet::new();
    let results = r
        .resources
        .into_iter()
        .filter(|res| seen.insert((res.resource_type, res.resource_name.clone())))
        .map(|res| {
            let result = describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let entries = match res.resource_type {
                RESOURCE_TOPIC => ctx.broker.topic_configs(res.resource_name.as_str()),
                RESOURCE_BROKER => Ok(ctx.broker.broker_configs()),
                other => Err(WireError::new(
                    ErrorCode::InvalidRequest,
                    format!("config resource type {other} is not supported"),
                )),
            };
            match entries {
                Ok(entries) => {
                    // Null (or no key at all) asks for every config.
                    let wanted = res
                        .configuration_keys
                        .as_ref()
                        .filter(|keys| !keys.is_empty())
                        .map(|keys| keys.iter().map(|k| k.as_str().to_owned()).collect::<Vec<_>>());
                    result.with_configs(
                        entries
                            .into_iter()
                            .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&e.name)))
                            .map(|e| {
                                // Kafka's ConfigSource: DEFAULT_CONFIG (5) or DYNAMIC_TOPIC_CONFIG (1).
                                let source = if e.is_default { 5 } else { 1 };
                                describe_configs_response::DescribeConfigsResourceResult::default()
                                    .with_name(s(e.name))
                                    .with_value(Some(s(e.value)))
                                    .with_config_source(source)
                                    .with_config_type(if version >= 3 { 2 } else { 0 })
                            })
                            .collect(),
                    )
                }
                Err(e) => result.with_error_code(wire_code(&e)).with_error_message(Some(s(e.message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

async fn alter_configs(ctx: &KafkaContext, r: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for res in r.resources {
        let given: Vec<(String, String)> = res
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned())))
            .collect();
        let outcome = if res.resource_type == RESOURCE_TOPIC {
            ctx.broker.replace_topic_config(res.resource_name.as_str(), given, r.validate_only).await
        } else {
            Err(WireError::new(ErrorCode::InvalidConfig, "only topic configs can be altered"))
        };
        let response = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(e) => response.with_error_code(wire_code(&e)).with_error_message(Some(s(e.message))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

async fn incremental_alter_configs(
    ctx: &KafkaContext,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for res in r.resources {
        let changes: Vec<(String, ConfigChange)> = res
            .configs
            .iter()
            .map(|c| {
                let value = c.value.as_ref().map(|v| v.as_str().to_owned()).unwrap_or_default();
                let change = match c.config_operation {
                    0 => ConfigChange::Set(value),
                    1 => ConfigChange::Delete,
                    2 => ConfigChange::Append(value),
                    _ => ConfigChange::Subtract(value),
                };
                (c.name.as_str().to_owned(), change)
            })
            .collect();
        let outcome = match res.resource_type {
            RESOURCE_TOPIC => ctx.broker.alter_topic_config(res.resource_name.as_str(), changes, r.validate_only).await,
            _ => Err(WireError::new(ErrorCode::InvalidConfig, "only topic configs can be altered")),
        };
        let response = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(e) => response.with_error_code(wire_code(&e)).with_error_message(Some(s(e.message))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The coordinator of each group asked about: in a cluster, the broker every broker names for
/// it (a hash of the group id over the live brokers); this broker on a single node.
fn find_coordinator(ctx: &KafkaContext, req: &RequestContext, r: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let coordinator = |key: &str| match ctx.broker.group_coordinator(key) {
        Some(b) => (BrokerId(broker_id(b.node_id)), s(b.kafka_host), i32::from(b.kafka_port)),
        None => {
            (BrokerId(ctx.config.node_id), s(ctx.config.advertised_host.clone()), i32::from(ctx.config.advertised_port))
        }
    };
    if req.api_version >= 4 {
        let coordinators = r
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (node, host, port) = coordinator(key.as_str());
                find_coordinator_response::Coordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (node, host, port) = coordinator(r.key.as_str());
    FindCoordinatorResponse::default().with_node_id(node).with_host(host).with_port(port)
}

async fn join_group(ctx: &KafkaContext, req: &RequestContext, r: JoinGroupRequest) -> JoinGroupResponse {
    let request = JoinRequest {
        group_id: r.group_id.0.as_str().to_owned(),
        member_id: r.member_id.as_str().to_owned(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        protocol_type: r.protocol_type.as_str().to_owned(),
        protocols: r.protocols.into_iter().map(|p| (p.name.as_str().to_owned(), p.metadata)).collect(),
    };
    match ctx.groups.join(request).await {
        Ok(j) => JoinGroupResponse::default()
            .with_generation_id(j.generation_id)
            .with_protocol_type(if req.api_version >= 7 { Some(s(j.protocol_type)) } else { None })
            .with_protocol_name(Some(s(j.protocol_name)))
            .with_leader(s(j.leader))
            .with_member_id(s(j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|(id, metadata)| {
                        join_group_response::JoinGroupResponseMember::default()
                            .with_member_id(s(id))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Err(e) => JoinGroupResponse::default()
            .with_error_code(group_code(e))
            .with_generation_id(-1)
            .with_member_id(r.member_id),
    }
}

/// Whether another broker coordinates `group` (in a cluster).
fn elsewhere(ctx: &KafkaContext, group: &str) -> bool {
    ctx.broker.group_coordinator(group).is_some_and(|b| broker_id(b.node_id) != ctx.config.node_id)
}

async fn offset_commit(ctx: &KafkaContext, r: OffsetCommitRequest) -> OffsetCommitResponse {
    if elsewhere(ctx, r.group_id.0.as_str()) {
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            offset_commit_response::OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code::NOT_COORDINATOR)
                        })
                        .collect(),
                )
            })
            .collect();
        return OffsetCommitResponse::default().with_topics(topics);
    }
    let offsets: Vec<(String, i32, CommittedOffset)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.as_str().to_owned(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_owned()),
                        commit_time_ms: weir_sdk::wire::now_ms(),
                    },
                )
            })
        })
        .collect();
    let outcome = ctx
        .broker
        .commit_offsets(r.group_id.0.as_str(), r.generation_id_or_member_epoch, r.member_id.as_str(), offsets)
        .await;
    let code_for = |topic: &str, partition: i32| match &outcome {
        Ok(()) => code::NONE,
        Err(CommitError::Group(e)) => group_code(*e),
        // Nothing was stored: the unknown partitions say why, the others that the request was refused.
        Err(CommitError::UnknownPartitions { unknown, .. }) => {
            if unknown.iter().any(|(t, p)| t == topic && *p == partition) {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                code::INVALID_REQUEST
            }
        }
    };
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code_for(t.name.0.as_str(), p.partition_index))
                })
                .collect();
            offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// (partition, committed offset or -1, metadata).
type Committed = (i32, i64, Option<String>);

fn offset_fetch(ctx: &KafkaContext, req: &RequestContext, r: OffsetFetchRequest) -> OffsetFetchResponse {
    let lookup = |group: &str, topics: Option<Vec<(String, Vec<i32>)>>| -> Vec<(String, Vec<Committed>)> {
        let wanted: Option<Vec<(String, u32)>> = topics
            .as_ref()
            // A negative partition has no committed offset (u32::MAX is no partition).
            .map(|ts| {
                ts.iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), u32::try_from(*p).unwrap_or(u32::MAX))))
                    .collect()
            });
        let found = ctx.groups.committed(group, wanted.as_deref());
        let mut by_topic: BTreeMap<String, Vec<Committed>> = BTreeMap::new();
        for (topic, partition, committed) in found {
            let (offset, metadata) = committed.map_or((-1, None), |c| (c.offset, c.metadata));
            by_topic.entry(topic).or_default().push((partition as i32, offset, metadata));
        }
        by_topic.into_iter().collect()
    };
    // v8+ and older versions carry the same data in two sets of generated types.
    macro_rules! topics_of {
        ($found:expr, $topic:ty, $partition:ty) => {
            $found
                .into_iter()
                .map(|(topic, partitions)| {
                    <$topic>::default().with_name(TopicName(s(topic))).with_partitions(
                        partitions
                            .into_iter()
                            .map(|(p, offset, metadata): Committed| {
                                <$partition>::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(-1)
                                    .with_metadata(Some(s(metadata.unwrap_or_default())))
                            })
                            .collect(),
                    )
                })
                .collect()
        };
    }
    let names = |ts: Vec<(TopicName, Vec<i32>)>| ts.into_iter().map(|(n, ps)| (n.0.as_str().to_owned(), ps)).collect();
    if req.api_version >= 8 {
        let groups = r
            .groups
            .into_iter()
            .map(|g| {
                if elsewhere(ctx, g.group_id.0.as_str()) {
                    return offset_fetch_response::OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(code::NOT_COORDINATOR);
                }
                let topics = g.topics.map(|ts| names(ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect()));
                let found = lookup(g.group_id.0.as_str(), topics);
                offset_fetch_response::OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(
                    topics_of!(
                        found,
                        offset_fetch_response::OffsetFetchResponseTopics,
                        offset_fetch_response::OffsetFetchResponsePartitions
                    ),
                )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if elsewhere(ctx, r.group_id.0.as_str()) && req.api_version >= 2 {
        return OffsetFetchResponse::default().with_error_code(code::NOT_COORDINATOR);
    }
    let topics = r.topics.map(|ts| names(ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect()));
    let found = lookup(r.group_id.0.as_str(), topics);
    OffsetFetchResponse::default().with_topics(topics_of!(
        found,
        offset_fetch_response::OffsetFetchResponseTopic,
        offset_fetch_response::OffsetFetchResponsePartition
    ))
}

/// A request as the listener reads it.
#[derive(Debug)]
pub struct Decoded {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub body: RequestKind,
}

#[derive(Debug)]
pub enum DecodeError {
    /// An API or version this listener does not implement; answered, not fatal.
    Unsupported { correlation_id: i32, api_key: i16, api_version: i16 },
    /// Bytes that are not a request; the connection cannot be resynchronised.
    Malformed(anyhow::Error),
}

/// Decodes one request (the bytes after its size prefix). The listener and the fuzz target
/// both call this, so what is fuzzed is what serves. Never panics: every input gives a request
/// or an error.
pub fn decode_request(mut bytes: Bytes) -> Result<Decoded, DecodeError> {
    if bytes.len() < 8 {
        return Err(DecodeError::Malformed(anyhow::anyhow!(
            "request of {} bytes is shorter than its 8-byte header",
            bytes.len()
        )));
    }
    let api_key_raw = (&bytes[..2]).get_i16();
    let api_version = (&bytes[2..4]).get_i16();
    let correlation_id = (&bytes[4..8]).get_i32();
    let Some((api_key, _, _)) = supported_versions()
        .into_iter()
        .find(|(k, min, max)| *k as i16 == api_key_raw && (*min..=*max).contains(&api_version))
    else {
        return Err(DecodeError::Unsupported { correlation_id, api_key: api_key_raw, api_version });
    };
    let header = RequestHeader::decode(&mut bytes, api_key.request_header_version(api_version))
        .map_err(|e| DecodeError::Malformed(anyhow::anyhow!("request header: {e}")))?;
    let body = RequestKind::decode(api_key, &mut bytes, api_version)
        .map_err(|e| DecodeError::Malformed(anyhow::anyhow!("{api_key:?} v{api_version}: {e}")))?;
    Ok(Decoded { header, api_key, api_version, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_versions_are_within_what_the_crate_encodes() {
        for (key, min, max) in supported_versions() {
            let valid = key.valid_versions();
            assert!(min <= max, "{key:?}");
            assert!(valid.min <= min && max <= valid.max, "{key:?} {min}..={max} outside {valid:?}");
        }
    }

    #[test]
    fn request_decoder_rejects_garbage_without_panicking() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut valid = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(9)
            .with_correlation_id(1);
        header.encode(&mut valid, ApiKey::Metadata.request_header_version(9)).unwrap();
        MetadataRequest::default().with_topics(Some(vec![])).encode(&mut valid, 9).unwrap();
        assert!(decode_request(valid.clone().freeze()).is_ok());
        for _ in 0..20_000 {
            let mut input = valid.to_vec();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..input.len());
                input[at] = rng.gen();
            }
            let _ = decode_request(Bytes::from(input));
            let noise: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
            let _ = decode_request(Bytes::from(noise));
        }
    }

    /// One request of every API the listener serves, with a topic, partition and group where
    /// the request has them, at every version it accepts: the seeds the property test mutates.
    fn seed_requests() -> Vec<(String, Bytes)> {
        use kafka_protocol::messages::*;
        let topic = || TopicName(StrBytes::from_static_str("t"));
        let group = || GroupId(StrBytes::from_static_str("g"));
        let records = || {
            let record = weir_sdk::batch::Record { value: Some(Bytes::from_static(b"v")), ..Default::default() };
            weir_sdk::batch::encode_batch(&[record], weir_sdk::Compression::None).expect("encode")
        };
        let kinds = |key: ApiKey| -> RequestKind {
            match key {
                ApiKey::Produce => RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_topic_data(vec![
                    produce_request::TopicProduceData::default().with_name(topic()).with_partition_data(vec![
                        produce_request::PartitionProduceData::default().with_records(Some(records())),
                    ]),
                ])),
                ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![fetch_request::FetchPartition::default()]),
                ])),
                ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default().with_name(topic()).with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                    ]),
                ])),
                ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
                ]))),
                ApiKey::OffsetCommit => {
                    RequestKind::OffsetCommit(OffsetCommitRequest::default().with_group_id(group()).with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()]),
                    ]))
                }
                ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default().with_group_id(group())),
                ApiKey::FindCoordinator => RequestKind::FindCoordinator(
                    FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
                ),
                ApiKey::JoinGroup => RequestKind::JoinGroup(
                    JoinGroupRequest::default()
                        .with_group_id(group())
                        .with_session_timeout_ms(10_000)
                        .with_protocol_type(StrBytes::from_static_str("consumer"))
                        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                            .with_name(StrBytes::from_static_str("range"))
                            .with_metadata(Bytes::from_static(b"\0\0"))]),
                ),
                ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(group())),
                ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default().with_group_id(group())),
                ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default().with_group_id(group())),
                ApiKey::DescribeGroups => {
                    RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![group()]))
                }
                ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
                ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
                ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                    create_topics_request::CreatableTopic::default().with_name(topic()).with_num_partitions(1),
                ])),
                ApiKey::DeleteTopics => {
                    RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![topic()]))
                }
                ApiKey::DeleteGroups => {
                    RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![group()]))
                }
                ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
                ApiKey::DescribeConfigs => {
                    RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(
                        vec![describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("t"))],
                    ))
                }
                ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
                ApiKey::CreatePartitions => RequestKind::CreatePartitions(CreatePartitionsRequest::default()),
                ApiKey::OffsetDelete => {
                    RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(group()))
                }
                ApiKey::IncrementalAlterConfigs => {
                    RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
                }
                ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
                ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default().with_name(topic()).with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default().with_offset(-1),
                    ]),
                ])),
                ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
                    AlterPartitionReassignmentsRequest::default().with_topics(vec![
                        alter_partition_reassignments_request::ReassignableTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![
                                alter_partition_reassignments_request::ReassignablePartition::default()
                                    .with_replicas(Some(vec![BrokerId(1)])),
                            ]),
                    ]),
                ),
                ApiKey::ListPartitionReassignments => {
                    RequestKind::ListPartitionReassignments(ListPartitionReassignmentsRequest::default())
                }
                ApiKey::ElectLeaders => {
                    RequestKind::ElectLeaders(ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                        elect_leaders_request::TopicPartitions::default().with_topic(topic()).with_partitions(vec![0]),
                    ])))
                }
                other => panic!("no seed for {other:?}: add one"),
            }
        };
        let mut seeds = Vec::new();
        for (key, min, max) in supported_versions() {
            for version in min..=max {
                let mut bytes = BytesMut::new();
                RequestHeader::default()
                    .with_request_api_key(key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(1)
                    .with_client_id(Some(StrBytes::from_static_str("fuzz")))
                    .encode(&mut bytes, key.request_header_version(version))
                    .expect("header encodes");
                if kinds(key).encode(&mut bytes, version).is_ok() {
                    seeds.push((format!("{key:?}-v{version}"), bytes.freeze()));
                }
            }
        }
        seeds
    }

    /// The corpus kept in the repo (`broker/server/fuzz/corpus/kafka_request`, also cargo-fuzz's
    /// starting corpus) and the generated seeds, mutated with a printed seed
    /// (`WEIR_FUZZ_SEED` replays one, `WEIR_FUZZ_ITERATIONS` runs longer): the decoder answers
    /// every input with a request or an error, never a panic. `WEIR_WRITE_CORPUS=1` writes the
    /// generated seeds into the corpus folder.
    #[test]
    fn request_decoder_never_panics_on_mutated_requests_of_every_api() {
        use rand::{Rng, SeedableRng};
        let corpus_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/kafka_request");
        let seeds = seed_requests();
        assert!(seeds.len() >= supported_versions().len(), "a seed for every API");
        if std::env::var_os("WEIR_WRITE_CORPUS").is_some() {
            std::fs::create_dir_all(&corpus_dir).unwrap();
            for (name, bytes) in &seeds {
                std::fs::write(corpus_dir.join(name), bytes).unwrap();
            }
        }
        let mut inputs: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.to_vec()).collect();
        for entry in std::fs::read_dir(&corpus_dir).expect("the corpus is in the repo") {
            inputs.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        for (name, bytes) in &seeds {
            assert!(decode_request(bytes.clone()).is_ok(), "seed {name} decodes");
        }
        let seed: u64 = std::env::var("WEIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6b61);
        let iterations: usize =
            std::env::var("WEIR_FUZZ_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
        eprintln!("kafka request property test seed {seed}, {iterations} inputs from {} seeds", inputs.len());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..iterations {
            let mut input = inputs[rng.gen_range(0..inputs.len())].clone();
            for _ in 0..rng.gen_range(1..6) {
                match rng.gen_range(0..4) {
                    0 | 1 => {
                        let at = rng.gen_range(0..input.len());
                        input[at] = rng.gen();
                    }
                    // Lengths and counts: a big-endian i32 at a random place.
                    2 if input.len() >= 12 => {
                        let at = rng.gen_range(8..input.len() - 3);
                        let claim: i32 = *[-1, 0, 1, 0x7fff_ffff, i32::MIN, 1 << 20].get(rng.gen_range(0..6)).unwrap();
                        input[at..at + 4].copy_from_slice(&claim.to_be_bytes());
                    }
                    _ => input.truncate(rng.gen_range(0..input.len())),
                }
                if input.is_empty() {
                    break;
                }
            }
            let _ = decode_request(Bytes::from(input));
        }
    }

    #[test]
    fn fetch_answers_encode_as_the_crate_does() {
        let ctx = |version, limit| RequestContext {
            api_key: ApiKey::Fetch,
            api_version: version,
            correlation_id: 77,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            response_bytes_max: limit,
            producer_id_wait: None,
        };
        let batch = |n: usize, byte: u8| Bytes::from(vec![byte; n]);
        let partition = |index, error_code, batches| AnsweredPartition {
            index,
            error_code,
            high_watermark: 1_000 + i64::from(index),
            log_start_offset: 5,
            batches,
        };
        let answers = [
            ("no topics", FetchAnswer { error_code: code::NONE, topics: vec![] }),
            ("the whole fetch failed", FetchAnswer { error_code: code::UNKNOWN_SERVER_ERROR, topics: vec![] }),
            (
                "batches, none, an error, a long topic name (two-byte varint lengths)",
                FetchAnswer {
                    error_code: code::NONE,
                    topics: vec![
                        (
                            "orders".into(),
                            vec![
                                partition(0, code::NONE, vec![batch(300, 1)]),
                                partition(1, code::NONE, vec![]),
                                partition(2, code::NONE, vec![batch(70, 2), batch(20_000, 3), batch(1, 4)]),
                            ],
                        ),
                        ("t".repeat(200), vec![partition(7, code::NOT_LEADER_OR_FOLLOWER, vec![])]),
                        ("empty".into(), vec![partition(0, code::NONE, vec![Bytes::new(), batch(5, 9)])]),
                    ],
                },
            ),
        ];
        for (what, answer) in &answers {
            for version in 4..=12 {
                let expected = encode_response(&ctx(version, usize::MAX), ResponseKind::Fetch(answer.message(version)))
                    .expect("the crate encodes it");
                let pieces = answer.encode(&ctx(version, usize::MAX)).expect("within the limit");
                assert_eq!(Bytes::from(pieces.concat()), expected, "{what}, v{version}");
                // Batches are pieces of their own, not copied into the fields around them.
                let big: usize = pieces.iter().filter(|p| p.len() == 20_000).count();
                assert_eq!(big, usize::from(answer.topics.len() == 3), "{what}, v{version}");
                // The limit counts the frame after its size field.
                let size = expected.len() - 4;
                assert!(answer.encode(&ctx(version, size - 1)).is_none(), "{what}, v{version}: over the limit");
                assert!(answer.encode(&ctx(version, size)).is_some(), "{what}, v{version}: at the limit");
            }
        }
    }

    #[test]
    fn fetched_partitions_are_answered_under_each_topic_once_in_the_order_asked() {
        let fetched = |topic: &str, partition| FetchedPartition {
            topic: topic.into(),
            partition,
            high_watermark: 9,
            log_start_offset: 0,
            next_offset: None,
            error: None,
            batches: vec![],
        };
        // A topic named again later in the request joins its first place.
        let answer =
            FetchAnswer::from_fetched(vec![fetched("b", 0), fetched("a", 3), fetched("b", 1), fetched("a", 0)]);
        let shape: Vec<(String, Vec<i32>)> =
            answer.topics.iter().map(|(t, ps)| (t.clone(), ps.iter().map(|p| p.index).collect())).collect();
        assert_eq!(shape, [("b".to_string(), vec![0, 1]), ("a".to_string(), vec![3, 0])]);
        // As many topics as a large request can name, each once: one place each.
        let many: Vec<FetchedPartition> = (0..200_000).map(|i| fetched(&format!("t{i}"), 0)).collect();
        let answer = FetchAnswer::from_fetched(many);
        assert_eq!(answer.topics.len(), 200_000);
        assert!(answer.topics.iter().enumerate().all(|(i, (t, ps))| *t == format!("t{i}") && ps.len() == 1));
    }

    #[tokio::test]
    async fn answer_pieces_are_written_whole_and_in_order() {
        // More pieces than one vectored write takes, some empty, through a pipe that takes a
        // few bytes per write.
        let pieces: Vec<Bytes> = (0..300u32).map(|i| Bytes::from(vec![i as u8; (i % 7) as usize * 3])).collect();
        let expected = pieces.concat();
        let (mut client, mut server) = tokio::io::duplex(16);
        let writer = tokio::spawn(async move { write_pieces(&mut client, pieces).await });
        let mut read = Vec::new();
        server.read_to_end(&mut read).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(read, expected);
    }

    #[test]
    fn answers_past_response_bytes_max_are_refused_before_they_are_encoded() {
        let ctx = |limit| RequestContext {
            api_key: ApiKey::Metadata,
            api_version: 9,
            correlation_id: 3,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            response_bytes_max: limit,
            producer_id_wait: None,
        };
        let topics: Vec<_> = (0..100)
            .map(|i| {
                metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(format!("topic-{i}")))))
                    .with_partitions(vec![metadata_response::MetadataResponsePartition::default(); 100])
            })
            .collect();
        let response = || ResponseKind::Metadata(MetadataResponse::default().with_topics(topics.clone()));
        let size = response_size(&response(), 9).unwrap();
        assert!(size > 100_000, "{size}");
        assert!(encode_response(&ctx(size - 1), response()).is_none());
        let encoded = encode_response(&ctx(size), response()).expect("within the limit");
        // The 4-byte size prefix and the response header (correlation id, tagged fields).
        assert_eq!(encoded.len(), 4 + 4 + 1 + size);
    }
}
