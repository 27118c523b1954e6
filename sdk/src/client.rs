//! The QUIC connection to a broker, and the admin calls on top of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::error::{ClientError, ErrorCode, WireError};
use crate::pool::{BufferPool, Pooled};
use crate::wire::*;

/// How the client decides to trust the broker's certificate.
#[derive(Debug, Clone)]
pub enum TlsTrust {
    /// A PEM file with the CA (or the broker's self-signed certificate).
    CaFile(PathBuf),
    /// PEM bytes, as [`TlsTrust::CaFile`].
    CaPem(Vec<u8>),
    /// The SHA-256 of the broker certificate's DER bytes, hex-encoded.
    Fingerprint(String),
    /// Trust any certificate. For trying things out on one machine only.
    Insecure,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the broker's native (QUIC) listener.
    pub bootstrap: String,
    pub tls: TlsTrust,
    /// Name the broker's certificate must carry.
    pub server_name: String,
    pub frame_bytes_limit: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl ClientConfig {
    pub fn new(bootstrap: impl Into<String>, tls: TlsTrust) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            tls,
            server_name: "localhost".into(),
            frame_bytes_limit: DEFAULT_FRAME_BYTES_LIMIT,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A connection to one broker, re-established on demand after it drops. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    connection: Mutex<Option<quinn::Connection>>,
}

/// Flow-control windows sized for loopback and LAN bulk transfer rather than quinn's defaults.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(32 * 1024 * 1024));
    t.receive_window(quinn::VarInt::from_u32(128 * 1024 * 1024));
    t.send_window(128 * 1024 * 1024);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // A broker that stops answering (killed, cut off) is noticed within 5 s: its requests
    // fail and are retried elsewhere instead of waiting out their timeouts (QUIC over UDP hears
    // no reset from a killed process).
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(5)).expect("5 s is a valid idle timeout"),
    ));
    t
}

impl Client {
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let crypto = crate::tls::client_crypto(&config.tls)?;
        let quic =
            quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
        client_config.transport_config(Arc::new(transport_config()));
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let bind =
            if resolve(&config.bootstrap).await?.is_ipv6() { "[::]:0".parse().expect("literal address") } else { bind };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| ClientError::Connect { addr: config.bootstrap.clone(), reason: e.to_string() })?;
        endpoint.set_default_client_config(client_config);
        let client = Self { inner: Arc::new(Inner { config, endpoint, connection: Mutex::new(None) }) };
        client.connection().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Whether the client holds an open connection now (without connecting).
    pub fn connected(&self) -> bool {
        self.inner.connection.try_lock().is_ok_and(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
    }

    /// The live connection, reconnecting if the previous one closed.
    pub async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        let mut guard = self.inner.connection.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        let cfg = &self.inner.config;
        let addr = resolve(&cfg.bootstrap).await?;
        let connect_err = |reason: String| ClientError::Connect { addr: cfg.bootstrap.clone(), reason };
        let connecting = self.inner.endpoint.connect(addr, &cfg.server_name).map_err(|e| connect_err(e.to_string()))?;
        let conn = tokio::time::timeout(cfg.connect_timeout, connecting)
            .await
            .map_err(|_| connect_err(format!("no answer within {:?}", cfg.connect_timeout)))?
            .map_err(|e| connect_err(e.to_string()))?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Sends one request frame and waits for its response frame.
    pub async fn request(&self, frame: &Frame) -> Result<Frame, ClientError> {
        let cfg = &self.inner.config;
        tokio::time::timeout(cfg.request_timeout, self.request_inner(frame, true))
            .await
            .map_err(|_| {
                ClientError::Broker(WireError::new(
                    ErrorCode::RequestTimedOut,
                    format!("no response within {:?}", cfg.request_timeout),
                ))
            })?
            .map(|f| f.expect("response was awaited"))
    }

    /// Sends a request without waiting for the response (produce with acks=none).
    pub async fn send_only(&self, frame: &Frame) -> Result<(), ClientError> {
        self.request_inner(frame, false).await.map(|_| ())
    }

    async fn request_inner(&self, frame: &Frame, await_response: bool) -> Result<Option<Frame>, ClientError> {
        let pending = self.send_request(frame).await?;
        if !await_response {
            return Ok(None);
        }
        pending.response().await.map(Some)
    }

    /// Opens a stream and sends the request, without waiting for the answer. The broker queues
    /// produce requests of one connection in the order their streams were opened, so a caller
    /// that sends in order and awaits the answers later pipelines without reordering.
    pub async fn send_request(&self, frame: &Frame) -> Result<PendingResponse, ClientError> {
        self.send_request_chunks(&mut frame.encode_chunks()).await
    }

    /// As [`send_request`](Self::send_request), for a frame given as its head
    /// ([`Frame::encode_head`]) followed by its payload's parts, written without joining them.
    pub async fn send_request_chunks(&self, chunks: &mut [Bytes]) -> Result<PendingResponse, ClientError> {
        let conn = self.connection().await?;
        let lost = |e: String| ClientError::ConnectionLost(e);
        let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
        send.write_all_chunks(chunks).await.map_err(|e| lost(e.to_string()))?;
        send.finish().map_err(|e| lost(e.to_string()))?;
        Ok(PendingResponse {
            recv,
            frame_bytes_limit: self.inner.config.frame_bytes_limit,
            timeout: self.inner.config.request_timeout,
        })
    }

    /// Whether both are handles of one client (one connection to one broker).
    pub fn is_same(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Sends a typed request and parses the typed response header.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: FrameKind,
        request: &Req,
        payload: Bytes,
    ) -> Result<(Resp, Bytes), ClientError> {
        let response = self.request(&Frame::new(kind, request, payload)).await?;
        if response.kind != kind {
            return Err(ClientError::Invalid(format!("asked {kind:?}, broker answered {:?}", response.kind)));
        }
        Ok((response.header()?, response.payload))
    }

    pub fn close(&self) {
        self.inner.endpoint.close(quinn::VarInt::from_u32(0), b"bye");
    }
}

/// Reads one frame, checking the length prefix against the limit before reading the rest.
pub async fn read_frame(recv: &mut quinn::RecvStream, frame_bytes_limit: usize) -> Result<Frame, WireError> {
    let declared = read_frame_length(recv, frame_bytes_limit).await?;
    read_frame_body(recv, declared).await
}

/// Reads a frame's length prefix: the bytes that follow it, within the limit.
pub async fn read_frame_length(recv: &mut quinn::RecvStream, frame_bytes_limit: usize) -> Result<usize, WireError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut prefix[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) => {
                return Err(WireError::new(
                    ErrorCode::MalformedFrame,
                    format!("stream ended after {got} bytes, inside the 4-byte length prefix"),
                ))
            }
            Err(e) => return Err(WireError::new(ErrorCode::MalformedFrame, format!("reading frame: {e}"))),
        }
    }
    read_length_prefix(&prefix, frame_bytes_limit)
}

/// Reads the `declared` bytes of a frame after its length prefix.
pub async fn read_frame_body(recv: &mut quinn::RecvStream, declared: usize) -> Result<Frame, WireError> {
    // The chunks quinn hands over are kept and joined once at the end, growing only with the
    // bytes that actually arrived rather than trusting `declared` up front. A large frame
    // for which a kept buffer fits `declared` (no new memory for a claim) is copied into it
    // chunk by chunk instead, while each chunk is still in the cache from its decryption, and
    // quinn's packet buffers go back as they are read.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut joining: Option<Pooled> = None;
    let mut received = 0usize;
    loop {
        match recv.read_chunk(declared - received + 1, true).await {
            Ok(Some(chunk)) => {
                received += chunk.bytes.len();
                if received > declared {
                    return Err(WireError::new(
                        ErrorCode::MalformedFrame,
                        format!("frame declares {declared} bytes after its length prefix but more arrived"),
                    ));
                }
                // Asked once, at the second chunk: a frame that finds no kept buffer then does
                // not take the pool's lock again for each of its chunks.
                if joining.is_none() && chunks.len() == 1 && declared >= JOINED_MIN_BYTES {
                    joining = JOINED.take_kept(declared).map(|mut kept| {
                        for chunk in chunks.drain(..) {
                            kept.buffer().extend_from_slice(&chunk);
                        }
                        kept
                    });
                }
                match &mut joining {
                    Some(kept) => kept.buffer().extend_from_slice(&chunk.bytes),
                    None => chunks.push(chunk.bytes),
                }
            }
            Ok(None) => break,
            Err(e) => return Err(WireError::new(ErrorCode::MalformedFrame, format!("reading frame: {e}"))),
        }
    }
    if received != declared {
        return Err(WireError::new(
            ErrorCode::MalformedFrame,
            format!("truncated frame: declares {declared} bytes after its length prefix but {received} arrived"),
        ));
    }
    let body = if let Some(joined) = joining {
        Bytes::from_owner(joined)
    } else if chunks.len() == 1 {
        chunks.pop().expect("one chunk")
    } else if received < JOINED_MIN_BYTES {
        let mut joined = bytes::BytesMut::with_capacity(received);
        for chunk in &chunks {
            joined.extend_from_slice(chunk);
        }
        joined.freeze()
    } else {
        let mut joined = JOINED.take(received);
        for chunk in &chunks {
            joined.buffer().extend_from_slice(chunk);
        }
        Bytes::from_owner(joined)
    };
    Frame::decode_body(body)
}

/// How many bytes of buffers that joined a frame are kept for the next frames, per process,
/// the largest one kept (a fetch answer of the default consumer can reach 8 MiB), and the
/// smallest frame that takes one (smaller ones come from malloc's heap, whose pages stay
/// mapped).
const JOINED_KEPT: usize = 16 << 20;
const JOINED_KEPT_BYTES: usize = 8 << 20;
const JOINED_MIN_BYTES: usize = 64 << 10;

/// Buffers of frames that were joined from several chunks, waiting to be used again.
static JOINED: BufferPool = BufferPool::new(JOINED_KEPT, JOINED_KEPT_BYTES);

/// A request on the wire whose answer has not been read yet.
pub struct PendingResponse {
    recv: quinn::RecvStream,
    frame_bytes_limit: usize,
    timeout: Duration,
}

impl PendingResponse {
    pub async fn response(mut self) -> Result<Frame, ClientError> {
        let read = read_frame(&mut self.recv, self.frame_bytes_limit);
        let response = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| {
                ClientError::Broker(WireError::new(
                    ErrorCode::RequestTimedOut,
                    format!("no response within {:?}", self.timeout),
                ))
            })?
            .map_err(|e| match e.code {
                ErrorCode::MalformedFrame => ClientError::ConnectionLost(e.message),
                _ => ClientError::Broker(e),
            })?;
        if response.kind == FrameKind::Error {
            return Err(ClientError::Broker(response.header::<WireError>()?));
        }
        Ok(response)
    }
}

async fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| ClientError::Connect { addr: addr.to_owned(), reason: format!("cannot resolve: {e}") })?;
    addrs.next().ok_or_else(|| ClientError::Connect { addr: addr.to_owned(), reason: "resolves to no address".into() })
}

/// SHA-256 of a certificate's DER bytes, hex, as `--cert-sha256` takes it.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Topic administration.
#[derive(Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<TopicDescription, ClientError> {
        self.create_replicated_topic(name, partitions, 1, config).await
    }

    /// Creates a topic whose partitions have `replication_factor` replicas on distinct brokers.
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<TopicDescription, ClientError> {
        let req = CreateTopicRequest { name: name.into(), partitions, config, replication_factor };
        Ok(self.client.call(FrameKind::CreateTopic, &req, Bytes::new()).await?.0)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let _: (Empty, _) =
            self.client.call(FrameKind::DeleteTopic, &TopicNameRequest { name: name.into() }, Bytes::new()).await?;
        Ok(())
    }

    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        let (resp, _): (ListTopicsResponse, _) =
            self.client.call(FrameKind::ListTopics, &Empty {}, Bytes::new()).await?;
        Ok(resp.topics)
    }

    /// The cluster's controller as the connected broker sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse, ClientError> {
        Ok(self.client.call(FrameKind::ClusterStatus, &Empty {}, Bytes::new()).await?.0)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        Ok(self.client.call(FrameKind::DescribeTopic, &TopicNameRequest { name: name.into() }, Bytes::new()).await?.0)
    }

    /// Moves partitions to new replicas, or cancels moves under way; see
    /// [`ReassignPartitionsRequest`]. Answers at once: watch `describe_topic` for the move.
    pub async fn reassign_partitions(
        &self,
        request: &ReassignPartitionsRequest,
    ) -> Result<TopicDescription, ClientError> {
        Ok(self.client.call(FrameKind::ReassignPartitions, request, Bytes::new()).await?.0)
    }

    /// Moves leadership back to in-sync preferred replicas (of `topic`, or of every topic);
    /// answers the partitions moved.
    pub async fn elect_preferred_leaders(&self, topic: Option<&str>) -> Result<Vec<String>, ClientError> {
        let request = ElectLeadersRequest { topic: topic.map(str::to_owned) };
        let answer: ElectLeadersResponse = self.client.call(FrameKind::ElectLeaders, &request, Bytes::new()).await?.0;
        Ok(answer.moved)
    }

    pub async fn alter_topic(&self, request: &AlterTopicRequest) -> Result<TopicDescription, ClientError> {
        Ok(self.client.call(FrameKind::AlterTopic, request, Bytes::new()).await?.0)
    }

    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: Vec<u32>,
        spec: OffsetSpec,
    ) -> Result<Vec<ListOffsetsPartition>, ClientError> {
        let req = ListOffsetsRequest { topic: topic.into(), partitions, spec };
        let (resp, _): (ListOffsetsResponse, _) = self.client.call(FrameKind::ListOffsets, &req, Bytes::new()).await?;
        Ok(resp.partitions)
    }

    /// A new producer id and epoch, for an idempotent producer.
    pub async fn init_producer_id(&self) -> Result<InitProducerIdResponse, ClientError> {
        Ok(self.client.call(FrameKind::InitProducerId, &Empty {}, Bytes::new()).await?.0)
    }

    /// Deploys a plugin component (a new version if the name is deployed already).
    pub async fn deploy_module(
        &self,
        request: &DeployModuleRequest,
        component: Bytes,
    ) -> Result<ModuleDescription, ClientError> {
        Ok(self.client.call(FrameKind::DeployModule, request, component).await?.0)
    }

    pub async fn list_modules(&self) -> Result<Vec<ModuleDescription>, ClientError> {
        let (resp, _): (ListModulesResponse, _) =
            self.client.call(FrameKind::ListModules, &Empty {}, Bytes::new()).await?;
        Ok(resp.modules)
    }

    pub async fn describe_module(&self, name: &str) -> Result<ModuleDescription, ClientError> {
        Ok(self.client.call(FrameKind::DescribeModule, &ModuleNameRequest { name: name.into() }, Bytes::new()).await?.0)
    }

    pub async fn module_action(&self, name: &str, action: ModuleAction) -> Result<ModuleDescription, ClientError> {
        let req = ModuleActionRequest { name: name.into(), action };
        Ok(self.client.call(FrameKind::ModuleAction, &req, Bytes::new()).await?.0)
    }

    /// Every consumer group this broker coordinates, with its state, members and total lag.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let (resp, _): (ListGroupsResponse, _) =
            self.client.call(FrameKind::ListGroups, &Empty {}, Bytes::new()).await?;
        Ok(resp.groups)
    }

    /// A group's state, members with their assignments, and its committed offsets with lag.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescribed, ClientError> {
        let req = GroupNameRequest { group_id: group_id.into() };
        Ok(self.client.call(FrameKind::DescribeGroup, &req, Bytes::new()).await?.0)
    }

    /// Moves a group's committed offsets (only while it has no members); with `dry_run`, only
    /// says what would change.
    pub async fn reset_group_offsets(&self, req: &ResetOffsetsRequest) -> Result<ResetOffsetsResponse, ClientError> {
        Ok(self.client.call(FrameKind::ResetGroupOffsets, req, Bytes::new()).await?.0)
    }

    /// Deletes a group and its committed offsets (refused while it has members).
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ClientError> {
        let req = GroupNameRequest { group_id: group_id.into() };
        let (_, _): (Empty, _) = self.client.call(FrameKind::DeleteGroup, &req, Bytes::new()).await?;
        Ok(())
    }

    /// Produces records without naming partitions: the broker places each record (the
    /// topic's partitioner module, or murmur2 of the key). One batch per call.
    pub async fn produce_unassigned(
        &self,
        topic: &str,
        records: &[crate::batch::Record],
        acks: Acks,
    ) -> Result<ProduceResponse, ClientError> {
        let batch = crate::batch::encode_batch(records, crate::batch::Compression::None)?;
        let req = ProduceRequest {
            topic: topic.into(),
            acks,
            timeout_ms: 30_000,
            partitions: vec![ProducePartition { partition: PARTITION_UNASSIGNED, bytes: batch.len() as u32 }],
        };
        let (resp, _): (ProduceResponse, _) = self.client.call(FrameKind::Produce, &req, batch).await?;
        if let Some(e) = resp.partitions.iter().find_map(|p| p.error.clone()) {
            return Err(ClientError::Broker(e));
        }
        Ok(resp)
    }
}
