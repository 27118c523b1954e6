//! `weir schema`: the schema registry from the command line, over its REST API.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
    /// Base URL of the schema registry.
    #[arg(long, default_value = "http://127.0.0.1:8081", global = true)]
    registry: String,
}

#[derive(clap::Subcommand)]
enum SchemaCommand {
    /// Register a schema under a subject; prints its id.
    Register {
        subject: String,
        /// File with the schema (Avro JSON).
        #[arg(long)]
        file: PathBuf,
        #[arg(long = "type", default_value = "AVRO")]
        schema_type: String,
    },
    /// Print a subject's version (default: latest), or a schema by `--id`.
    Get {
        subject: Option<String>,
        #[arg(long, default_value = "latest")]
        version: String,
        #[arg(long, conflicts_with = "subject")]
        id: Option<u32>,
    },
    /// List subjects, or a subject's versions.
    List { subject: Option<String> },
    /// Check a schema against a subject's versions; exits 1 when incompatible.
    Check {
        subject: String,
        #[arg(long)]
        file: PathBuf,
        /// Check against this version only (default: as the subject's compatibility level says).
        #[arg(long)]
        version: Option<String>,
        #[arg(long = "type", default_value = "AVRO")]
        schema_type: String,
    },
    /// Soft-delete a subject or one version; `--permanent` after a soft delete removes it.
    Delete {
        subject: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        permanent: bool,
    },
    /// Print or set (`--set LEVEL`) the compatibility level, global or of a subject.
    Config {
        subject: Option<String>,
        #[arg(long)]
        set: Option<String>,
    },
}

struct Registry {
    base: String,
    agent: ureq::Agent,
}

impl Registry {
    fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder().http_status_as_error(false).build();
        Self { base: base.trim_end_matches('/').to_owned(), agent: ureq::Agent::new_with_config(config) }
    }

    /// Sends a request; a Confluent error body becomes one clear error line.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let content_type = "application/vnd.schemaregistry.v1+json";
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", Some(b)) => self.agent.post(&url).header("Content-Type", content_type).send(b.to_string()),
            ("PUT", Some(b)) => self.agent.put(&url).header("Content-Type", content_type).send(b.to_string()),
            _ => bail!("internal: {method} without a body"),
        };
        let mut response = response.with_context(|| format!("schema registry at {} unreachable", self.base))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().context("reading the registry's answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let message = value["message"].as_str().unwrap_or("no message");
            bail!("registry answered HTTP {status}, error_code {}: {message}", value["error_code"]);
        }
        Ok(value)
    }
}

fn schema_body(file: &PathBuf, schema_type: &str) -> anyhow::Result<Value> {
    let schema = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(json!({"schema": schema, "schemaType": schema_type}))
}

pub async fn run(args: SchemaArgs) -> anyhow::Result<()> {
    // ureq blocks; keep it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: SchemaArgs) -> anyhow::Result<()> {
    let registry = Registry::new(&args.registry);
    let print = |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match args.command {
        SchemaCommand::Register { subject, file, schema_type } => {
            let answer = registry.call(
                "POST",
                &format!("/subjects/{subject}/versions"),
                Some(schema_body(&file, &schema_type)?),
            )?;
            println!("registered under {subject} with id {}", answer["id"]);
        }
        SchemaCommand::Get { subject, version, id } => match (subject, id) {
            (_, Some(id)) => print(&registry.call("GET", &format!("/schemas/ids/{id}"), None)?),
            (Some(subject), None) => {
                print(&registry.call("GET", &format!("/subjects/{subject}/versions/{version}"), None)?)
            }
            (None, None) => bail!("name a subject or pass --id"),
        },
        SchemaCommand::List { subject } => {
            let path = subject.map_or("/subjects".to_owned(), |s| format!("/subjects/{s}/versions"));
            for item in registry.call("GET", &path, None)?.as_array().into_iter().flatten() {
                println!("{}", item.as_str().map_or_else(|| item.to_string(), str::to_owned));
            }
        }
        SchemaCommand::Check { subject, file, version, schema_type } => {
            let path = match version {
                Some(v) => format!("/compatibility/subjects/{subject}/versions/{v}?verbose=true"),
                None => format!("/compatibility/subjects/{subject}/versions?verbose=true"),
            };
            let answer = registry.call("POST", &path, Some(schema_body(&file, &schema_type)?))?;
            if answer["is_compatible"].as_bool() != Some(true) {
                bail!("incompatible with {subject}: {}", answer["messages"]);
            }
            println!("compatible with {subject}");
        }
        SchemaCommand::Delete { subject, version, permanent } => {
            let query = if permanent { "?permanent=true" } else { "" };
            let path = match version {
                Some(v) => format!("/subjects/{subject}/versions/{v}{query}"),
                None => format!("/subjects/{subject}{query}"),
            };
            println!("deleted versions {}", registry.call("DELETE", &path, None)?);
        }
        SchemaCommand::Config { subject, set } => {
            let path = subject.map_or("/config".to_owned(), |s| format!("/config/{s}"));
            let answer = match set {
                Some(level) => registry.call("PUT", &path, Some(json!({"compatibility": level})))?,
                None => registry.call("GET", &path, None)?,
            };
            print(&answer);
        }
    }
    Ok(())
}
