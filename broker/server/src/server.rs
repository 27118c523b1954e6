//! `weir serve`: configuration, start-up and shutdown of one broker process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use std::sync::Arc;

use crate::budget::{BudgetConfig, Budgets};
use crate::controller::{BrokerAddresses, ClusterSetup, Controller};
use crate::groups::{GroupCoordinator, GroupLimits};
use crate::kafka::{KafkaConfig, KafkaContext, KafkaServer};
use crate::plugins::{PluginConfig, Plugins};
use crate::quic::{QuicConfig, QuicServer};
use crate::service::{Broker, ServiceConfig};
use weir_meta::metadata::Limits;
use weir_storage::log::FLUSH_TICK;

/// How often replicated partitions' high watermarks are written down (Kafka's
/// `replica.high.watermark.checkpoint.interval.ms`).
const HIGH_WATERMARK_CHECKPOINT: Duration = Duration::from_secs(5);

/// Settings of `weir serve`. Read from an optional TOML file; command-line flags win.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub quic_addr: SocketAddr,
    /// TCP address of the Kafka protocol listener.
    pub kafka_addr: SocketAddr,
    /// Host Kafka clients are told to connect to; default: the listener's IP.
    pub kafka_advertised_host: Option<String>,
    /// Port Kafka clients are told to connect to; default: the listener's port.
    pub kafka_advertised_port: Option<u16>,
    pub kafka_request_bytes_max: usize,
    /// Largest answer on the Kafka listener; a request whose answer would be larger closes
    /// its connection (there is no generic error answer), and the broker logs why.
    pub kafka_response_bytes_max: usize,
    /// TCP address of the schema registry's REST API (Confluent-compatible).
    pub registry_addr: SocketAddr,
    /// TCP address of the web console, its JSON API and `/metrics` (the `weir-console` crate,
    /// started by `weir serve` with [`Running::serve_http`]).
    pub console_addr: SocketAddr,
    pub frame_bytes_max: usize,
    pub connections_max: usize,
    pub streams_per_connection_max: usize,
    pub partitions_per_topic_max: u32,
    pub topics_max: usize,
    pub message_bytes_max: u32,
    pub append_queue_depth: usize,
    /// Size at which the log starts a new segment file (Kafka's `log.segment.bytes`); a
    /// segment is deleted only whole, once retention removed every batch in it.
    pub segment_bytes: u64,
    /// Synced segment bytes left in the page cache, the newest first; the broker has the
    /// kernel drop older ones (consumers reading further back read the disk). Keeps the cost
    /// of writing flat as the log grows; [`u64::MAX`] leaves the cache to the kernel.
    pub segment_cache_bytes: u64,
    /// Appends of 128 KiB or more are written to segment files around the page cache
    /// (`O_DIRECT`): less CPU per byte, but each waits for the disk.
    pub segment_direct_writes: bool,
    pub retention_check_ms: u64,
    pub fetch_wait_ms_max: u32,
    pub fetch_bytes_max: u32,
    /// Per-batch deadline of a module deployment that sets none.
    pub module_deadline_ms: u64,
    /// Memory cap of a module instance of a deployment that sets none.
    pub module_memory_bytes: u64,
    /// Consecutive failed batches after which a deployment is paused, unless it sets its own.
    pub module_failures_max: u32,
    /// Largest plugin component accepted (it travels in one frame).
    pub module_bytes_max: usize,
    /// Folders under which a connector may be granted its directory (none by default: no
    /// connector gets one until the operator names where).
    pub connector_dir_roots: Vec<PathBuf>,
    /// An idempotent producer idle this long loses its sequence state (Kafka's
    /// `producer.id.expiration.ms`, default 7 days).
    pub producer_id_expiration_ms: u64,
    /// Whether a client's metadata request may create a topic it names (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count: auto-created, or by a Kafka client that
    /// leaves the count to the broker (Kafka's `num.partitions`).
    pub default_partitions: u32,
    /// Most bytes one record batch may decompress to (a decompression bomb is refused at
    /// produce, never stored); at least `message_bytes_max`.
    pub batch_decompressed_bytes_max: usize,
    /// How far ahead of the broker's clock a record's create time may be (Kafka's
    /// `log.message.timestamp.after.max.ms`); a batch stamped further ahead is refused, since
    /// it would hold off time retention.
    pub message_timestamp_after_max_ms: u64,
    /// A connection (QUIC or Kafka) that sends no whole request, or does not take an answer,
    /// for this long is closed (Kafka's `connections.max.idle.ms`, default 10 minutes).
    #[serde(alias = "kafka_connection_idle_ms_max")]
    pub connection_idle_ms_max: u64,
    /// Versions one registry subject may hold, soft-deleted ones included until permanently
    /// deleted.
    pub schema_versions_per_subject_max: usize,
    /// Schemas (distinct ids) the registry may hold.
    pub schemas_max: usize,
    /// Connections one client address may hold open, QUIC and Kafka together (Kafka's
    /// `max.connections.per.ip`).
    pub connections_per_address_max: usize,
    /// Bytes one connection may make the broker hold: requests read and not yet answered, and
    /// room for fetch answers. Past it the connection is not read from until answers go out.
    pub connection_bytes_max: usize,
    /// The same, for all connections of one client address together.
    pub address_bytes_max: usize,
    /// The same, for all connections together (Kafka's `queued.max.request.bytes`).
    pub broker_bytes_max: usize,
    /// Producer ids (InitProducerId) one client address may take per minute, in bursts of up to
    /// as many; past it the answer is THROTTLING_QUOTA_EXCEEDED with the wait (as KIP-936).
    pub producer_ids_per_address_per_minute: u32,
    /// A registry HTTP client must send a request's headers within this long (an idle
    /// keep-alive connection too).
    pub http_header_timeout_ms: u64,
    /// A registry HTTP request, body included, is answered within this long (408 past it).
    pub http_request_timeout_ms: u64,
    /// Consumer groups (with members or committed offsets) the broker holds.
    pub groups_max: usize,
    /// Committed offsets of a group without members are dropped this long after they were
    /// committed (Kafka's `offsets.retention.minutes`, 7 days).
    pub offsets_retention_ms: i64,
    /// UDP address of the broker-to-broker QUIC endpoint (mutual TLS under the cluster CA);
    /// needed in a cluster.
    pub cluster_addr: Option<SocketAddr>,
    /// The controller's voters as `id@host:port` (their cluster addresses), this node among
    /// them; 3 or 5 in a cluster. Empty: a single node that is its own controller.
    pub controller_voters: Vec<String>,
    /// The cluster CA (certificate and key in one PEM file, as `weir cluster init` writes it);
    /// the first node to start creates it if the file is missing.
    pub cluster_ca: Option<PathBuf>,
    /// A broker whose heartbeats stop reaching the controller for this long is fenced: its
    /// partitions get new leaders (Kafka's `broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How often the controller leader gives partitions whose preferred replica (the first
    /// assigned) is live and in sync but does not lead their leadership back (Kafka's
    /// `leader.imbalance.check.interval.seconds`, 300 s); 0 turns it off.
    pub leader_rebalance_interval_ms: u64,
    /// A broker that is not a controller voter joins the cluster through these voters
    /// (`id@host:port`, any of them): the controller leader adds it as a learner, which gets
    /// the metadata log. Only on its first start; it is a member from then on.
    pub join: Vec<String>,
    /// Tests only (a hidden flag, never read from the file): a file whose lines split the
    /// cluster's nodes into sides that cannot reach each other, see `controller::NetworkFaults`.
    #[serde(skip)]
    pub test_partition_file: Option<PathBuf>,
}

impl ServeConfig {
    /// The controller's voters by node id; empty on a single node.
    pub fn voters(&self) -> anyhow::Result<BTreeMap<u64, String>> {
        parse_nodes(&self.controller_voters)
    }

    /// The voters to join through (`join`), by node id.
    pub fn join_through(&self) -> anyhow::Result<BTreeMap<u64, String>> {
        parse_nodes(&self.join)
    }
}

/// `id@host:port` entries (controller voters, or voters to join through) by node id.
fn parse_nodes(entries: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut nodes = BTreeMap::new();
    for entry in entries {
        let (id, addr) =
            entry.split_once('@').with_context(|| format!("controller voter {entry:?} must be id@host:port"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("controller voter {entry:?}: bad node id"))?;
        let addr = addr.trim();
        anyhow::ensure!(
            addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
            "controller voter {entry:?}: the address must be host:port"
        );
        anyhow::ensure!(nodes.insert(id, addr.to_owned()).is_none(), "controller voter {id} is listed twice");
    }
    Ok(nodes)
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::from("./weir-data"),
            quic_addr: "127.0.0.1:7400".parse().expect("literal address"),
            kafka_addr: "127.0.0.1:9092".parse().expect("literal address"),
            kafka_advertised_host: None,
            kafka_advertised_port: None,
            kafka_request_bytes_max: 100 * 1024 * 1024,
            kafka_response_bytes_max: 100 * 1024 * 1024,
            registry_addr: "127.0.0.1:8081".parse().expect("literal address"),
            console_addr: "127.0.0.1:8080".parse().expect("literal address"),
            frame_bytes_max: weir_sdk::wire::DEFAULT_FRAME_BYTES_LIMIT,
            connections_max: 1024,
            streams_per_connection_max: 256,
            partitions_per_topic_max: 1000,
            topics_max: 10_000,
            message_bytes_max: 8 * 1024 * 1024,
            append_queue_depth: 4096,
            segment_bytes: weir_storage::segments::SEGMENT_BYTES,
            segment_cache_bytes: weir_storage::segments::SEGMENT_CACHE_BYTES,
            segment_direct_writes: false,
            retention_check_ms: 30_000,
            fetch_wait_ms_max: 30_000,
            fetch_bytes_max: 8 * 1024 * 1024,
            module_deadline_ms: weir_runtime::Limits::default().deadline_ms,
            module_memory_bytes: weir_runtime::Limits::default().memory_bytes,
            module_failures_max: 5,
            module_bytes_max: 8 * 1024 * 1024,
            connector_dir_roots: Vec::new(),
            producer_id_expiration_ms: 7 * 24 * 3600 * 1000,
            auto_create_topics: true,
            default_partitions: 1,
            batch_decompressed_bytes_max: 64 * 1024 * 1024,
            message_timestamp_after_max_ms: 3_600_000,
            connection_idle_ms_max: 600_000,
            schema_versions_per_subject_max: weir_registry::state::RegistryLimits::default().versions_per_subject_max,
            schemas_max: weir_registry::state::RegistryLimits::default().schemas_max,
            connections_per_address_max: 256,
            connection_bytes_max: 128 * 1024 * 1024,
            address_bytes_max: 512 * 1024 * 1024,
            broker_bytes_max: 2048 * 1024 * 1024,
            producer_ids_per_address_per_minute: 600,
            http_header_timeout_ms: 30_000,
            http_request_timeout_ms: 60_000,
            groups_max: GroupLimits::default().groups_max,
            offsets_retention_ms: GroupLimits::default().offsets_retention_ms,
            cluster_addr: None,
            controller_voters: Vec::new(),
            cluster_ca: None,
            broker_session_timeout_ms: 9000,
            test_partition_file: None,
            join: Vec::new(),
            leader_rebalance_interval_ms: 300_000,
        }
    }
}

impl ServeConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Budget a fetch takes for its answer: the answer holds up to `fetch_bytes_max`, or one
    /// batch of up to `message_bytes_max` when the first is larger, and its headers.
    pub fn fetch_answer_bytes(&self) -> usize {
        (self.fetch_bytes_max.max(self.message_bytes_max) as usize) + 64 * 1024
    }

    /// Rejects limits that cannot work or would exhaust memory, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(anyhow::anyhow!("invalid config: {what}")) };
        check(
            (1024..=1 << 30).contains(&self.frame_bytes_max),
            format!("frame_bytes_max = {} must be 1 KiB to 1 GiB", self.frame_bytes_max),
        )?;
        check(
            (1024 * 1024..=1 << 30).contains(&self.kafka_response_bytes_max)
                && self.kafka_response_bytes_max >= self.fetch_answer_bytes(),
            format!(
                "kafka_response_bytes_max = {} must be 1 MiB to 1 GiB and hold a fetch answer ({} bytes)",
                self.kafka_response_bytes_max,
                self.fetch_answer_bytes()
            ),
        )?;
        check(
            (1024..=1 << 30).contains(&self.kafka_request_bytes_max),
            format!("kafka_request_bytes_max = {} must be 1 KiB to 1 GiB", self.kafka_request_bytes_max),
        )?;
        // A frame holds one batch (produce) or up to fetch_bytes_max of batches (fetch), plus a
        // header of up to HEADER_BYTES_LIMIT.
        let header_room = weir_sdk::wire::HEADER_BYTES_LIMIT;
        check(
            self.message_bytes_max as usize + header_room <= self.frame_bytes_max,
            format!(
                "message_bytes_max = {} must leave {header_room} bytes of header room below frame_bytes_max = {}",
                self.message_bytes_max, self.frame_bytes_max
            ),
        )?;
        check(
            self.fetch_bytes_max as usize + header_room <= self.frame_bytes_max,
            format!(
                "fetch_bytes_max = {} must leave {header_room} bytes of header room below frame_bytes_max = {}",
                self.fetch_bytes_max, self.frame_bytes_max
            ),
        )?;
        check(
            (1..=100_000).contains(&self.connections_max),
            format!("connections_max = {} must be 1 to 100000", self.connections_max),
        )?;
        check(
            (1..=10_000).contains(&self.streams_per_connection_max),
            format!("streams_per_connection_max = {} must be 1 to 10000", self.streams_per_connection_max),
        )?;
        check(
            (1..=100_000).contains(&self.partitions_per_topic_max),
            format!("partitions_per_topic_max = {} must be 1 to 100000", self.partitions_per_topic_max),
        )?;
        check(
            (1..=1_000_000).contains(&self.topics_max),
            format!("topics_max = {} must be 1 to 1000000", self.topics_max),
        )?;
        check(
            (1..=1_000_000).contains(&self.schema_versions_per_subject_max),
            format!("schema_versions_per_subject_max = {} must be 1 to 1000000", self.schema_versions_per_subject_max),
        )?;
        check(
            (1..=10_000_000).contains(&self.schemas_max),
            format!("schemas_max = {} must be 1 to 10000000", self.schemas_max),
        )?;
        check(
            (1..=self.connections_max).contains(&self.connections_per_address_max),
            format!(
                "connections_per_address_max = {} must be 1 to connections_max = {}",
                self.connections_per_address_max, self.connections_max
            ),
        )?;
        let one_request = self.kafka_request_bytes_max.max(self.frame_bytes_max) + self.fetch_answer_bytes();
        check(
            self.connection_bytes_max >= one_request,
            format!(
                "connection_bytes_max = {} must hold the largest request (kafka_request_bytes_max or frame_bytes_max) and a fetch answer: at least {one_request}",
                self.connection_bytes_max
            ),
        )?;
        check(
            self.address_bytes_max >= self.connection_bytes_max,
            format!(
                "address_bytes_max = {} must be at least connection_bytes_max = {}",
                self.address_bytes_max, self.connection_bytes_max
            ),
        )?;
        check(
            self.broker_bytes_max >= self.address_bytes_max && self.broker_bytes_max <= 1 << 40,
            format!(
                "broker_bytes_max = {} must be at least address_bytes_max = {} and at most 1 TiB",
                self.broker_bytes_max, self.address_bytes_max
            ),
        )?;
        check(
            (1..=1_000_000).contains(&self.producer_ids_per_address_per_minute),
            format!(
                "producer_ids_per_address_per_minute = {} must be 1 to 1000000",
                self.producer_ids_per_address_per_minute
            ),
        )?;
        check(
            (1..=10_000_000).contains(&self.groups_max),
            format!("groups_max = {} must be 1 to 10000000", self.groups_max),
        )?;
        check(
            (60_000..=100 * 365 * 24 * 3_600_000).contains(&self.offsets_retention_ms),
            format!("offsets_retention_ms = {} must be 1 minute to 100 years", self.offsets_retention_ms),
        )?;
        for (name, value) in [
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_request_timeout_ms", self.http_request_timeout_ms),
        ] {
            check((100..=3_600_000).contains(&value), format!("{name} = {value} must be 100 ms to 1 hour"))?;
        }
        check(
            (1..=1_000_000).contains(&self.append_queue_depth),
            format!("append_queue_depth = {} must be 1 to 1000000", self.append_queue_depth),
        )?;
        weir_runtime::Limits { deadline_ms: self.module_deadline_ms, memory_bytes: self.module_memory_bytes }
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid config: {}", e.as_setting("module_")))?;
        if let Some(root) = self.connector_dir_roots.iter().find(|r| !r.is_absolute()) {
            anyhow::bail!(
                "invalid config: connector_dir_roots holds {}, which is not an absolute path",
                root.display()
            );
        }
        check(
            (1..=1_000_000).contains(&self.module_failures_max),
            format!("module_failures_max = {} must be 1 to 1000000", self.module_failures_max),
        )?;
        check(
            self.module_bytes_max >= 1024 && self.module_bytes_max + header_room <= self.frame_bytes_max,
            format!(
                "module_bytes_max = {} must be at least 1 KiB and leave {header_room} bytes of header room below frame_bytes_max = {}",
                self.module_bytes_max, self.frame_bytes_max
            ),
        )?;
        check(
            (1000..=365 * 24 * 3600 * 1000).contains(&self.producer_id_expiration_ms),
            format!("producer_id_expiration_ms = {} must be 1 s to 365 days", self.producer_id_expiration_ms),
        )?;
        check(
            (1..=self.partitions_per_topic_max).contains(&self.default_partitions),
            format!(
                "default_partitions = {} must be 1 to partitions_per_topic_max = {}",
                self.default_partitions, self.partitions_per_topic_max
            ),
        )?;
        check(
            self.batch_decompressed_bytes_max >= self.message_bytes_max as usize
                && self.batch_decompressed_bytes_max <= 1 << 30,
            format!(
                "batch_decompressed_bytes_max = {} must be message_bytes_max = {} to 1 GiB",
                self.batch_decompressed_bytes_max, self.message_bytes_max
            ),
        )?;
        check(
            (1000..=10 * 365 * 24 * 3600 * 1000).contains(&self.message_timestamp_after_max_ms),
            format!("message_timestamp_after_max_ms = {} must be 1 s to 10 years", self.message_timestamp_after_max_ms),
        )?;
        check(
            (100..=24 * 3600 * 1000).contains(&self.connection_idle_ms_max),
            format!("connection_idle_ms_max = {} must be 100 ms to 1 day", self.connection_idle_ms_max),
        )?;
        check(
            (64 * 1024..=16 << 30).contains(&self.segment_bytes),
            format!("segment_bytes = {} must be 64 KiB to 16 GiB", self.segment_bytes),
        )?;
        check(
            self.retention_check_ms >= 10,
            format!("retention_check_ms = {} must be at least 10", self.retention_check_ms),
        )?;
        let voters = self.voters()?;
        let join = self.join_through()?;
        if !join.is_empty() {
            check(
                voters.is_empty(),
                "join and controller_voters exclude each other: a voter is listed, a learner joins".into(),
            )?;
            check(!join.contains_key(&self.node_id), format!("join names this node (node_id = {})", self.node_id))?;
            check(self.cluster_addr.is_some(), "join needs cluster_addr (this node's cluster endpoint)".into())?;
            check(self.cluster_ca.is_some(), "join needs cluster_ca (the cluster CA file)".into())?;
        }
        if !voters.is_empty() {
            check(
                (1..=7).contains(&voters.len()),
                format!("controller_voters lists {} voters: 1 to 7 (3 or 5 in a cluster)", voters.len()),
            )?;
            check(
                voters.contains_key(&self.node_id),
                format!("controller_voters must list this node (node_id = {})", self.node_id),
            )?;
            check(
                self.cluster_addr.is_some(),
                "controller_voters needs cluster_addr (this node's cluster endpoint)".into(),
            )?;
            check(self.cluster_ca.is_some(), "controller_voters needs cluster_ca (the cluster CA file)".into())?;
            check(
                (600..=600_000).contains(&self.broker_session_timeout_ms),
                format!("broker_session_timeout_ms = {} must be 600 to 600000", self.broker_session_timeout_ms),
            )?;
        }
        Ok(())
    }
}

/// A running broker: its listeners' addresses and a handle to stop it.
pub struct Running {
    pub quic_addr: SocketAddr,
    pub kafka_addr: SocketAddr,
    pub registry_addr: SocketAddr,
    /// The broker-to-broker endpoint, in a cluster.
    pub cluster_addr: Option<SocketAddr>,
    pub cert_path: PathBuf,
    pub cert_sha256: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    controller: Controller,
    broker: Broker,
    /// What another HTTP listener started with [`Running::serve_http`] is held to.
    http: (Budgets, crate::http::HttpLimits),
}

impl Running {
    /// The broker service, for in-process callers (tests, benches).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves `app` on `listener` under the limits of the broker's other HTTP listener (the
    /// registry's): connections count against the same budgets, headers and requests have
    /// the same deadlines, and it stops with the broker. The web console comes in this way, so
    /// the broker does not depend on the console's crate.
    pub fn serve_http(&mut self, listener: tokio::net::TcpListener, app: axum::Router) {
        let (budgets, limits) = self.http.clone();
        let stop = self.shutdown.subscribe();
        self.tasks.push(tokio::spawn(crate::http::serve(listener, app, budgets, limits, stop)));
    }

    /// Stops every listener and background task this start began, and the controller. In a
    /// cluster the broker first asks the controller to fence it, so its partitions show as
    /// led elsewhere (or offline) at once.
    pub async fn stop(self) {
        self.controller.leave().await;
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.controller.shutdown().await;
    }
}

pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // A record is never larger than the largest batch: nor is anything decoding one allocates.
    let avro_limit = weir_registry::validate::limit_decoded_allocation(config.message_bytes_max as usize);
    tracing::debug!(avro_limit, "Avro decode allocation limit");
    let segments = weir_storage::segments::Options {
        target_bytes: config.segment_bytes,
        cache_bytes: config.segment_cache_bytes,
        direct_writes: config.segment_direct_writes,
    };
    let storage = weir_storage::Storage::open_with(&config.data_dir.join("db"), config.append_queue_depth, segments)
        .context("opening the broker's storage")?;
    let limits = Limits {
        partitions_per_topic_max: config.partitions_per_topic_max,
        topics_max: config.topics_max,
        message_bytes_max: config.message_bytes_max,
        schema_versions_per_subject_max: config.schema_versions_per_subject_max,
        schemas_max: config.schemas_max,
        groups_max: config.groups_max,
    };
    let join = config.join_through()?;
    let cluster = match (config.cluster_addr, config.voters()?) {
        (Some(addr), voters) if !voters.is_empty() || !join.is_empty() => {
            let ca = config.cluster_ca.clone().context("cluster_ca is checked with controller_voters")?;
            if crate::cluster::create_ca(&ca)? {
                tracing::info!(path = %ca.display(), "created the cluster CA");
            }
            let tls = crate::cluster::node_tls(&ca, config.node_id)?;
            let endpoint = crate::cluster::bind(addr, tls)
                .with_context(|| format!("binding the cluster endpoint on udp {addr}"))?;
            Some(ClusterSetup { endpoint, voters, join, test_partition_file: config.test_partition_file.clone() })
        }
        _ => None,
    };
    let cluster_addr = cluster.as_ref().map(|c| c.endpoint.local_addr()).transpose()?;
    let cluster_ca = cluster.as_ref().and(config.cluster_ca.clone());
    let controller =
        Controller::open(storage.raft, config.node_id, limits, cluster).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let service_config = ServiceConfig {
        node_id: config.node_id,
        fetch_wait_ms_max: config.fetch_wait_ms_max,
        fetch_bytes_max: config.fetch_bytes_max,
        producer_id_expiration_ms: config.producer_id_expiration_ms,
        auto_create_topics: config.auto_create_topics,
        default_partitions: config.default_partitions,
        batch_decompressed_bytes_max: config.batch_decompressed_bytes_max,
        // Checked below 10 years at start.
        message_timestamp_after_max_ms: i64::try_from(config.message_timestamp_after_max_ms).unwrap_or(i64::MAX),
    };
    let group_limits = GroupLimits { groups_max: config.groups_max, offsets_retention_ms: config.offsets_retention_ms };
    let groups = GroupCoordinator::open(controller.clone(), group_limits);
    crate::groups::migrate_local_offsets(storage.offsets, &controller).await;
    let plugins = Plugins::open(
        storage.modules,
        PluginConfig {
            cache_dir: config.data_dir.join("module-cache"),
            limits: weir_runtime::Limits {
                deadline_ms: config.module_deadline_ms,
                memory_bytes: config.module_memory_bytes,
            },
            failures_max: config.module_failures_max,
            module_bytes_max: config.module_bytes_max,
            connector_dir_roots: config.connector_dir_roots.clone(),
        },
        controller.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let broker = Broker::new(service_config, controller.clone(), storage.log, groups.clone(), plugins)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Partition roles (leader of an epoch, follower) are taken up before any listener opens.
    crate::service::reconcile_replication(&broker);
    {
        // Peers fetch module components deployed through this broker from here.
        let plugins = broker.plugins().clone();
        controller.serve_blobs(Arc::new(move |sha256: &str| plugins.blob(sha256)));
        // And send produce requests for partitions this broker leads.
        let service = broker.clone();
        controller.serve_service(Arc::new(move |kind, body| {
            let broker = service.clone();
            Box::pin(async move {
                let whole = match kind {
                    crate::service::RPC_REPLICA_FETCH => return broker.answer_replica_fetch(body).await,
                    crate::service::RPC_PRODUCE => broker.answer_forwarded_produce(body).await,
                    crate::service::RPC_FETCH => broker.answer_forwarded_fetch(body).await,
                    crate::service::RPC_LIST_OFFSETS => broker.answer_forwarded_list_offsets(&body),
                    crate::quic::RPC_GROUP_FRAME => crate::quic::answer_forwarded_group_frame(&broker, &body).await,
                    _ => Vec::new(),
                };
                vec![bytes::Bytes::from(whole)]
            })
        }));
    }

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !config.quic_addr.ip().is_unspecified() {
        names.push(config.quic_addr.ip().to_string());
    }
    let identity = crate::tls::load_or_create(&config.data_dir, &names, cluster_ca.as_deref())?;
    let quic_config = QuicConfig {
        addr: config.quic_addr,
        frame_bytes_limit: config.frame_bytes_max,
        connections_max: config.connections_max,
        streams_per_connection_max: config.streams_per_connection_max,
        idle_timeout: Duration::from_millis(config.connection_idle_ms_max),
        fetch_answer_bytes: config.fetch_answer_bytes(),
    };
    let server = QuicServer::bind(&quic_config, crate::tls::server_crypto(&identity, weir_sdk::wire::ALPN)?)
        .with_context(|| format!("binding the QUIC listener on udp {}", config.quic_addr))?;
    let quic_addr = server.local_addr()?;

    let mut tasks = Vec::new();
    let kafka = KafkaServer::bind(config.kafka_addr)
        .await
        .with_context(|| format!("binding the Kafka listener on tcp {}", config.kafka_addr))?;
    let kafka_addr = kafka.local_addr()?;
    let kafka_config = KafkaConfig {
        advertised_host: config.kafka_advertised_host.clone().unwrap_or_else(|| kafka_addr.ip().to_string()),
        advertised_port: config.kafka_advertised_port.unwrap_or(kafka_addr.port()),
        request_bytes_max: config.kafka_request_bytes_max,
        connections_max: config.connections_max,
        in_flight_per_connection_max: 64,
        idle_timeout: Duration::from_millis(config.connection_idle_ms_max),
        fetch_answer_bytes: config.fetch_answer_bytes(),
        response_bytes_max: config.kafka_response_bytes_max,
        node_id: i32::try_from(config.node_id).context("node_id must fit a Kafka broker id (i32)")?,
    };
    let budgets = Budgets::new(BudgetConfig {
        connection_bytes_max: config.connection_bytes_max,
        address_bytes_max: config.address_bytes_max,
        broker_bytes_max: config.broker_bytes_max,
        connections_per_address_max: config.connections_per_address_max,
        producer_ids_per_address_per_minute: config.producer_ids_per_address_per_minute,
    });
    let (kafka_ctx_host, kafka_ctx_port) = (kafka_config.advertised_host.clone(), kafka_config.advertised_port);
    let kafka_ctx = KafkaContext {
        broker: broker.clone(),
        groups: groups.clone(),
        config: Arc::new(kafka_config),
        budgets: budgets.clone(),
    };

    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    {
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = kafka.serve(kafka_ctx) => {}
                _ = stop.changed() => {}
            }
        }));
    }
    tasks.push(tokio::spawn(crate::service::group_ticker(broker.clone(), shutdown_rx.clone())));

    let http_limits = crate::http::HttpLimits {
        connections_max: config.connections_max,
        header_timeout: Duration::from_millis(config.http_header_timeout_ms),
        request_timeout: Duration::from_millis(config.http_request_timeout_ms),
    };
    let registry = tokio::net::TcpListener::bind(config.registry_addr)
        .await
        .with_context(|| format!("binding the schema registry on tcp {}", config.registry_addr))?;
    let registry_addr = registry.local_addr()?;
    {
        let app = weir_registry::api::router(controller.registry_backend());
        tasks.push(tokio::spawn(crate::http::serve(registry, app, budgets.clone(), http_limits, shutdown_rx.clone())));
    }
    {
        let (broker, budgets) = (broker.clone(), budgets.clone());
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = server.serve(broker, quic_config, budgets) => {}
                _ = stop.changed() => server.close(),
            }
        }));
    }
    tasks.push(tokio::spawn(retention_loop(
        broker.clone(),
        groups.clone(),
        Duration::from_millis(config.retention_check_ms),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(flush_loop(broker.clone(), shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::transforms::supervise(broker.clone(), shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::connectors::supervise(broker.clone(), shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::service::forget_deleted_topics(broker.clone(), shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::service::run_replication(broker.clone(), shutdown_rx.clone())));
    // In a cluster: register the listeners with the controller, heartbeat it, and (on the
    // controller leader) fence brokers whose heartbeats stop.
    // Clients reach the QUIC listener at the advertised host when it is bound to every address.
    let quic_advertised = if quic_addr.ip().is_unspecified() {
        match kafka_ctx_host.contains(':') {
            true => format!("[{}]:{}", kafka_ctx_host, quic_addr.port()),
            false => format!("{}:{}", kafka_ctx_host, quic_addr.port()),
        }
    } else {
        quic_addr.to_string()
    };
    let addresses =
        BrokerAddresses { quic_addr: quic_advertised, kafka_host: kafka_ctx_host, kafka_port: kafka_ctx_port };
    tasks.extend(
        controller
            .run_membership(
                addresses,
                Duration::from_millis(config.broker_session_timeout_ms),
                (config.leader_rebalance_interval_ms > 0)
                    .then(|| Duration::from_millis(config.leader_rebalance_interval_ms)),
                shutdown_rx.clone(),
            )
            .await,
    );

    Ok(Running {
        quic_addr,
        kafka_addr,
        registry_addr,
        cluster_addr,
        cert_path: identity.cert_path.clone(),
        cert_sha256: identity.fingerprint(),
        shutdown,
        tasks,
        controller,
        broker,
        http: (budgets, http_limits),
    })
}

async fn retention_loop(
    broker: Broker,
    groups: GroupCoordinator,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let b = broker.clone();
        let now = weir_sdk::now_ms();
        let _ = tokio::task::spawn_blocking(move || b.enforce_retention(now)).await;
        match broker.expire_producers(now).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "idle idempotent producers expired"),
            Err(e) => tracing::error!(error = %e, "expiring idle producers failed"),
        }
        let node_id = broker.node_id();
        let coordinated_here = |group: &str| broker.group_coordinator(group).is_none_or(|b| b.node_id == node_id);
        match groups.expire_offsets(now, coordinated_here).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "committed offsets of groups without members expired"),
            Err(e) => tracing::error!(error = %e, "expiring committed offsets failed"),
        }
    }
}

/// Fsyncs appends of interval-flushed topics at the shortest interval any topic asks for; and
/// once more at shutdown.
async fn flush_loop(broker: Broker, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last = tokio::time::Instant::now();
    let mut checkpointed = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(FLUSH_TICK);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        // Replicated partitions' high watermarks, where a restart starts them.
        if checkpointed.elapsed() >= HIGH_WATERMARK_CHECKPOINT || stopping {
            checkpointed = tokio::time::Instant::now();
            let log = broker.log().clone();
            match tokio::task::spawn_blocking(move || log.checkpoint_high_watermarks()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "checkpointing high watermarks failed"),
                Err(e) => tracing::error!(error = %e, "high watermark checkpoint task failed"),
                Ok(Ok(_)) => {}
            }
        }
        let due = broker.flush_interval().is_some_and(|every| last.elapsed() >= every);
        if due || stopping {
            last = tokio::time::Instant::now();
            let log = broker.log().clone();
            match tokio::task::spawn_blocking(move || log.flush_if_dirty()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "interval flush failed"),
                Err(e) => tracing::error!(error = %e, "interval flush task failed"),
                Ok(Ok(_)) => {}
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_sets_listeners_and_limits_and_bad_limits_name_the_setting() {
        let config: ServeConfig = toml::from_str(
            r#"
            data_dir = "/tmp/x"
            quic_addr = "127.0.0.1:17400"
            kafka_addr = "127.0.0.1:19093"
            kafka_advertised_host = "broker-1.example"
            topics_max = 5
            "#,
        )
        .unwrap();
        assert_eq!(config.kafka_addr.port(), 19093);
        assert_eq!(config.kafka_advertised_host.as_deref(), Some("broker-1.example"));
        assert_eq!(config.topics_max, 5);
        config.validate().unwrap();

        let err = toml::from_str::<ServeConfig>("frame_bytes_maxx = 1").unwrap_err().to_string();
        assert!(err.contains("frame_bytes_maxx"), "{err}");
        let tight = ServeConfig { frame_bytes_max: 2 * 1024 * 1024, ..ServeConfig::default() };
        let err = tight.validate().unwrap_err().to_string();
        assert!(err.contains("message_bytes_max"), "{err}");
        let none = ServeConfig { connections_max: 0, ..ServeConfig::default() };
        assert!(none.validate().unwrap_err().to_string().contains("connections_max = 0"));
        let tiny = ServeConfig { segment_bytes: 1000, ..ServeConfig::default() };
        assert!(tiny.validate().unwrap_err().to_string().contains("segment_bytes = 1000 must be 64 KiB to 16 GiB"));
        let segments: ServeConfig = toml::from_str("segment_bytes = 1048576\nsegment_cache_bytes = 0").unwrap();
        assert_eq!((segments.segment_bytes, segments.segment_cache_bytes), (1 << 20, 0));
        segments.validate().unwrap();
        assert_eq!(ServeConfig::default().segment_cache_bytes, 256 << 20);
    }
}
