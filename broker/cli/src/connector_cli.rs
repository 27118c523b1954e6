//! `weir connector`: create sources and sinks from a TOML file (or flags) and manage them.
//!
//! ```toml
//! name = "app-logs"
//! kind = "source"                  # or "sink"
//! component = "file_source.wasm"   # relative to this file
//! topic = "logs"                   # a source: the topic it writes
//! # topics = ["masked"]            # a sink: the topics it reads
//! tasks_max = 1
//!
//! [params]
//! path = "app.log"
//!
//! [secrets]                        # read by name; never shown back
//! token = "..."
//!
//! [capabilities]
//! dir = "/var/log/app"             # the one directory it may use, seen as /data
//! dir_access = "read-only"         # or "read-write"
//! http_allow = ["api.example.com:443"]  # host:port it may send HTTP requests to; none if unset
//!
//! # Deployed transforms its records pass through on the way (a source: before its topic; a
//! # sink: before the module), in order; e.g. weir module deploy pii_mask.wasm --name mask ...
//! # transforms = ["mask"]
//!
//! [limits]
//! deadline_ms = 1000
//! memory_mb = 64
//! failures_max = 5
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Deserialize;
use weir_sdk::wire::{ConnectorConfig, DeployModuleRequest, ModuleAction, ModuleDescription};
use weir_sdk::Admin;

use crate::cli::{parse_key_value, ConnectArgs};

#[derive(clap::Args)]
pub struct ConnectorArgs {
    #[command(subcommand)]
    command: ConnectorCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand)]
enum ConnectorCommand {
    /// Create a connector (or a new version of one) from a TOML file, or from flags.
    Create(Box<CreateArgs>),
    /// Every source and sink with its state.
    List,
    /// A connector's settings (secrets by name only), state, per-task positions or
    /// per-partition progress and lag, records in and out, and its last error, as JSON.
    Describe {
        name: String,
    },
    /// Stop its tasks until it is resumed.
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Stop and start its tasks again, with fresh instances and no failures counted.
    Restart {
        name: String,
    },
    /// Remove it with its stored positions, progress and state.
    Delete {
        name: String,
    },
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The connector's TOML file (see `weir connector --help`); flags given too override it.
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_parser = ["source", "sink"])]
    kind: Option<String>,
    /// The component (.wasm).
    #[arg(long)]
    component: Option<PathBuf>,
    /// A source: the topic it writes. A sink: a topic it reads (repeatable).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// A parameter the module reads, name=value; repeatable.
    #[arg(long = "param", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// A secret the module reads by name, name=value; repeatable. Never shown back.
    #[arg(long = "secret", value_parser = parse_key_value)]
    secrets: Vec<(String, String)>,
    /// The one directory the module may use (seen by it as /data).
    #[arg(long)]
    dir: Option<String>,
    /// Let it write in --dir (read-only otherwise).
    #[arg(long)]
    dir_writable: bool,
    /// A host:port it may send HTTP requests to (wasi:http); repeatable. A name reaches public
    /// addresses only; write an address (127.0.0.1:8080) to grant exactly that one.
    #[arg(long = "http-allow")]
    http_allow: Vec<String>,
    /// A deployed transform the records pass through on the way, in the order given; repeatable.
    #[arg(long = "transform")]
    transforms: Vec<String>,
    #[arg(long)]
    tasks_max: Option<u32>,
    /// Longest one call of the module may run (an HTTP connector's call includes its request).
    #[arg(long)]
    deadline_ms: Option<u64>,
}

/// The TOML file's form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectorFile {
    name: Option<String>,
    kind: Option<String>,
    component: Option<PathBuf>,
    topic: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
    dead_letter_topic: Option<String>,
    tasks_max: Option<u32>,
    poll_interval_ms: Option<u64>,
    batch_records: Option<u32>,
    #[serde(default)]
    transforms: Vec<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    capabilities: Capabilities,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Capabilities {
    dir: Option<String>,
    dir_access: Option<String>,
    #[serde(default)]
    http_allow: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    deadline_ms: Option<u64>,
    memory_mb: Option<u64>,
    failures_max: Option<u32>,
}

/// The request a create sends, and the component's path.
fn request(args: CreateArgs) -> anyhow::Result<(DeployModuleRequest, PathBuf)> {
    let (mut file, base) = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let file: ConnectorFile =
                toml::from_str(&text).with_context(|| format!("{} is not a connector config", path.display()))?;
            (file, path.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        None => (ConnectorFile::default(), PathBuf::new()),
    };
    let name = args.name.or(file.name.take()).context("the connector needs a name (name = ... or --name)")?;
    let kind =
        args.kind.or(file.kind.take()).context("the connector needs a kind: source or sink (kind = ... or --kind)")?;
    if kind != "source" && kind != "sink" {
        bail!("kind = {kind:?}: a connector is a source or a sink");
    }
    let component = match args.component {
        Some(path) => path,
        None => base.join(
            file.component
                .take()
                .context("the connector needs its component (component = \"x.wasm\" or --component)")?,
        ),
    };
    let mut topics = file.topics;
    topics.extend(file.topic);
    topics.extend(args.topics);
    let (output, inputs) = if kind == "source" {
        match topics.as_slice() {
            [topic] => (Some(topic.clone()), vec![]),
            [] => bail!("a source needs the topic it writes (topic = ... or --topic)"),
            many => bail!("a source writes one topic; {} were given: {}", many.len(), many.join(", ")),
        }
    } else {
        if topics.is_empty() {
            bail!("a sink needs the topics it reads (topics = [...] or --topic)");
        }
        (None, topics)
    };
    let dir_writable = match file.capabilities.dir_access.as_deref() {
        None | Some("read-only") => args.dir_writable,
        Some("read-write") => true,
        Some(other) => bail!("capabilities.dir_access = {other:?}: use \"read-only\" or \"read-write\""),
    };
    let mut params = file.params;
    params.extend(args.params);
    let mut secrets = file.secrets;
    secrets.extend(args.secrets);
    let mut http_allow = file.capabilities.http_allow;
    http_allow.extend(args.http_allow);
    let mut transforms = file.transforms;
    transforms.extend(args.transforms);
    let request = DeployModuleRequest {
        name,
        kind,
        inputs,
        output,
        topic: None,
        params,
        deadline_ms: args.deadline_ms.or(file.limits.deadline_ms),
        memory_bytes: file.limits.memory_mb.map(|mb| mb << 20),
        dead_letter_topic: file.dead_letter_topic,
        failures_max: file.limits.failures_max,
        connector: Some(ConnectorConfig {
            secrets,
            dir: args.dir.or(file.capabilities.dir),
            dir_writable,
            tasks_max: args.tasks_max.or(file.tasks_max),
            poll_interval_ms: file.poll_interval_ms,
            batch_records: file.batch_records,
            http_allow,
            transforms,
        }),
    };
    Ok((request, component))
}

pub async fn run(args: ConnectorArgs) -> anyhow::Result<()> {
    let admin = Admin::new(args.connect.connect().await?);
    match args.command {
        ConnectorCommand::Create(create) => {
            let (request, component) = request(*create)?;
            let bytes = std::fs::read(&component).with_context(|| format!("reading {}", component.display()))?;
            let created = admin.deploy_module(&request, Bytes::from(bytes)).await?;
            println!("created {} {} version {}", created.kind, created.name, created.active_version);
        }
        ConnectorCommand::List => {
            println!("{:<24} {:<7} {:>7} {:>12} {:>12}  STATE", "NAME", "KIND", "VERSION", "RECORDS IN", "RECORDS OUT");
            for c in admin.list_modules().await?.into_iter().filter(|m| m.kind == "source" || m.kind == "sink") {
                println!(
                    "{:<24} {:<7} {:>7} {:>12} {:>12}  {}",
                    c.name,
                    c.kind,
                    c.active_version,
                    c.metrics.records_in,
                    c.metrics.records_out,
                    state(&c)
                );
            }
        }
        ConnectorCommand::Describe { name } => {
            let described = connector(&admin, &name).await?;
            println!("{}", serde_json::to_string_pretty(&described)?);
        }
        ConnectorCommand::Pause { name } => {
            connector(&admin, &name).await?;
            report(admin.module_action(&name, ModuleAction::Pause).await?);
        }
        ConnectorCommand::Resume { name } => {
            connector(&admin, &name).await?;
            report(admin.module_action(&name, ModuleAction::Resume).await?);
        }
        ConnectorCommand::Restart { name } => {
            let was = connector(&admin, &name).await?;
            admin.module_action(&name, ModuleAction::Pause).await?;
            // Brokers stop a paused connector's tasks within their 200 ms reconcile period;
            // resumed after that, every task starts afresh.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = admin.module_action(&name, ModuleAction::Resume).await?;
            if let Some(reason) = was.paused {
                println!("it was paused: {reason}");
            }
            report(now);
        }
        ConnectorCommand::Delete { name } => {
            connector(&admin, &name).await?;
            admin.module_action(&name, ModuleAction::Remove).await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

/// The connector named `name`; a module of another kind is not one.
async fn connector(admin: &Admin, name: &str) -> anyhow::Result<ModuleDescription> {
    let described = admin.describe_module(name).await?;
    if described.kind != "source" && described.kind != "sink" {
        bail!("{name:?} is a {}, not a connector; use `weir module`", described.kind);
    }
    Ok(described)
}

fn state(m: &ModuleDescription) -> String {
    match (&m.paused, &m.metrics.last_error) {
        (Some(reason), _) => format!("paused: {reason}"),
        (None, Some(error)) if m.metrics.failures_consecutive > 0 => format!("failing: {error}"),
        (None, _) => "running".into(),
    }
}

fn report(m: ModuleDescription) {
    println!("{} {}: version {}, {}", m.kind, m.name, m.active_version, state(&m));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> anyhow::Result<DeployModuleRequest> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text)?;
        let args = CreateArgs {
            file: Some(path),
            name: None,
            kind: None,
            component: None,
            topics: vec![],
            params: vec![],
            secrets: vec![],
            dir: None,
            dir_writable: false,
            http_allow: vec![],
            transforms: vec![],
            tasks_max: None,
            deadline_ms: None,
        };
        request(args).map(|(r, _)| r)
    }

    #[test]
    fn a_config_file_becomes_a_request_and_mistakes_name_the_field() {
        let source = from_toml(
            "name = \"logs\"\nkind = \"source\"\ncomponent = \"s.wasm\"\ntopic = \"t\"\n[params]\npath = \"a.log\"\n\
             [secrets]\ntoken = \"x\"\n[capabilities]\ndir = \"/var/log\"\ndir_access = \"read-write\"\n\
             http_allow = [\"api.example.com:443\"]\n",
        )
        .unwrap();
        assert_eq!((source.output.as_deref(), source.inputs.len()), (Some("t"), 0));
        let c = source.connector.unwrap();
        assert_eq!((c.dir.as_deref(), c.dir_writable, c.secrets["token"].as_str()), (Some("/var/log"), true, "x"));
        assert_eq!(c.http_allow, ["api.example.com:443"]);
        let piped = from_toml(
            "name = \"out\"\nkind = \"sink\"\ncomponent = \"s.wasm\"\ntopics = [\"a\"]\ntransforms = [\"mask\", \"tag\"]\n",
        )
        .unwrap();
        assert_eq!(piped.connector.unwrap().transforms, ["mask", "tag"]);
        let sink =
            from_toml("name = \"out\"\nkind = \"sink\"\ncomponent = \"s.wasm\"\ntopics = [\"a\", \"b\"]\n").unwrap();
        assert_eq!(sink.inputs, ["a", "b"]);
        for (text, expected) in [
            ("kind = \"source\"\ncomponent = \"s.wasm\"\ntopic = \"t\"\n", "needs a name"),
            ("name = \"x\"\nkind = \"transform\"\ncomponent = \"s.wasm\"\n", "a source or a sink"),
            ("name = \"x\"\nkind = \"source\"\ncomponent = \"s.wasm\"\n", "needs the topic it writes"),
            ("name = \"x\"\nkind = \"sink\"\ncomponent = \"s.wasm\"\n", "needs the topics it reads"),
            ("name = \"x\"\nkind = \"source\"\ntopic = \"t\"\n", "needs its component"),
            ("name = \"x\"\nkind = \"source\"\ncomponent = \"s.wasm\"\ntopics = [\"a\", \"b\"]\n", "writes one topic"),
            ("name = \"x\"\nkind = \"sink\"\ncomponent = \"s.wasm\"\ntopic = \"a\"\n[capabilities]\ndir_access = \"all\"\n", "dir_access"),
            ("name = \"x\"\nkind = \"sink\"\ncomponent = \"s.wasm\"\ntopic = \"a\"\nsecret = 1\n", "unknown field `secret`"),
        ] {
            let err = format!("{:#}", from_toml(text).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err:?} should say {expected:?}");
        }
    }
}
