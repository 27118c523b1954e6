//! `weir cluster`: make the cluster CA, and show the controller as a broker sees it.
//! `weir partition reassign`: move partitions' replicas.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use weir_sdk::client::Admin;
use weir_sdk::wire::{PartitionMove, ReassignPartitionsRequest};

use crate::cli::ConnectArgs;

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// Write a new cluster CA (certificate and key in one PEM file) for `weir serve
    /// --cluster-ca`; refuses to replace one that exists.
    Init {
        /// Where to write it.
        #[arg(long, default_value = "./weir-cluster-ca.pem")]
        ca_file: PathBuf,
    },
    /// The controller's voters, its leader and term, the brokers with their epochs and the
    /// partitions without a leader, as the broker at --bootstrap sees them.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ClusterCommand::Init { ca_file } => {
            anyhow::ensure!(
                weir_broker::cluster::create_ca(&ca_file)?,
                "{} exists already; a cluster keeps its CA",
                ca_file.display()
            );
            println!("created the cluster CA {}", ca_file.display());
        }
        ClusterCommand::Status { json } => {
            let status = Admin::new(args.connect.connect().await?).cluster_status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            let leader = status.controller_leader.map_or("none".to_owned(), |l| l.to_string());
            println!("answered by node {}", status.node_id);
            println!("controller leader {leader}  term {}", status.controller_term);
            for voter in &status.voters {
                let role = if Some(voter.node_id) == status.controller_leader { "leader" } else { "voter" };
                println!("  node {}  {}  {role}", voter.node_id, voter.cluster_addr);
            }
            for learner in &status.learners {
                println!("  node {}  {}  learner", learner.node_id, learner.cluster_addr);
            }
            if let Some(applied) = status.last_applied {
                println!("metadata applied through entry {applied}");
            }
            for broker in &status.brokers {
                let state = if broker.fenced { "fenced" } else { "live" };
                println!(
                    "broker {}  epoch {}  {state}  QUIC {}  Kafka {}",
                    broker.node_id, broker.epoch, broker.quic_addr, broker.kafka_addr
                );
            }
            if status.offline_partitions > 0 {
                println!("offline partitions: {} ({})", status.offline_partitions, status.offline.join(", "));
            }
            if status.under_replicated_partitions > 0 {
                println!(
                    "under-replicated partitions: {} ({})",
                    status.under_replicated_partitions,
                    status.under_replicated.join(", ")
                );
            }
            if status.reassigning_partitions > 0 {
                println!("partitions being reassigned: {}", status.reassigning_partitions);
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct PartitionArgs {
    #[command(subcommand)]
    command: PartitionCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand)]
enum PartitionCommand {
    /// Move partitions of a topic to other brokers while they are in use: the new replicas copy
    /// the log, and the old ones are dropped once every new one is in sync. Answers at once
    /// unless --wait.
    Reassign {
        topic: String,
        /// PARTITION=BROKER,BROKER,... : the partition's new replicas, the preferred leader
        /// first. Repeatable.
        #[arg(long = "move", value_parser = parse_move)]
        moves: Vec<(u32, Vec<u64>)>,
        /// Cancel the move under way of this partition (back to its replicas before). Repeatable.
        #[arg(long = "cancel")]
        cancels: Vec<u32>,
        /// The most bytes per second each leader sends the new replicas.
        #[arg(long)]
        throttle_bytes_per_sec: Option<u64>,
        /// Wait (up to this many seconds) until the moves are done, printing their progress.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Give partitions whose preferred replica (the first listed) is live and in sync their
    /// leadership back (the controller also does it by itself every
    /// `leader_rebalance_interval_ms`).
    ElectLeaders {
        /// Only this topic's partitions.
        topic: Option<String>,
    },
}

fn parse_move(s: &str) -> Result<(u32, Vec<u64>), String> {
    let (partition, replicas) = s.split_once('=').ok_or_else(|| format!("expected PARTITION=BROKER,..., got {s:?}"))?;
    let partition = partition.trim().parse().map_err(|_| format!("{partition:?} is not a partition number"))?;
    let replicas = replicas
        .split(',')
        .map(|b| b.trim().parse().map_err(|_| format!("{b:?} is not a broker id")))
        .collect::<Result<_, _>>()?;
    Ok((partition, replicas))
}

pub async fn partition(args: PartitionArgs) -> anyhow::Result<()> {
    let admin = Admin::new(args.connect.connect().await?);
    match args.command {
        PartitionCommand::ElectLeaders { topic } => {
            let moved = admin.elect_preferred_leaders(topic.as_deref()).await?;
            if moved.is_empty() {
                println!("every partition is led by its preferred replica, or that one is not in sync");
            } else {
                println!("leadership moved back to the preferred replica of {}", moved.join(", "));
            }
            Ok(())
        }
        PartitionCommand::Reassign { topic, moves, cancels, throttle_bytes_per_sec, wait } => {
            anyhow::ensure!(!moves.is_empty() || !cancels.is_empty(), "name a partition with --move or --cancel");
            let mut partitions: Vec<PartitionMove> = moves
                .into_iter()
                .map(|(partition, replicas)| PartitionMove { partition, replicas: Some(replicas) })
                .collect();
            partitions.extend(cancels.into_iter().map(|partition| PartitionMove { partition, replicas: None }));
            let named: Vec<u32> = partitions.iter().map(|m| m.partition).collect();
            let request = ReassignPartitionsRequest { topic: topic.clone(), partitions, throttle_bytes_per_sec };
            let mut d = admin.reassign_partitions(&request).await.context("reassignment refused")?;
            let deadline = wait.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
            loop {
                let moving: Vec<_> = d
                    .partitions
                    .iter()
                    .filter(|p| named.contains(&p.partition) && !p.adding_replicas.is_empty())
                    .collect();
                let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                for p in &d.partitions {
                    if named.contains(&p.partition) {
                        println!(
                            "partition {}  replicas {}  isr {}  adding {}  removing {}",
                            p.partition,
                            ids(&p.replicas),
                            ids(&p.isr),
                            ids(&p.adding_replicas),
                            ids(&p.removing_replicas)
                        );
                    }
                }
                if moving.is_empty() {
                    println!("reassignment of {topic} done");
                    return Ok(());
                }
                let Some(deadline) = deadline else {
                    println!("reassignment of {topic} under way: watch `weir topic describe {topic}`");
                    return Ok(());
                };
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "the reassignment was not done in time");
                tokio::time::sleep(Duration::from_secs(1)).await;
                d = admin.describe_topic(&topic).await?;
            }
        }
    }
}
