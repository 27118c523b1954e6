//! Module deployments in the cluster metadata: which plugin version runs where, with which
//! parameters and limits, and whether it is paused. Pure, like the rest of `metadata.rs`.
//!
//! A deployment is a name with a history of versions; deploying the name again appends a
//! version and makes it active, rollback makes the one before the active version active. The
//! component's bytes are not here: they are kept by content hash beside the log
//! (`plugins.rs`), and a version names them by SHA-256.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_plugin_types::{Limits, PluginKind};
use weir_sdk::{ErrorCode, WireError};

use crate::topic::{check_name, Topic};

/// Versions kept per deployment; older ones are forgotten (rollback reaches this far back).
pub const VERSIONS_KEPT: usize = 16;
pub const DEPLOYMENTS_MAX: usize = 1000;
pub const PARAMS_MAX: usize = 64;
pub const PARAM_BYTES_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub kind: PluginKind,
    /// Transforms: the topics read.
    pub inputs: Vec<String>,
    /// Transforms: the topic of outputs that name none.
    pub output: Option<String>,
    /// Partitioners and validators: the topic served.
    pub topic: Option<String>,
    pub params: BTreeMap<String, String>,
    pub limits: Limits,
    pub dead_letter_topic: String,
    pub failures_max: u32,
    /// Sources and sinks: what the connector is granted and how it runs; `None` otherwise.
    #[serde(default)]
    pub connector: Option<ConnectorSpec>,
}

/// A connector's grants and settings. A source writes to `output`, a sink reads `inputs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorSpec {
    /// Values the module reads by name; never logged nor shown back.
    pub secrets: BTreeMap<String, String>,
    /// The one directory the module may use (an absolute host path), seen as `/data`.
    pub dir: Option<String>,
    /// Whether the module may write in `dir` (otherwise read-only).
    pub dir_writable: bool,
    /// Sources: how many tasks poll; sinks: at most how many input partitions run at once
    /// (each partition is a task).
    pub tasks_max: u32,
    /// Sources: the pause after a poll that found nothing.
    pub poll_interval_ms: u64,
    /// Sources: at most this many records per poll.
    pub batch_records: u32,
    /// Where the module may send HTTP requests (`host:port` entries, see `HttpTarget`); none
    /// by default, and a module importing wasi:http without any is refused at deploy.
    #[serde(default)]
    pub http_allow: Vec<String>,
    /// Deployed transforms the records pass through, in order: a source's on their way to its
    /// topic, a sink's on their way to the module (their components, parameters and limits;
    /// not their topics).
    #[serde(default)]
    pub transforms: Vec<String>,
}

impl ConnectorSpec {
    pub const TASKS_MAX: u32 = 64;
    pub const SECRETS_MAX: usize = 64;
    pub const BATCH_RECORDS_MAX: u32 = 10_000;
    pub const POLL_INTERVAL_MS_MAX: u64 = 3_600_000;
    pub const TRANSFORMS_MAX: usize = 8;
    /// Longest directory path (Linux's PATH_MAX).
    pub const DIR_BYTES_MAX: usize = 4096;
}

impl Default for ConnectorSpec {
    fn default() -> Self {
        Self {
            secrets: BTreeMap::new(),
            dir: None,
            dir_writable: false,
            tasks_max: 1,
            poll_interval_ms: 200,
            batch_records: 500,
            http_allow: Vec::new(),
            transforms: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentVersion {
    pub version: u32,
    pub sha256: String,
    pub size_bytes: u64,
    pub deployed_at_ms: i64,
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub name: String,
    pub kind: PluginKind,
    pub versions: Vec<DeploymentVersion>,
    pub active_version: u32,
    /// Why it is paused; `None` while it runs.
    pub paused: Option<String>,
}

impl Deployment {
    pub fn active(&self) -> &DeploymentVersion {
        self.versions.iter().find(|v| v.version == self.active_version).expect("the active version is kept")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModuleCommand {
    /// `version.version` is ignored: the next number is given on apply.
    Deploy {
        name: String,
        version: Box<DeploymentVersion>,
    },
    Pause {
        name: String,
        reason: String,
    },
    Resume {
        name: String,
    },
    Rollback {
        name: String,
    },
    Remove {
        name: String,
    },
}

pub fn apply(
    deployments: &mut BTreeMap<String, Deployment>,
    topics: &BTreeMap<String, std::sync::Arc<Topic>>,
    command: ModuleCommand,
) -> Result<Deployment, WireError> {
    match command {
        ModuleCommand::Deploy { name, mut version } => {
            validate_name(&name)?;
            validate_spec(&version.spec, topics)?;
            for stage in version.spec.connector.iter().flat_map(|c| &c.transforms) {
                check_name("transforms: a module name", stage).map_err(invalid)?;
                match deployments.get(stage) {
                    Some(d) if d.kind == PluginKind::Transform => {}
                    Some(d) => {
                        return Err(invalid(format!("transforms: {stage:?} is a {}, not a transform", d.kind.as_str())))
                    }
                    None => {
                        return Err(invalid(format!(
                            "transforms: no transform {stage:?} is deployed (weir module deploy it first)"
                        )))
                    }
                }
            }
            if let Some(other) = deployments.values().find(|d| {
                d.name != name
                    && d.kind == PluginKind::Partitioner
                    && version.spec.kind == PluginKind::Partitioner
                    && d.active().spec.topic == version.spec.topic
            }) {
                return Err(invalid(format!(
                    "topic {:?} already has partitioner {:?}; remove it first (a topic has one partitioner)",
                    version.spec.topic.as_deref().unwrap_or_default(),
                    other.name
                )));
            }
            if !deployments.contains_key(&name) && deployments.len() >= DEPLOYMENTS_MAX {
                return Err(WireError::new(
                    ErrorCode::LimitReached,
                    format!("the broker holds {DEPLOYMENTS_MAX} module deployments, its limit"),
                ));
            }
            let deployment = deployments.entry(name.clone()).or_insert_with(|| Deployment {
                name: name.clone(),
                kind: version.spec.kind,
                versions: Vec::new(),
                active_version: 0,
                paused: None,
            });
            if deployment.kind != version.spec.kind {
                return Err(invalid(format!(
                    "module {name:?} is a {}; deploy a {} under another name",
                    deployment.kind.as_str(),
                    version.spec.kind.as_str()
                )));
            }
            version.version = deployment.versions.last().map_or(1, |v| v.version + 1);
            deployment.active_version = version.version;
            deployment.paused = None;
            deployment.versions.push(*version);
            if deployment.versions.len() > VERSIONS_KEPT {
                deployment.versions.remove(0);
            }
            Ok(deployment.clone())
        }
        ModuleCommand::Pause { name, reason } => {
            let deployment = get(deployments, &name)?;
            deployment.paused = Some(reason);
            Ok(deployment.clone())
        }
        ModuleCommand::Resume { name } => {
            let deployment = get(deployments, &name)?;
            deployment.paused = None;
            Ok(deployment.clone())
        }
        ModuleCommand::Rollback { name } => {
            let deployment = get(deployments, &name)?;
            let active = deployment.active_version;
            let previous =
                deployment.versions.iter().map(|v| v.version).filter(|v| *v < active).max().ok_or_else(|| {
                    invalid(format!("module {name:?} has no version before {active} to roll back to"))
                })?;
            deployment.active_version = previous;
            deployment.paused = None;
            Ok(deployment.clone())
        }
        ModuleCommand::Remove { name } => {
            if let Some(user) = deployments.values().find(|d| {
                d.versions.iter().any(|v| v.spec.connector.as_ref().is_some_and(|c| c.transforms.contains(&name)))
            }) {
                return Err(invalid(format!(
                    "transform {name:?} is in the pipeline of connector {:?}; delete that connector first",
                    user.name
                )));
            }
            deployments.remove(&name).ok_or_else(|| unknown(&name))
        }
    }
}

fn get<'a>(deployments: &'a mut BTreeMap<String, Deployment>, name: &str) -> Result<&'a mut Deployment, WireError> {
    deployments.get_mut(name).ok_or_else(|| unknown(name))
}

pub fn unknown(name: &str) -> WireError {
    WireError::new(ErrorCode::UnknownModule, format!("unknown module {name:?}"))
}

fn invalid(message: String) -> WireError {
    WireError::new(ErrorCode::InvalidModule, message)
}

pub fn validate_name(name: &str) -> Result<(), WireError> {
    // Module names follow topic names' rules: they name the default dead-letter topic.
    check_name("module name", name).map_err(invalid)
}

fn validate_spec(spec: &DeploymentSpec, topics: &BTreeMap<String, std::sync::Arc<Topic>>) -> Result<(), WireError> {
    // `what` names the topic's role: "input topic", "topic", ...
    let must_exist = |what: &str, topic: &str| {
        if topics.contains_key(topic) {
            Ok(())
        } else {
            Err(WireError::new(ErrorCode::UnknownTopic, format!("{what} {topic:?} does not exist; create it first")))
        }
    };
    match spec.kind {
        // A transform without inputs and output runs only when a consumer asks for it at fetch.
        PluginKind::Transform if spec.inputs.is_empty() && spec.output.is_none() => {
            if spec.topic.is_some() {
                return Err(invalid(
                    "--topic is for partitioners and validators; a transform takes --input and --output".into(),
                ));
            }
        }
        PluginKind::Transform => {
            if spec.inputs.is_empty() {
                return Err(invalid(
                    "a transform with an output topic needs at least one input topic (--input)".into(),
                ));
            }
            for input in &spec.inputs {
                must_exist("input topic", input)?;
            }
            let output =
                spec.output.as_deref().ok_or_else(|| invalid("a transform needs an output topic (--output)".into()))?;
            must_exist("output topic", output)?;
            if spec.inputs.iter().any(|i| i == output) {
                return Err(invalid(format!(
                    "topic {output:?} is both input and output; the transform would feed itself"
                )));
            }
            if spec.topic.is_some() {
                return Err(invalid(
                    "--topic is for partitioners and validators; a transform takes --input and --output".into(),
                ));
            }
        }
        PluginKind::Source => {
            let output = spec
                .output
                .as_deref()
                .ok_or_else(|| invalid("a source needs the topic it writes to (topic = ...)".into()))?;
            must_exist("topic", output)?;
            if !spec.inputs.is_empty() || spec.topic.is_some() {
                return Err(invalid("a source writes to one topic (topic = ...) and reads none".into()));
            }
        }
        PluginKind::Sink => {
            if spec.inputs.is_empty() {
                return Err(invalid("a sink needs at least one topic to read (topics = [...])".into()));
            }
            for input in &spec.inputs {
                must_exist("topic", input)?;
            }
            if spec.output.is_some() || spec.topic.is_some() {
                return Err(invalid("a sink reads topics (topics = [...]) and writes to none".into()));
            }
        }
        PluginKind::Partitioner | PluginKind::Validator => {
            let topic = spec
                .topic
                .as_deref()
                .ok_or_else(|| invalid(format!("a {} needs the topic it serves (--topic)", spec.kind.as_str())))?;
            must_exist("topic", topic)?;
            if !spec.inputs.is_empty() || spec.output.is_some() {
                return Err(invalid(format!(
                    "--input/--output are for transforms; a {} takes --topic",
                    spec.kind.as_str()
                )));
            }
        }
    }
    must_exist("dead-letter topic", &spec.dead_letter_topic)?;
    match (&spec.connector, spec.kind.is_connector()) {
        (Some(connector), true) => validate_connector(connector)?,
        (None, true) => {
            return Err(invalid(format!("a {} is created with `weir connector create`", spec.kind.as_str())))
        }
        (Some(_), false) => return Err(invalid(format!("a {} is not a connector", spec.kind.as_str()))),
        (None, false) => {}
    }
    spec.limits.validate().map_err(|e| invalid(e.to_string()))?;
    if spec.failures_max == 0 || spec.failures_max > 1_000_000 {
        return Err(invalid(format!("failures.max = {} is out of range: 1 to 1000000", spec.failures_max)));
    }
    if spec.params.len() > PARAMS_MAX {
        return Err(invalid(format!("{} parameters; the limit is {PARAMS_MAX}", spec.params.len())));
    }
    if let Some((k, _)) = spec.params.iter().find(|(k, v)| k.len() + v.len() > PARAM_BYTES_MAX) {
        return Err(invalid(format!("parameter {k:?} is longer than {PARAM_BYTES_MAX} bytes")));
    }
    Ok(())
}

fn validate_connector(c: &ConnectorSpec) -> Result<(), WireError> {
    if c.tasks_max == 0 || c.tasks_max > ConnectorSpec::TASKS_MAX {
        return Err(invalid(format!("tasks.max = {} is out of range: 1 to {}", c.tasks_max, ConnectorSpec::TASKS_MAX)));
    }
    if c.batch_records == 0 || c.batch_records > ConnectorSpec::BATCH_RECORDS_MAX {
        return Err(invalid(format!(
            "batch_records = {} is out of range: 1 to {}",
            c.batch_records,
            ConnectorSpec::BATCH_RECORDS_MAX
        )));
    }
    if c.poll_interval_ms > ConnectorSpec::POLL_INTERVAL_MS_MAX {
        return Err(invalid(format!(
            "poll_interval_ms = {} is out of range: 0 to {}",
            c.poll_interval_ms,
            ConnectorSpec::POLL_INTERVAL_MS_MAX
        )));
    }
    if c.secrets.len() > ConnectorSpec::SECRETS_MAX {
        return Err(invalid(format!("{} secrets; the limit is {}", c.secrets.len(), ConnectorSpec::SECRETS_MAX)));
    }
    if let Some((k, _)) = c.secrets.iter().find(|(k, v)| k.len() + v.len() > PARAM_BYTES_MAX) {
        return Err(invalid(format!("secret {k:?} is longer than {PARAM_BYTES_MAX} bytes")));
    }
    if c.http_allow.len() > weir_plugin_types::HttpTarget::ENTRIES_MAX {
        return Err(invalid(format!(
            "{} http_allow entries; the limit is {}",
            c.http_allow.len(),
            weir_plugin_types::HttpTarget::ENTRIES_MAX
        )));
    }
    for entry in &c.http_allow {
        weir_plugin_types::HttpTarget::parse(entry).map_err(invalid)?;
    }
    if c.transforms.len() > ConnectorSpec::TRANSFORMS_MAX {
        return Err(invalid(format!(
            "{} transforms in the pipeline; the limit is {}",
            c.transforms.len(),
            ConnectorSpec::TRANSFORMS_MAX
        )));
    }
    if let Some(dir) = c.dir.as_ref().filter(|dir| dir.len() > ConnectorSpec::DIR_BYTES_MAX) {
        return Err(invalid(format!(
            "capabilities.dir is {} bytes long; the limit is {}",
            dir.len(),
            ConnectorSpec::DIR_BYTES_MAX
        )));
    }
    if let Some(dir) = &c.dir {
        if !std::path::Path::new(dir).is_absolute() || dir.split('/').any(|part| part == "..") {
            return Err(invalid(format!(
                "capabilities.dir {dir:?} must be an absolute path without \"..\" (the directory the connector may use)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> BTreeMap<String, std::sync::Arc<Topic>> {
        ["in", "out", "dlq", "orders"]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), Topic::new(i as u64, n.to_string(), 3, Default::default(), 1).into()))
            .collect()
    }

    fn spec(kind: PluginKind) -> DeploymentSpec {
        let transform = kind == PluginKind::Transform;
        DeploymentSpec {
            kind,
            inputs: if transform { vec!["in".into()] } else { vec![] },
            output: transform.then(|| "out".into()),
            topic: (!transform).then(|| "orders".into()),
            params: BTreeMap::new(),
            limits: Limits::default(),
            dead_letter_topic: "dlq".into(),
            failures_max: 5,
            connector: None,
        }
    }

    fn deploy(name: &str, spec: DeploymentSpec) -> ModuleCommand {
        let version = DeploymentVersion { version: 0, sha256: "ab".into(), size_bytes: 1, deployed_at_ms: 0, spec };
        ModuleCommand::Deploy { name: name.into(), version: Box::new(version) }
    }

    fn check(state: &mut BTreeMap<String, Deployment>, command: ModuleCommand, expected: Result<u32, ErrorCode>) {
        let got = apply(state, &topics(), command.clone()).map(|d| d.active_version).map_err(|e| e.code);
        assert_eq!(got, expected, "{command:?}");
    }

    #[test]
    fn deployment_rules() {
        let mut s = BTreeMap::new();
        check(&mut s, deploy("mask", spec(PluginKind::Transform)), Ok(1));
        check(&mut s, deploy("mask", spec(PluginKind::Transform)), Ok(2));
        check(&mut s, deploy("mask", spec(PluginKind::Validator)), Err(ErrorCode::InvalidModule));
        check(&mut s, ModuleCommand::Rollback { name: "mask".into() }, Ok(1));
        check(&mut s, ModuleCommand::Rollback { name: "mask".into() }, Err(ErrorCode::InvalidModule));
        check(&mut s, deploy("mask", spec(PluginKind::Transform)), Ok(3));
        check(&mut s, ModuleCommand::Pause { name: "mask".into(), reason: "x".into() }, Ok(3));
        assert_eq!(s["mask"].paused.as_deref(), Some("x"));
        check(&mut s, ModuleCommand::Resume { name: "mask".into() }, Ok(3));
        assert_eq!(s["mask"].paused, None);
        check(&mut s, ModuleCommand::Pause { name: "nope".into(), reason: "x".into() }, Err(ErrorCode::UnknownModule));

        let no_output = DeploymentSpec { output: None, ..spec(PluginKind::Transform) };
        check(&mut s, deploy("t", no_output), Err(ErrorCode::InvalidModule));
        let no_input = DeploymentSpec { inputs: vec![], ..spec(PluginKind::Transform) };
        check(&mut s, deploy("t", no_input), Err(ErrorCode::InvalidModule));
        let fetch_only = DeploymentSpec { inputs: vec![], output: None, ..spec(PluginKind::Transform) };
        check(&mut s, deploy("fetch-only", fetch_only), Ok(1));
        let loop_ = DeploymentSpec { output: Some("in".into()), ..spec(PluginKind::Transform) };
        check(&mut s, deploy("t", loop_), Err(ErrorCode::InvalidModule));
        let missing = DeploymentSpec { inputs: vec!["ghost".into()], ..spec(PluginKind::Transform) };
        check(&mut s, deploy("t", missing), Err(ErrorCode::UnknownTopic));
        let no_dlq = DeploymentSpec { dead_letter_topic: "ghost".into(), ..spec(PluginKind::Transform) };
        check(&mut s, deploy("t", no_dlq), Err(ErrorCode::UnknownTopic));
        let slow =
            DeploymentSpec { limits: Limits { deadline_ms: 0, ..Limits::default() }, ..spec(PluginKind::Transform) };
        check(&mut s, deploy("t", slow), Err(ErrorCode::InvalidModule));
        check(&mut s, deploy("bad name", spec(PluginKind::Transform)), Err(ErrorCode::InvalidModule));

        check(&mut s, deploy("p1", spec(PluginKind::Partitioner)), Ok(1));
        check(&mut s, deploy("p2", spec(PluginKind::Partitioner)), Err(ErrorCode::InvalidModule));
        check(&mut s, deploy("p1", spec(PluginKind::Partitioner)), Ok(2));
        check(&mut s, ModuleCommand::Remove { name: "p1".into() }, Ok(2));
        check(&mut s, deploy("p2", spec(PluginKind::Partitioner)), Ok(1));

        for _ in 0..20 {
            apply(&mut s, &topics(), deploy("many", spec(PluginKind::Validator))).unwrap();
        }
        assert_eq!(s["many"].versions.len(), VERSIONS_KEPT);
        assert_eq!(s["many"].active_version, 20);
    }

    #[test]
    fn connector_rules() {
        let source = DeploymentSpec {
            kind: PluginKind::Source,
            inputs: vec![],
            output: Some("in".into()),
            topic: None,
            connector: Some(ConnectorSpec::default()),
            ..spec(PluginKind::Transform)
        };
        let sink = DeploymentSpec {
            kind: PluginKind::Sink,
            inputs: vec!["out".into()],
            output: None,
            connector: Some(ConnectorSpec { dir: Some("/var/out".into()), dir_writable: true, ..Default::default() }),
            ..source.clone()
        };
        let with = |base: &DeploymentSpec, f: &dyn Fn(&mut ConnectorSpec)| {
            let mut spec = base.clone();
            f(spec.connector.as_mut().unwrap());
            spec
        };
        let cases: Vec<(&str, DeploymentSpec, Result<u32, &str>)> = vec![
            ("a source", source.clone(), Ok(1)),
            ("a sink", sink.clone(), Ok(1)),
            ("no topic", DeploymentSpec { output: None, ..source.clone() }, Err("needs the topic it writes to")),
            (
                "a missing topic",
                DeploymentSpec { output: Some("ghost".into()), ..source.clone() },
                Err("\"ghost\" does not exist"),
            ),
            ("a source reading", DeploymentSpec { inputs: vec!["out".into()], ..source.clone() }, Err("reads none")),
            ("a sink without topics", DeploymentSpec { inputs: vec![], ..sink.clone() }, Err("at least one topic")),
            ("a sink writing", DeploymentSpec { output: Some("in".into()), ..sink.clone() }, Err("writes to none")),
            ("no grants", DeploymentSpec { connector: None, ..sink.clone() }, Err("weir connector create")),
            (
                "grants to a transform",
                DeploymentSpec { connector: Some(ConnectorSpec::default()), ..spec(PluginKind::Transform) },
                Err("not a connector"),
            ),
            ("no tasks", with(&source, &|c| c.tasks_max = 0), Err("tasks.max = 0 is out of range: 1 to 64")),
            ("too many tasks", with(&source, &|c| c.tasks_max = 65), Err("tasks.max = 65")),
            ("empty polls", with(&source, &|c| c.batch_records = 0), Err("batch_records = 0")),
            ("a relative dir", with(&sink, &|c| c.dir = Some("out".into())), Err("must be an absolute path")),
            ("a dir climbing out", with(&sink, &|c| c.dir = Some("/var/out/../../etc".into())), Err("without \"..\"")),
            ("an HTTP grant", with(&sink, &|c| c.http_allow = vec!["api.example.com:443".into()]), Ok(1)),
            (
                "an HTTP grant without a port",
                with(&sink, &|c| c.http_allow = vec!["api.example.com".into()]),
                Err("http_allow entry \"api.example.com\" has no port"),
            ),
            (
                "too many HTTP grants",
                with(&sink, &|c| c.http_allow = (1..=33).map(|p| format!("h:{p}")).collect()),
                Err("33 http_allow entries; the limit is 32"),
            ),
            (
                "a long secret",
                with(&sink, &|c| {
                    c.secrets.insert("token".into(), "x".repeat(5000));
                }),
                Err("secret \"token\" is longer"),
            ),
        ];
        let piped = |stages: &[&str]| with(&sink, &|c| c.transforms = stages.iter().map(|s| s.to_string()).collect());
        let cases = cases.into_iter().chain([
            ("a pipeline", piped(&["mask", "mask"]), Ok(1)),
            ("an unknown stage", piped(&["ghost"]), Err("no transform \"ghost\" is deployed")),
            ("a stage that is no transform", piped(&["check"]), Err("\"check\" is a validator, not a transform")),
            ("a long pipeline", piped(&["mask"; 9]), Err("9 transforms in the pipeline; the limit is 8")),
            ("a stage name of 1 MiB", piped(&[&"m".repeat(1 << 20)]), Err("transforms: a module name")),
            (
                "a dir of 1 MiB",
                with(&sink, &|c| c.dir = Some(format!("/{}", "d".repeat(1 << 20)))),
                Err("capabilities.dir is 1048577 bytes long; the limit is 4096"),
            ),
        ]);
        for (what, candidate, expected) in cases {
            let mut s = BTreeMap::new();
            check(&mut s, deploy("mask", spec(PluginKind::Transform)), Ok(1));
            check(&mut s, deploy("check", spec(PluginKind::Validator)), Ok(1));
            let got = apply(&mut s, &topics(), deploy("c", candidate)).map(|d| d.active_version).map_err(|e| e.message);
            match (got, expected) {
                (Ok(v), Ok(e)) => assert_eq!(v, e, "{what}"),
                (Err(m), Err(e)) => assert!(m.contains(e), "{what}: {m:?} should name {e:?}"),
                (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
            }
        }
        // A name a client made long is not echoed back whole.
        let mut s = BTreeMap::new();
        let err = apply(&mut s, &topics(), deploy("c", piped(&[&"m".repeat(1 << 20)]))).unwrap_err();
        assert!(err.message.len() < 200 && err.message.contains("is 1048576 bytes long"), "{}", err.message);
        // A transform in a connector's pipeline is not removed from under it.
        let mut s = BTreeMap::new();
        check(&mut s, deploy("mask", spec(PluginKind::Transform)), Ok(1));
        check(&mut s, deploy("c", piped(&["mask"])), Ok(1));
        let err = apply(&mut s, &topics(), ModuleCommand::Remove { name: "mask".into() }).unwrap_err();
        assert!(err.message.contains("in the pipeline of connector \"c\""), "{}", err.message);
        check(&mut s, ModuleCommand::Remove { name: "c".into() }, Ok(1));
        check(&mut s, ModuleCommand::Remove { name: "mask".into() }, Ok(1));
    }
}
