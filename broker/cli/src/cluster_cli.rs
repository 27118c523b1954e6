//! `weir cluster`: make the cluster CA, and show the controller as a broker sees it.

use std::path::PathBuf;

use weir_sdk::client::Admin;

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
        }
    }
    Ok(())
}
