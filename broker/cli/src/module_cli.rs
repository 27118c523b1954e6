//! `weir module`: deploy plugin components and manage their deployments.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use weir_sdk::wire::{DeployModuleRequest, ModuleAction, ModuleDescription};
use weir_sdk::Admin;

use crate::cli::{parse_key_value, ConnectArgs};

#[derive(clap::Args)]
pub struct ModuleArgs {
    #[command(subcommand)]
    command: ModuleCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand)]
enum ModuleCommand {
    /// Deploy a component built for wasm32-wasip2; deploying a name again makes a new version.
    Deploy(Box<DeployArgs>),
    /// Every deployment with its active version and state.
    List,
    /// A deployment's versions, settings, state and metrics, as JSON.
    Describe {
        name: String,
    },
    /// Stop running the deployment (transforms stop reading; validators and partitioners
    /// refuse produce requests until it is resumed or removed).
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Make the version before the active one active.
    Rollback {
        name: String,
    },
    /// Remove the deployment and its stored progress.
    Remove {
        name: String,
    },
    /// Make a ready-to-build plugin crate: Cargo.toml with the plugin SDK, a lib.rs for the
    /// kind with a host unit test, and for connectors a config file.
    Init {
        name: String,
        #[arg(long, value_parser = crate::scaffold::KINDS)]
        kind: String,
        /// Where to make it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The weir-plugin crate to depend on (default: the SDK this weir was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin crate for wasm32-wasip2 (adding the target if missing) and print the
    /// component's path.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct DeployArgs {
    /// The component (.wasm).
    file: PathBuf,
    #[arg(long)]
    name: String,
    #[arg(long, value_parser = ["transform", "partitioner", "validator"])]
    kind: String,
    /// Transforms: an input topic; repeatable.
    #[arg(long = "input")]
    inputs: Vec<String>,
    /// Transforms: the output topic of records that name none.
    #[arg(long)]
    output: Option<String>,
    /// Partitioners and validators: the topic served.
    #[arg(long)]
    topic: Option<String>,
    /// A parameter the module reads, name=value; repeatable.
    #[arg(long = "param", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// Per-batch deadline (default: the broker's module_deadline_ms, 100).
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Memory cap of an instance in MiB (default: the broker's, 64).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Where records of failed batches go (default: NAME.dlq, created if missing).
    #[arg(long)]
    dead_letter: Option<String>,
    /// Consecutive failed batches before the deployment is paused (default: the broker's, 5).
    #[arg(long)]
    failures_max: Option<u32>,
}

pub async fn run(args: ModuleArgs) -> anyhow::Result<()> {
    // Making and building a crate needs no broker.
    match &args.command {
        ModuleCommand::Init { name, kind, dir, sdk } => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
            let sdk = sdk.clone().unwrap_or_else(crate::scaffold::default_sdk_path);
            let sdk = sdk.canonicalize().unwrap_or(sdk);
            crate::scaffold::init(&dir, name, kind, &sdk)?;
            println!("made {kind} {name} in {}; build it with `weir module build {}`", dir.display(), dir.display());
            return Ok(());
        }
        ModuleCommand::Build { dir } => {
            let dir = dir.clone();
            let component = tokio::task::spawn_blocking(move || crate::scaffold::build(&dir)).await??;
            println!("{}", component.display());
            return Ok(());
        }
        _ => {}
    }
    let admin = Admin::new(args.connect.connect().await?);
    match args.command {
        ModuleCommand::Init { .. } | ModuleCommand::Build { .. } => unreachable!("handled above"),
        ModuleCommand::Deploy(d) => {
            let d = *d;
            let bytes = std::fs::read(&d.file).with_context(|| format!("reading {}", d.file.display()))?;
            let request = DeployModuleRequest {
                name: d.name,
                kind: d.kind,
                inputs: d.inputs,
                output: d.output,
                topic: d.topic,
                params: d.params.into_iter().collect::<BTreeMap<_, _>>(),
                deadline_ms: d.deadline_ms,
                memory_bytes: d.memory_mb.map(|mb| mb << 20),
                dead_letter_topic: d.dead_letter,
                failures_max: d.failures_max,
                connector: None,
            };
            let deployed = admin.deploy_module(&request, Bytes::from(bytes)).await?;
            let version = deployed.versions.iter().find(|v| v.version == deployed.active_version);
            println!(
                "deployed {} {} version {} (sha256 {})",
                deployed.kind,
                deployed.name,
                deployed.active_version,
                version.map_or("?", |v| v.sha256.as_str())
            );
        }
        ModuleCommand::List => {
            println!("{:<24} {:<12} {:>7}  STATE", "NAME", "KIND", "VERSION");
            for m in admin.list_modules().await? {
                println!("{:<24} {:<12} {:>7}  {}", m.name, m.kind, m.active_version, state(&m));
            }
        }
        ModuleCommand::Describe { name } => {
            println!("{}", serde_json::to_string_pretty(&admin.describe_module(&name).await?)?);
        }
        ModuleCommand::Pause { name } => report(admin.module_action(&name, ModuleAction::Pause).await?),
        ModuleCommand::Resume { name } => report(admin.module_action(&name, ModuleAction::Resume).await?),
        ModuleCommand::Rollback { name } => report(admin.module_action(&name, ModuleAction::Rollback).await?),
        ModuleCommand::Remove { name } => {
            admin.module_action(&name, ModuleAction::Remove).await?;
            println!("removed {name}");
        }
    }
    Ok(())
}

fn state(m: &ModuleDescription) -> String {
    match &m.paused {
        Some(reason) => format!("paused: {reason}"),
        None => "running".into(),
    }
}

fn report(m: ModuleDescription) {
    println!("{} {}: version {}, {}", m.kind, m.name, m.active_version, state(&m));
}
