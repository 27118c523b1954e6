//! `weir group`: list consumer groups, describe one with its lag, reset its offsets (only
//! while it has no members; `--dry-run` shows the plan, `--execute` applies it, as
//! kafka-consumer-groups does), delete one.

use std::collections::BTreeMap;

use anyhow::bail;
use weir_sdk::wire::{ResetOffsetsRequest, ResetOffsetsResponse, ResetTo};
use weir_sdk::Admin;

use crate::cli::ConnectArgs;

#[derive(clap::Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand)]
enum GroupCommand {
    /// Every group with its state, members and total lag.
    List,
    /// A group's state, members and, per partition, its committed offset, the high watermark
    /// and the lag between them.
    Describe { group: String },
    /// Move a group's committed offsets of one topic; only while the group has no members.
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets; refused while it has members.
    Delete { group: String },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true)
    .args(["to_earliest", "to_latest", "to_timestamp", "to_offset", "offsets"])))]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["dry_run", "execute"])))]
struct ResetArgs {
    group: String,
    #[arg(long)]
    topic: String,
    /// Only these partitions (comma-separated); every partition of the topic by default.
    #[arg(long, value_delimiter = ',')]
    partitions: Option<Vec<u32>>,
    /// To each partition's log start.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's high watermark.
    #[arg(long)]
    to_latest: bool,
    /// To the first record at or after this time (ms since the epoch).
    #[arg(long)]
    to_timestamp: Option<i64>,
    /// To this offset, in every partition reset.
    #[arg(long)]
    to_offset: Option<i64>,
    /// To these offsets: PARTITION:OFFSET, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_partition_offset)]
    offsets: Option<Vec<(u32, i64)>>,
    /// Show what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply the reset.
    #[arg(long)]
    execute: bool,
}

fn parse_partition_offset(s: &str) -> Result<(u32, i64), String> {
    let (p, o) = s.split_once(':').ok_or_else(|| format!("{s:?} is not PARTITION:OFFSET"))?;
    let p = p.trim().parse().map_err(|_| format!("{p:?} is not a partition number"))?;
    let o = o.trim().parse().map_err(|_| format!("{o:?} is not an offset"))?;
    Ok((p, o))
}

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let admin = Admin::new(args.connect.connect().await?);
    match args.command {
        GroupCommand::List => {
            println!("{:<32} {:<20} {:>7} {:>12}", "GROUP", "STATE", "MEMBERS", "LAG");
            for g in admin.list_groups().await? {
                println!("{:<32} {:<20} {:>7} {:>12}", g.group_id, g.state, g.members, g.total_lag);
            }
        }
        GroupCommand::Describe { group } => {
            let g = admin.describe_group(&group).await?;
            println!(
                "group {} is {} ({} members, protocol {}, generation {}), total lag {}",
                g.group_id,
                g.state,
                g.members.len(),
                if g.protocol.is_empty() { "-" } else { &g.protocol },
                g.generation_id,
                g.total_lag
            );
            let owner: BTreeMap<(&str, u32), &weir_sdk::wire::GroupMemberView> = g
                .members
                .iter()
                .flat_map(|m| m.assignment.iter().map(move |a| ((a.topic.as_str(), a.partition), m)))
                .collect();
            println!(
                "{:<24} {:>9} {:>14} {:>14} {:>10}  {:<36} {:<16} CLIENT-ID",
                "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST"
            );
            for o in &g.offsets {
                let member = owner.get(&(o.topic.as_str(), o.partition));
                let or_dash = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
                println!(
                    "{:<24} {:>9} {:>14} {:>14} {:>10}  {:<36} {:<16} {}",
                    o.topic,
                    o.partition,
                    o.committed,
                    or_dash(o.high_watermark),
                    or_dash(o.lag),
                    member.map_or("-", |m| m.member_id.as_str()),
                    member.map_or("-", |m| m.client_host.as_str()),
                    member.map_or("-", |m| m.client_id.as_str()),
                );
            }
        }
        GroupCommand::ResetOffsets(r) => {
            let to = match (r.to_earliest, r.to_latest, r.to_timestamp, r.to_offset, r.offsets) {
                (true, ..) => ResetTo::Earliest,
                (_, true, ..) => ResetTo::Latest,
                (_, _, Some(t), ..) => ResetTo::Timestamp(t),
                (_, _, _, Some(offset), _) => {
                    let partitions = match &r.partitions {
                        Some(ps) => ps.clone(),
                        None => admin.describe_topic(&r.topic).await?.partitions.iter().map(|p| p.partition).collect(),
                    };
                    ResetTo::Offsets(partitions.into_iter().map(|p| (p, offset)).collect())
                }
                (_, _, _, _, Some(offsets)) => ResetTo::Offsets(offsets.into_iter().collect()),
                _ => bail!("say where to: --to-earliest, --to-latest, --to-timestamp, --to-offset or --offsets"),
            };
            let request = ResetOffsetsRequest {
                group_id: r.group,
                topic: r.topic,
                to,
                partitions: r.partitions,
                dry_run: r.dry_run,
            };
            print_plan(&admin.reset_group_offsets(&request).await?);
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

fn print_plan(plan: &ResetOffsetsResponse) {
    println!("{:<24} {:>9} {:>14} {:>14}", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET");
    for m in &plan.offsets {
        let from = m.from.map_or("-".to_owned(), |f| f.to_string());
        println!("{:<24} {:>9} {:>14} {:>14}", m.topic, m.partition, from, m.to);
    }
    if plan.dry_run {
        println!("dry run: nothing changed (--execute applies it)");
    }
}
