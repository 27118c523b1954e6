//! `weir`: the broker (`weir serve`) and its client commands, in one binary.

use weir_broker::server;
use weir_cli::{bench, cli, cluster_cli, connector_cli, group_cli, module_cli, schema_cli};

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// glibc's allocator gives freed buffers of a megabyte or more (requests, fetched batches, plugin
/// batches) back to the kernel, and the next request faults fresh zeroed pages in again;
/// mimalloc keeps them for reuse (BENCHMARKS.md, fifteenth session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "weir", version, about = "Weir: a streaming platform you extend with WebAssembly")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker: storage, controller, the native QUIC and Kafka listeners, the schema registry.
    Serve(ServeArgs),
    /// Create, list, describe, alter and delete topics.
    Topic(cli::TopicArgs),
    /// Produce lines from stdin or a file.
    Produce(cli::ProduceArgs),
    /// Consume records and print them.
    Consume(cli::ConsumeArgs),
    /// Load generators and baselines.
    Bench(bench::BenchArgs),
    /// Register, get, list, check and delete schemas; read and set compatibility.
    Schema(schema_cli::SchemaArgs),
    /// Deploy Wasm plugins (transforms, partitioners, validators) and manage their deployments.
    Module(module_cli::ModuleArgs),
    /// Create source and sink connectors (Wasm components with granted capabilities) and
    /// manage them.
    Connector(connector_cli::ConnectorArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    Group(group_cli::GroupArgs),
    /// Make the cluster CA; show the controller's voters and leader.
    Cluster(cluster_cli::ClusterArgs),
    /// Move partitions' replicas between brokers of a cluster.
    Partition(cluster_cli::PartitionArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (and limits); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the log, metadata and dev certificate live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// UDP address of the native QUIC listener.
    #[arg(long)]
    quic_addr: Option<SocketAddr>,
    /// TCP address of the Kafka protocol listener.
    #[arg(long)]
    kafka_addr: Option<SocketAddr>,
    /// TCP address of the schema registry REST API.
    #[arg(long)]
    registry_addr: Option<SocketAddr>,
    /// TCP address of the web console, its JSON API (/api/v1) and /metrics.
    #[arg(long)]
    console_addr: Option<SocketAddr>,
    /// A folder under which connectors may be granted their directory; repeatable (none by
    /// default: no connector gets a directory).
    #[arg(long = "connector-dir-root")]
    connector_dir_roots: Vec<PathBuf>,
    /// Host Kafka clients are told to connect to (default: the listener's IP).
    #[arg(long)]
    kafka_advertised_host: Option<String>,
    /// This broker's id, unique in its cluster.
    #[arg(long)]
    node_id: Option<u64>,
    /// UDP address of the broker-to-broker endpoint (cluster only).
    #[arg(long)]
    cluster_addr: Option<SocketAddr>,
    /// The controller's voters, `id@host:port,...` (their cluster addresses); this node among
    /// them.
    #[arg(long, value_delimiter = ',')]
    controller_voters: Option<Vec<String>>,
    /// The cluster CA file (created by the first node if missing, or by `weir cluster init`).
    #[arg(long)]
    cluster_ca: Option<PathBuf>,
    /// A broker silent this long (no heartbeat reaching the controller) is fenced.
    #[arg(long)]
    broker_session_timeout_ms: Option<u64>,
    /// How often the controller moves leadership back to preferred replicas that are in sync
    /// (milliseconds; 0: never by itself, only by `weir partition elect-leaders`).
    #[arg(long)]
    leader_rebalance_interval_ms: Option<u64>,
    /// Join a running cluster as a broker that is not a controller voter, through any of its
    /// voters: `id@host:port,...` (first start only).
    #[arg(long, value_delimiter = ',')]
    join: Option<Vec<String>>,
    /// Tests only: a file whose lines are sides of a network partition between nodes.
    #[arg(long, hide = true)]
    test_partition_file: Option<PathBuf>,
    /// How often retention runs, in milliseconds.
    #[arg(long)]
    retention_check_ms: Option<u64>,
    /// Size at which the log starts a new segment file, in bytes (Kafka's log.segment.bytes;
    /// default 256 MiB). Retention frees disk a whole segment at a time.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Synced segment bytes the broker leaves in the page cache, in bytes (default 256 MiB); it
    /// has the kernel drop older ones, so writing costs the same however much the log holds.
    /// 18446744073709551615 (u64::MAX) leaves the cache to the kernel.
    #[arg(long)]
    segment_cache_bytes: Option<u64>,
    /// Write appends of 128 KiB or more to segment files around the page cache (O_DIRECT):
    /// less broker CPU per byte, but each such append waits for the disk (default false).
    #[arg(long)]
    segment_direct_writes: Option<bool>,
    /// Largest frame the QUIC listener accepts, in bytes.
    #[arg(long)]
    frame_bytes_max: Option<usize>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The broker logs what it does; client commands keep stderr for their one-line errors.
    let default_filter = if matches!(cli.command, Command::Serve(_)) {
        "info,lsm_tree=warn,fjall=warn,apache_avro=off,openraft=off"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Topic(args) => cli::topic(args).await,
            Command::Produce(args) => cli::produce(args).await,
            Command::Consume(args) => cli::consume(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Schema(args) => schema_cli::run(args).await,
            Command::Module(args) => module_cli::run(args).await,
            Command::Connector(args) => connector_cli::run(args).await,
            Command::Group(args) => group_cli::run(args).await,
            Command::Cluster(args) => cluster_cli::run(args).await,
            Command::Partition(args) => cluster_cli::partition(args).await,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => server::ServeConfig::from_file(path)?,
        None => server::ServeConfig::default(),
    };
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.quic_addr {
        config.quic_addr = v;
    }
    if let Some(v) = args.kafka_addr {
        config.kafka_addr = v;
    }
    if let Some(v) = args.registry_addr {
        config.registry_addr = v;
    }
    if let Some(v) = args.console_addr {
        config.console_addr = v;
    }
    if !args.connector_dir_roots.is_empty() {
        config.connector_dir_roots = args.connector_dir_roots;
    }
    if let Some(v) = args.kafka_advertised_host {
        config.kafka_advertised_host = Some(v);
    }
    if let Some(v) = args.cluster_addr {
        config.cluster_addr = Some(v);
    }
    if let Some(v) = args.controller_voters {
        config.controller_voters = v;
    }
    if let Some(v) = args.cluster_ca {
        config.cluster_ca = Some(v);
    }
    if let Some(v) = args.broker_session_timeout_ms {
        config.broker_session_timeout_ms = v;
    }
    if let Some(v) = args.leader_rebalance_interval_ms {
        config.leader_rebalance_interval_ms = v;
    }
    if let Some(v) = args.join {
        config.join = v;
    }
    if let Some(v) = args.test_partition_file {
        config.test_partition_file = Some(v);
    }
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.retention_check_ms {
        config.retention_check_ms = v;
    }
    if let Some(v) = args.segment_bytes {
        config.segment_bytes = v;
    }
    if let Some(v) = args.segment_cache_bytes {
        config.segment_cache_bytes = v;
    }
    if let Some(v) = args.segment_direct_writes {
        config.segment_direct_writes = v;
    }
    if let Some(v) = args.frame_bytes_max {
        config.frame_bytes_max = v;
    }
    // Bound before the broker starts, so a taken port fails the start as the others do.
    let console = tokio::net::TcpListener::bind(config.console_addr)
        .await
        .with_context(|| format!("binding the web console on tcp {}", config.console_addr))?;
    let console_addr = console.local_addr()?;
    let mut running = server::start(config.clone()).await?;
    running.serve_http(console, weir_console::router(running.broker().clone(), console_addr));
    let data_dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
    println!("weir {} serving (node {})", env!("CARGO_PKG_VERSION"), config.node_id);
    println!("  native QUIC   udp://{}  (ALPN weir/1)", running.quic_addr);
    println!("  Kafka         tcp://{}", running.kafka_addr);
    println!("  registry      http://{}  (Confluent Schema Registry API)", running.registry_addr);
    println!("  console       http://{console_addr}  (web console, JSON API at /api/v1, /metrics)");
    if let Some(addr) = running.cluster_addr {
        println!("  cluster       udp://{addr}  (mutual TLS, ALPN weir-cluster/1)");
    }
    println!("  data          {}", data_dir.display());
    println!("  certificate   {}  sha256 {}", running.cert_path.display(), running.cert_sha256);
    println!("Ctrl-C (or SIGTERM) stops.");
    // Ctrl-C or SIGTERM (service managers) stop it cleanly.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal?,
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}
