//! The native protocol front end: QUIC (quinn), ALPN `weir/1`, one request per bidirectional
//! stream. Only this module knows the frame format on the server side; it decodes, calls the
//! [`Broker`] service and encodes. A bad frame gets an error frame on its own stream; the
//! connection and the broker go on serving.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{oneshot, Semaphore};
use weir_sdk::wire::*;
use weir_sdk::{ErrorCode, WireError};

use crate::budget::{Budgets, ConnectionBudget, Held, OverBudget};
use crate::groups::{CommittedOffset, JoinRequest};
use crate::service::{Broker, CommitError, Fetch, FetchFrom, ListedOffset, NewTopic, Produce, TopicInfo};

#[derive(Debug, Clone)]
pub struct QuicConfig {
    pub addr: SocketAddr,
    pub frame_bytes_limit: usize,
    pub connections_max: usize,
    pub streams_per_connection_max: usize,
    /// A connection that opens no stream, sends no whole frame, or does not take an answer
    /// for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Budget a Fetch takes for its answer, on top of the request's bytes.
    pub fetch_answer_bytes: usize,
}

/// Application close codes the broker sends.
const CLOSE_IDLE: u32 = 1;
const CLOSE_LIMIT: u32 = 2;

pub struct QuicServer {
    endpoint: quinn::Endpoint,
}

impl QuicServer {
    pub fn bind(config: &QuicConfig, crypto: rustls::ServerConfig) -> anyhow::Result<Self> {
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let mut transport = weir_sdk::client::transport_config();
        // What quinn buffers of a connection's unread frames: the broker reads a connection's
        // frames only as its budget allows, and the rest waits in the client's send buffer.
        transport.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
        transport.receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
        transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(
            u32::try_from(config.streams_per_connection_max).unwrap_or(u32::MAX),
        ));
        server_config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server_config, config.addr)?;
        Ok(Self { endpoint })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub async fn serve(&self, broker: Broker, config: QuicConfig, budgets: Budgets) {
        let connections = Arc::new(Semaphore::new(config.connections_max));
        while let Some(incoming) = self.endpoint.accept().await {
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(limit = config.connections_max, remote = %incoming.remote_address(), "refusing connection: max.connections reached");
                incoming.refuse();
                continue;
            };
            let (broker, config, budgets) = (broker.clone(), config.clone(), budgets.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let conn = match incoming.await {
                    Ok(conn) => conn,
                    Err(e) => return tracing::debug!(error = %e, "handshake failed"),
                };
                // Counted once the handshake has shown the address is the client's.
                match budgets.connect(conn.remote_address().ip()) {
                    Ok(budget) => serve_connection(conn, broker, config, Arc::new(budget)).await,
                    Err(e) => {
                        tracing::warn!(remote = %conn.remote_address(), "refusing connection: {e}");
                        conn.close(quinn::VarInt::from_u32(CLOSE_LIMIT), e.to_string().as_bytes());
                    }
                }
            });
        }
    }

    pub fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"shutting down");
    }
}

/// Streams are accepted in the order the client opened them and read side by side, each frame
/// within the connection's budget (see [`crate::budget`]). Each stream waits for the one
/// before it to have queued its appends before queueing its own, so produce requests
/// pipelined on one connection are appended in the order they were sent.
async fn serve_connection(conn: quinn::Connection, broker: Broker, config: QuicConfig, budget: Arc<ConnectionBudget>) {
    let remote = conn.remote_address();
    tracing::debug!(%remote, "connection opened");
    let mut previous: Option<oneshot::Receiver<()>> = None;
    loop {
        let (send, recv) = match tokio::time::timeout(config.idle_timeout, conn.accept_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                tracing::debug!(%remote, reason = %e, "connection closed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "connection idle; closing it");
                conn.close(quinn::VarInt::from_u32(CLOSE_IDLE), b"no request within connection_idle_ms_max");
                return;
            }
        };
        let (queued, next) = oneshot::channel();
        let turn = previous.replace(next);
        let (broker, config, budget, conn) = (broker.clone(), config.clone(), budget.clone(), conn.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_stream(send, recv, &broker, &config, &budget, turn, queued).await {
                tracing::debug!(%remote, error = %e, "stream ended early");
                if e.downcast_ref::<IdleStream>().is_some() {
                    conn.close(quinn::VarInt::from_u32(CLOSE_IDLE), e.to_string().as_bytes());
                } else if let Some(over) = e.downcast_ref::<OverBudget>() {
                    // Once per connection: its other streams fail the same way as it closes.
                    if conn.close_reason().is_none() {
                        tracing::warn!(%remote, "closing connection: {over}");
                        conn.close(quinn::VarInt::from_u32(CLOSE_LIMIT), over.to_string().as_bytes());
                    }
                }
            }
        });
    }
}

/// A stream that did not send its frame, or take its answer, within the idle timeout.
#[derive(Debug)]
struct IdleStream(&'static str);

impl std::fmt::Display for IdleStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} within connection_idle_ms_max", self.0)
    }
}

impl std::error::Error for IdleStream {}

/// Reads a frame if the connection's budget has room for it. A frame that does not fit ends
/// the connection ([`OverBudget`]): see [`crate::budget`] for why a QUIC stream does not wait.
async fn read_frame_within(
    recv: &mut quinn::RecvStream,
    config: &QuicConfig,
    budget: &ConnectionBudget,
) -> anyhow::Result<Result<(Frame, Held), WireError>> {
    let idle = || IdleStream("no whole frame arrived");
    let length = weir_sdk::client::read_frame_length(recv, config.frame_bytes_limit);
    let declared = match tokio::time::timeout(config.idle_timeout, length).await.map_err(|_| idle())? {
        Ok(declared) => declared,
        Err(e) => return Ok(Err(e)),
    };
    let held = budget.take_or_refuse(declared + 4, config.idle_timeout).await?;
    let body = weir_sdk::client::read_frame_body(recv, declared);
    Ok(tokio::time::timeout(config.idle_timeout, body).await.map_err(|_| idle())?.map(|frame| (frame, held)))
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    broker: &Broker,
    config: &QuicConfig,
    budget: &ConnectionBudget,
    turn: Option<oneshot::Receiver<()>>,
    queued: oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let (frame, mut held) = match read_frame_within(&mut recv, config, budget).await? {
        Ok((frame, held)) => (Ok(frame), held),
        Err(e) => (Err(e), Held::default()),
    };
    if matches!(&frame, Ok(f) if f.kind == FrameKind::Fetch) {
        held.add(budget.take_shared_or_refuse(config.fetch_answer_bytes, config.idle_timeout).await?);
    }
    if let Some(turn) = turn {
        // Dropped or sent, either way the previous stream has queued what it had to.
        let _ = turn.await;
    }
    let outcome = match frame {
        Ok(frame) if frame.kind == FrameKind::Produce => {
            let queued_produce = match frame.header::<ProduceRequest>().and_then(|r| produce_input(r, &frame.payload)) {
                Ok((acks, request)) => broker.produce_enqueue(request).await.map(|pending| (acks, pending)),
                Err(e) => Err(e),
            };
            drop(queued);
            match queued_produce {
                Ok((Acks::None, pending)) => {
                    pending.await;
                    return Ok(());
                }
                Ok((_, pending)) => {
                    let partitions = pending
                        .await
                        .into_iter()
                        .map(|p| match p.base_offset {
                            Ok(base_offset) => ProducePartitionResponse {
                                partition: p.partition,
                                base_offset,
                                log_append_time_ms: -1,
                                error: None,
                            },
                            Err(e) => ProducePartitionResponse {
                                partition: p.partition,
                                base_offset: -1,
                                log_append_time_ms: -1,
                                error: Some(e),
                            },
                        })
                        .collect();
                    let response = ProduceResponse { partitions };
                    Ok(Some((Frame::new(FrameKind::Produce, &response, Bytes::new()), Vec::new())))
                }
                Err(e) => Err(e),
            }
        }
        // A request that changes or reads state takes effect before the next stream's; a
        // fetch (a long poll) and the group calls that wait for a rebalance overlap later ones.
        // `handle` is boxed: inline, its states for every kind of request made each stream's
        // task 6.8 KB (2.5 KB boxed), copied a few times as the task is spawned.
        Ok(frame) if matches!(frame.kind, FrameKind::Fetch | FrameKind::JoinGroup | FrameKind::SyncGroup) => {
            drop(queued);
            Box::pin(handle(broker, frame)).await
        }
        Ok(frame) if frame.kind == FrameKind::InitProducerId && budget.take_producer_id().is_err() => {
            drop(queued);
            let wait = budget.take_producer_id().err().unwrap_or_default();
            Err(WireError::new(
                ErrorCode::LimitReached,
                format!(
                    "this address took its producer_ids_per_address_per_minute; try again in {} ms",
                    wait.as_millis()
                ),
            ))
        }
        Ok(frame) => {
            let answer = Box::pin(handle(broker, frame)).await;
            drop(queued);
            answer
        }
        Err(e) => {
            drop(queued);
            tracing::debug!(error = %e, "bad frame");
            let _ = recv.stop(quinn::VarInt::from_u32(1));
            Err(e)
        }
    };
    let mut chunks = match outcome {
        Ok(Some((frame, extra))) => match answer_too_large(&frame, &extra, config.frame_bytes_limit) {
            None => response_chunks(&frame, extra),
            Some(e) => response_chunks(&Frame::error(&e), Vec::new()),
        },
        Ok(None) => return Ok(()),
        Err(e) => response_chunks(&Frame::error(&e), Vec::new()),
    };
    // The answer, taken by the peer before the stream is dropped, within the idle timeout:
    // a client that does not read its answers gives back the budget they hold.
    let answer = async {
        send.write_all_chunks(&mut chunks).await?;
        send.finish()?;
        let _ = send.stopped().await;
        anyhow::Ok(())
    };
    match tokio::time::timeout(config.idle_timeout, answer).await {
        Ok(sent) => sent?,
        Err(_) => return Err(IdleStream("the answer was not taken").into()),
    }
    drop(held);
    Ok(())
}

/// An answer a client could not read (its header past the header limit, or the frame past
/// `frame_bytes_max`) is replaced by an error that says so, rather than sent.
fn answer_too_large(frame: &Frame, extra: &[Bytes], frame_bytes_limit: usize) -> Option<WireError> {
    let total = frame.encoded_len() + extra.iter().map(Bytes::len).sum::<usize>();
    if frame.header.len() > HEADER_BYTES_LIMIT || total > frame_bytes_limit {
        return Some(WireError::new(
            ErrorCode::LimitReached,
            format!(
                "the answer would be {total} bytes with a {}-byte header; the limits are frame_bytes_max = {frame_bytes_limit} and a {HEADER_BYTES_LIMIT}-byte header: ask for less (fewer topics, partitions or bytes)",
                frame.header.len()
            ),
        ));
    }
    None
}

fn response_chunks(frame: &Frame, extra: Vec<Bytes>) -> Vec<Bytes> {
    if extra.is_empty() {
        return vec![frame.encode().freeze()];
    }
    // The frame's payload is the concatenation of `extra`: send the prefix and header, then the
    // stored batches as they are, without copying them into one buffer.
    let payload_len: usize = extra.iter().map(Bytes::len).sum();
    let mut head = Frame { kind: frame.kind, header: frame.header.clone(), payload: Bytes::new() }.encode();
    let total = head.len() - 4 + payload_len;
    // Bounded by frame_bytes_max (at most 1 GiB, checked at start).
    head[..4].copy_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    let mut chunks = Vec::with_capacity(extra.len() + 1);
    chunks.push(head.freeze());
    chunks.extend(extra);
    chunks
}

/// The service's produce input from a Produce frame: the payload split by the byte counts the
/// header declares, which must add up to the payload. The acks level stays here: it decides
/// whether this front end answers at all.
fn produce_input(request: ProduceRequest, payload: &Bytes) -> Result<(Acks, Produce), WireError> {
    let declared: u64 = request.partitions.iter().map(|p| u64::from(p.bytes)).sum();
    if declared != payload.len() as u64 {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("produce request declares {declared} bytes of batches but carries {}", payload.len()),
        ));
    }
    let mut at = 0usize;
    let mut partitions = Vec::with_capacity(request.partitions.len());
    for p in &request.partitions {
        let len = p.bytes as usize;
        let partition = (p.partition != PARTITION_UNASSIGNED).then_some(p.partition);
        partitions.push((partition, payload.slice(at..at + len)));
        at += len;
    }
    let acks_all = request.acks == Acks::All;
    Ok((request.acks, Produce { topic: request.topic, partitions, acks_all }))
}

fn topic_description(t: TopicInfo) -> TopicDescription {
    TopicDescription {
        name: t.name,
        id: t.id,
        partitions: t
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                leader: p.leader,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
                replicas: p.replicas,
                isr: p.isr,
                log_end_offset: p.log_end_offset,
                adding_replicas: p.adding_replicas,
                removing_replicas: p.removing_replicas,
            })
            .collect(),
        config: t.config,
    }
}

/// Decodes the request, calls the service, encodes the response. `None`: send nothing.
/// A native group request forwarded to the group's coordinator over the cluster endpoint: the
/// request frame as the client sent it; the answer is the response frame.
pub const RPC_GROUP_FRAME: u8 = 19;

/// How long a forwarding broker waits for the coordinator (a JoinGroup waits out a rebalance,
/// up to the 30-minute rebalance timeout).
const GROUP_FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(31 * 60);

/// The group a group request names.
fn group_of(frame: &Frame) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        group_id: String,
    }
    match frame.kind {
        FrameKind::JoinGroup
        | FrameKind::SyncGroup
        | FrameKind::Heartbeat
        | FrameKind::LeaveGroup
        | FrameKind::OffsetCommit
        | FrameKind::OffsetFetch
        | FrameKind::DescribeGroup
        | FrameKind::ResetGroupOffsets
        | FrameKind::DeleteGroup => frame.header::<Named>().ok().map(|n| n.group_id),
        _ => None,
    }
}

async fn handle(broker: &Broker, frame: Frame) -> Result<Option<(Frame, Vec<Bytes>)>, WireError> {
    // In a cluster a group lives on its coordinator: another broker passes its requests on.
    if let Some(coordinator) =
        group_of(&frame).and_then(|group| broker.group_coordinator(&group)).filter(|c| c.node_id != broker.node_id())
    {
        let answer = broker
            .controller()
            .ask(coordinator.node_id, RPC_GROUP_FRAME, &frame.encode(), GROUP_FORWARD_TIMEOUT)
            .await?;
        let response = Frame::decode(&answer, crate::cluster::RPC_BYTES_MAX)?;
        if response.kind == FrameKind::Error {
            return Err(response.header()?);
        }
        return Ok(Some((response, Vec::new())));
    }
    handle_here(broker, frame).await
}

/// Answers a group request another broker forwarded (`RPC_GROUP_FRAME`), here: the response
/// frame, or an error frame.
pub async fn answer_forwarded_group_frame(broker: &Broker, body: &[u8]) -> Vec<u8> {
    let answered = match Frame::decode(body, crate::cluster::RPC_BYTES_MAX) {
        Ok(frame) if group_of(&frame).is_some() => handle_here(broker, frame).await,
        Ok(frame) => Err(WireError::new(ErrorCode::InvalidRequest, format!("{:?} is not a group request", frame.kind))),
        Err(e) => Err(e),
    };
    match answered {
        Ok(Some((response, _))) => response.encode().to_vec(),
        Ok(None) => {
            Frame::error(&WireError::new(ErrorCode::Internal, "a group request had no answer")).encode().to_vec()
        }
        Err(e) => Frame::error(&e).encode().to_vec(),
    }
}

/// Answers a request on this broker.
async fn handle_here(broker: &Broker, frame: Frame) -> Result<Option<(Frame, Vec<Bytes>)>, WireError> {
    let empty = Bytes::new;
    let reply = |kind, header: &dyn erased::Header| Frame { kind, header: header.json(), payload: empty() };
    let response = match frame.kind {
        FrameKind::CreateTopic => {
            let req: CreateTopicRequest = frame.header()?;
            let new = NewTopic {
                name: req.name,
                partitions: Some(req.partitions),
                replication_factor: Some(req.replication_factor),
                config: Vec::new(),
                validate_only: false,
            };
            let created = broker.create_topic_with(new, req.config).await?;
            reply(frame.kind, &topic_description(created))
        }
        FrameKind::DeleteTopic => {
            let req: TopicNameRequest = frame.header()?;
            broker.delete_topic(&req.name).await?;
            reply(frame.kind, &Empty {})
        }
        FrameKind::ListTopics => reply(frame.kind, &ListTopicsResponse { topics: broker.list_topics() }),
        FrameKind::ClusterStatus => reply(frame.kind, &broker.cluster_status()),
        FrameKind::DescribeTopic => {
            let req: TopicNameRequest = frame.header()?;
            reply(frame.kind, &topic_description(broker.describe_topic(&req.name)?))
        }
        FrameKind::ReassignPartitions => {
            let req: ReassignPartitionsRequest = frame.header()?;
            let moves = req.partitions.into_iter().map(|m| (m.partition, m.replicas)).collect();
            let info = broker.reassign_partitions(&req.topic, moves, req.throttle_bytes_per_sec).await?;
            reply(frame.kind, &topic_description(info))
        }
        FrameKind::ListGroups => reply(frame.kind, &ListGroupsResponse { groups: broker.list_groups() }),
        FrameKind::DescribeGroup => {
            let req: GroupNameRequest = frame.header()?;
            reply(frame.kind, &broker.describe_group(&req.group_id)?)
        }
        FrameKind::ResetGroupOffsets => {
            let req: ResetOffsetsRequest = frame.header()?;
            reply(frame.kind, &broker.reset_group_offsets(req).await?)
        }
        FrameKind::DeleteGroup => {
            let req: GroupNameRequest = frame.header()?;
            broker.delete_group(&req.group_id).await?;
            reply(frame.kind, &Empty {})
        }
        FrameKind::ElectLeaders => {
            let req: ElectLeadersRequest = frame.header()?;
            reply(frame.kind, &ElectLeadersResponse { moved: broker.elect_preferred_leaders(req.topic).await? })
        }
        FrameKind::AlterTopic => {
            let req: AlterTopicRequest = frame.header()?;
            reply(frame.kind, &topic_description(broker.alter_topic(&req.name, req.partitions, &req.config).await?))
        }
        FrameKind::Produce => return Err(WireError::new(ErrorCode::Internal, "produce is served by serve_stream")),
        FrameKind::Fetch => {
            let req: FetchRequest = frame.header()?;
            let fetch = Fetch {
                max_wait_ms: req.max_wait_ms,
                min_bytes: req.min_bytes,
                max_bytes: req.max_bytes,
                partitions: req
                    .partitions
                    .into_iter()
                    .map(|p| FetchFrom {
                        topic: p.topic,
                        partition: p.partition,
                        offset: p.offset,
                        max_bytes: p.max_bytes,
                        module: p.module,
                    })
                    .collect(),
                from_replica: req.replica_reads,
            };
            let fetched = broker.fetch(fetch).await?;
            let mut partitions = Vec::with_capacity(fetched.len());
            let mut chunks = Vec::new();
            for p in fetched {
                partitions.push(FetchPartitionResponse {
                    // Bounded by fetch_bytes_max, or by one batch's max.message.bytes (u32s).
                    bytes: u32::try_from(p.bytes()).unwrap_or(u32::MAX),
                    topic: p.topic,
                    partition: p.partition,
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                    error: p.error,
                    next_offset: p.next_offset,
                });
                chunks.extend(p.batches);
            }
            return Ok(Some((reply(frame.kind, &FetchResponse { partitions }), chunks)));
        }
        FrameKind::ListOffsets => {
            let req: ListOffsetsRequest = frame.header()?;
            let partitions = broker
                .list_offsets_routed(&req.topic, &req.partitions.iter().map(|p| (*p, req.spec)).collect::<Vec<_>>())
                .await?
                .into_iter()
                .map(|ListedOffset { partition, found }| match found {
                    Ok((offset, timestamp)) => ListOffsetsPartition { partition, offset, timestamp, error: None },
                    Err(e) => ListOffsetsPartition { partition, offset: -1, timestamp: -1, error: Some(e) },
                })
                .collect();
            reply(frame.kind, &ListOffsetsResponse { partitions })
        }
        FrameKind::DeployModule => reply(frame.kind, &broker.deploy_module(frame.header()?, frame.payload).await?),
        FrameKind::ListModules => reply(frame.kind, &broker.list_modules()),
        FrameKind::InitProducerId => {
            let id = broker.init_producer_id().await?;
            reply(
                frame.kind,
                &InitProducerIdResponse { producer_id: id.producer_id, producer_epoch: id.producer_epoch },
            )
        }
        FrameKind::DescribeModule => {
            let req: ModuleNameRequest = frame.header()?;
            reply(frame.kind, &broker.describe_module(&req.name)?)
        }
        FrameKind::ModuleAction => {
            let req: ModuleActionRequest = frame.header()?;
            reply(frame.kind, &broker.module_action(&req.name, req.action).await?)
        }
        FrameKind::JoinGroup => {
            let req: JoinGroupRequest = frame.header()?;
            let joined = broker
                .groups()
                .join(JoinRequest {
                    group_id: req.group_id,
                    member_id: req.member_id,
                    client_id: req.client_id,
                    client_host: String::new(),
                    session_timeout_ms: req.session_timeout_ms,
                    rebalance_timeout_ms: req.rebalance_timeout_ms,
                    protocol_type: req.protocol_type,
                    protocols: req.protocols.into_iter().map(|p| (p.name, Bytes::from(p.metadata))).collect(),
                })
                .await
                .map_err(WireError::from)?;
            reply(
                frame.kind,
                &JoinGroupResponse {
                    generation_id: joined.generation_id,
                    protocol_name: joined.protocol_name,
                    leader: joined.leader,
                    member_id: joined.member_id,
                    members: joined
                        .members
                        .into_iter()
                        .map(|(member_id, m)| GroupMember { member_id, metadata: m.to_vec() })
                        .collect(),
                },
            )
        }
        FrameKind::SyncGroup => {
            let req: SyncGroupRequest = frame.header()?;
            let assignments = req.assignments.into_iter().map(|a| (a.member_id, Bytes::from(a.metadata))).collect();
            let assignment = broker
                .groups()
                .sync(&req.group_id, req.generation_id, &req.member_id, assignments)
                .await
                .map_err(WireError::from)?;
            reply(frame.kind, &SyncGroupResponse { assignment: assignment.to_vec() })
        }
        FrameKind::Heartbeat => {
            let req: GroupMemberRequest = frame.header()?;
            broker.groups().heartbeat(&req.group_id, req.generation_id, &req.member_id).map_err(WireError::from)?;
            reply(frame.kind, &Empty {})
        }
        FrameKind::LeaveGroup => {
            let req: GroupMemberRequest = frame.header()?;
            for outcome in broker.groups().leave(&req.group_id, std::slice::from_ref(&req.member_id)) {
                outcome.map_err(WireError::from)?;
            }
            reply(frame.kind, &Empty {})
        }
        FrameKind::OffsetCommit => {
            let req: OffsetCommitRequest = frame.header()?;
            let offsets = req
                .offsets
                .into_iter()
                .map(|o| {
                    let partition = i32::try_from(o.partition).unwrap_or(i32::MAX);
                    (
                        o.topic,
                        partition,
                        CommittedOffset { offset: o.offset, metadata: None, commit_time_ms: weir_sdk::wire::now_ms() },
                    )
                })
                .collect();
            broker.commit_offsets(&req.group_id, req.generation_id, &req.member_id, offsets).await.map_err(
                |e| match e {
                    CommitError::UnknownPartitions { first, .. } => first,
                    CommitError::Group(e) => WireError::from(e),
                },
            )?;
            reply(frame.kind, &Empty {})
        }
        FrameKind::OffsetFetch => {
            let req: OffsetFetchRequest = frame.header()?;
            let offsets = broker
                .groups()
                .committed(&req.group_id, Some(&req.partitions))
                .into_iter()
                .filter_map(|(topic, partition, c)| c.map(|c| PartitionOffset { topic, partition, offset: c.offset }))
                .collect();
            reply(frame.kind, &OffsetFetchResponse { offsets })
        }
        FrameKind::Error => return Err(WireError::new(ErrorCode::InvalidRequest, "an error frame is not a request")),
    };
    Ok(Some((response, Vec::new())))
}

mod erased {
    use bytes::Bytes;

    /// Lets `handle` build response frames from differently typed headers with one closure.
    pub trait Header {
        fn json(&self) -> Bytes;
    }

    impl<T: serde::Serialize> Header for T {
        fn json(&self) -> Bytes {
            Bytes::from(serde_json::to_vec(self).expect("message types serialize"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_client_could_not_read_become_errors_naming_the_limit() {
        let frame = Frame::new(FrameKind::Fetch, &Empty {}, Bytes::new());
        let chunks = vec![Bytes::from(vec![0u8; 4096])];
        assert!(answer_too_large(&frame, &chunks, 1 << 20).is_none());
        let e = answer_too_large(&frame, &chunks, 4096).expect("past frame_bytes_max");
        assert_eq!(e.code, ErrorCode::LimitReached);
        assert!(e.message.contains("frame_bytes_max = 4096"), "{e}");
        let wide = Frame::new(FrameKind::ListTopics, &vec!["t".repeat(1000); 2000], Bytes::new());
        assert!(answer_too_large(&wide, &[], 1 << 30).is_some(), "a header past the header limit");
    }
}
