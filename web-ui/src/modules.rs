//! `/api/v1/modules`: Wasm module deployments (upload and deploy a component, versions,
//! pause, resume, roll back, remove) with their metrics and last error.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_broker::service::{Fetch, FetchFrom};
use weir_plugin_types::PluginKind;
use weir_sdk::batch::{ConsumedRecord, Record};
use weir_sdk::wire::{DeployModuleRequest, ModuleAction, ModuleDescription};
use weir_sdk::ErrorCode;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{body, Console};

#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleList {
    /// Each deployment: name, kind, versions (component hash, size, spec), whether it is
    /// paused and why, and its metrics (records in/out/rejected/dead-lettered, call latency,
    /// memory high-water mark, counters, last error).
    #[schema(value_type = Vec<Object>)]
    pub modules: Vec<ModuleDescription>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ModuleView(pub ModuleDescription);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub name: String,
    /// `transform`, `partitioner` or `validator`.
    pub kind: String,
    /// Transforms: the topics read.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Transforms: where outputs that name no topic go.
    pub output: Option<String>,
    /// Partitioners and validators: the topic they serve.
    pub topic: Option<String>,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub dead_letter_topic: Option<String>,
    pub failures_max: Option<u32>,
    /// The component (.wasm), base64.
    pub component_base64: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// `pause`, `resume`, `rollback` or `remove`.
    pub action: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// The component (.wasm), base64.
    pub component_base64: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportView {
    pub name: String,
    /// Whether Weir grants it to plugins.
    pub granted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KindView {
    /// `transform`, `partitioner` or `validator`.
    pub kind: String,
    /// The `weir:plugin` contract version it was built for.
    pub contract: String,
}

/// What an uploaded component is, before it is deployed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Inspected {
    pub sha256: String,
    pub size_bytes: usize,
    /// The plugin kinds it can be deployed as (from the interfaces it exports).
    pub kinds: Vec<KindView>,
    pub imports: Vec<ImportView>,
    pub exports: Vec<String>,
    /// Why the broker would refuse to deploy it; absent when it would accept it.
    pub refusal: Option<String>,
}

/// The bytes of an uploaded component, within the broker's `module_bytes_max`.
fn component_bytes(console: &Console, base64_text: &str) -> ApiResult<Vec<u8>> {
    let max = console.broker.plugins().config().module_bytes_max;
    let too_large = |message: String| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "module_too_large", message).with_field("component_base64")
    };
    // Base64 is 4 characters per 3 bytes: a longer text cannot decode within the limit.
    if base64_text.len() / 4 * 3 > max + 3 {
        return Err(too_large(format!("a component is at most {max} bytes (module_bytes_max)")));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_text.as_bytes())
        .map_err(|e| ApiError::field("component_base64", format!("component_base64 is not base64: {e}")))?;
    if bytes.len() > max {
        return Err(too_large(format!("the component has {} bytes; at most {max} (module_bytes_max)", bytes.len())));
    }
    Ok(bytes)
}

/// Reads an uploaded component without deploying it: its kinds, imports (granted or not),
/// exports, hash and size, and why the broker would refuse it. A file that is no component
/// at all is a 400 with the reason.
#[utoipa::path(post, path = "/api/v1/modules/inspect", request_body = Upload, tag = "modules",
    responses((status = 200, body = Inspected, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 413, body = ErrorBody, description = "Too large; the error names the limit")))]
pub async fn inspect(
    State(console): State<Console>,
    upload: Result<Json<Upload>, JsonRejection>,
) -> ApiResult<Json<Inspected>> {
    let Json(upload) = body(upload)?;
    let bytes = component_bytes(&console, &upload.component_base64)?;
    let _permit = console.compile_permit()?;
    let plugins = console.broker.plugins().clone();
    // Compiling is CPU work: off the async threads.
    let inspected = tokio::task::spawn_blocking(move || plugins.inspect(&bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::from(e).with_field("component_base64"))?;
    Ok(Json(Inspected {
        sha256: inspected.sha256,
        size_bytes: inspected.size_bytes,
        kinds: inspected
            .kinds
            .into_iter()
            .map(|(kind, contract)| KindView { kind: kind.as_str().to_owned(), contract: contract.as_str().to_owned() })
            .collect(),
        imports: inspected.imports.into_iter().map(|(name, granted)| ImportView { name, granted }).collect(),
        exports: inspected.exports,
        refusal: inspected.refusal,
    }))
}

/// Every deployment with its versions and metrics.
#[utoipa::path(get, path = "/api/v1/modules", tag = "modules", responses((status = 200, body = ModuleList, description = "OK")))]
pub async fn list_modules(State(console): State<Console>) -> Json<ModuleList> {
    Json(ModuleList { modules: console.broker.list_modules().modules })
}

/// Uploads a component and deploys it (a new version when the name exists). The broker
/// checks the component (a component, only granted imports, the kind's export) and refuses
/// it with the reason.
#[utoipa::path(post, path = "/api/v1/modules", request_body = Deploy, tag = "modules",
    responses((status = 201, body = ModuleView, description = "Created"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 413, body = ErrorBody, description = "Too large; the error names the limit")))]
pub async fn deploy(
    State(console): State<Console>,
    deploy: Result<Json<Deploy>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ModuleView>)> {
    let Json(deploy) = body(deploy)?;
    let bytes = component_bytes(&console, &deploy.component_base64)?;
    let request = DeployModuleRequest {
        name: deploy.name,
        kind: deploy.kind,
        inputs: deploy.inputs,
        output: deploy.output,
        topic: deploy.topic,
        params: deploy.params,
        deadline_ms: deploy.deadline_ms,
        memory_bytes: deploy.memory_bytes,
        dead_letter_topic: deploy.dead_letter_topic,
        failures_max: deploy.failures_max,
        connector: None,
    };
    let described = console.broker.deploy_module(request, Bytes::from(bytes)).await.map_err(|e| {
        let field = match e.code {
            ErrorCode::InvalidModule => "component_base64",
            ErrorCode::UnknownTopic => "inputs",
            _ => "name",
        };
        ApiError::from(e).with_field(field)
    })?;
    Ok((StatusCode::CREATED, Json(ModuleView(described))))
}

/// One deployment with its versions and metrics.
#[utoipa::path(get, path = "/api/v1/modules/{name}", params(("name" = String, Path)), tag = "modules",
    responses((status = 200, body = ModuleView, description = "OK"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn get_module(State(console): State<Console>, Path(name): Path<String>) -> ApiResult<Json<ModuleView>> {
    let d = console.broker.describe_module(&name).map_err(|e| ApiError::from(e).with_field("name"))?;
    Ok(Json(ModuleView(d)))
}

/// Pauses, resumes, rolls back (to the version before) or removes a deployment.
#[utoipa::path(post, path = "/api/v1/modules/{name}/actions", params(("name" = String, Path)), request_body = Action,
    tag = "modules", responses((status = 200, body = ModuleView, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn act(
    State(console): State<Console>,
    Path(name): Path<String>,
    action: Result<Json<Action>, JsonRejection>,
) -> ApiResult<Json<ModuleView>> {
    let Json(action) = body(action)?;
    let action = match action.action.as_str() {
        "pause" => ModuleAction::Pause,
        "resume" => ModuleAction::Resume,
        "rollback" => ModuleAction::Rollback,
        "remove" => ModuleAction::Remove,
        other => {
            return Err(ApiError::field(
                "action",
                format!("action must be pause, resume, rollback or remove, not {other:?}"),
            ))
        }
    };
    let d = console.broker.module_action(&name, action).await.map_err(|e| match e.code {
        ErrorCode::UnknownModule => ApiError::from(e).with_field("name"),
        _ => ApiError::from(e).with_field("action"),
    })?;
    Ok(Json(ModuleView(d)))
}

/// Records one try may run over.
const TRY_RECORDS_MAX: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TryRecord {
    pub key: Option<String>,
    pub value: Option<String>,
    #[serde(default)]
    pub headers: Vec<crate::messages::NewHeader>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TryFrom {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    /// 1 to 100.
    pub count: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Try {
    /// The component (.wasm), base64; it is not deployed.
    pub component_base64: String,
    /// `transform`, `partitioner` or `validator`.
    pub kind: String,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Records typed in (text), at most 100; or `from`.
    pub records: Option<Vec<TryRecord>>,
    /// Records read from a partition.
    pub from: Option<TryFrom>,
    /// For a partitioner: the partition count it chooses among (default 1).
    pub partitions: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriedOutput {
    /// The topic the output names, if it names one.
    pub topic: Option<String>,
    pub key: Option<crate::messages::Payload>,
    pub value: Option<crate::messages::Payload>,
    pub headers: Vec<crate::messages::HeaderView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriedRecord {
    pub input: crate::messages::RecordView,
    /// A transform's outputs for it.
    pub outputs: Option<Vec<TriedOutput>>,
    /// A transform's error for it, or a validator's refusal.
    pub error: Option<String>,
    /// A partitioner's choice.
    pub partition: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tried {
    pub kind: String,
    pub results: Vec<TriedRecord>,
}

/// The records a try runs over: typed in, or read from a partition (one fetch, at most 1 MiB).
async fn try_inputs(console: &Console, t: &Try) -> ApiResult<Vec<ConsumedRecord>> {
    match (&t.records, &t.from) {
        (Some(records), None) => {
            if records.is_empty() || records.len() > TRY_RECORDS_MAX {
                return Err(ApiError::field(
                    "records",
                    format!("give 1 to {TRY_RECORDS_MAX} records, not {}", records.len()),
                ));
            }
            let now = weir_sdk::now_ms();
            Ok(records
                .iter()
                .zip(0..)
                .map(|(r, offset)| ConsumedRecord {
                    topic: "try".into(),
                    partition: 0,
                    offset,
                    record: Record {
                        key: r.key.clone().map(Bytes::from),
                        value: r.value.clone().map(Bytes::from),
                        headers: r.headers.iter().map(|h| (h.key.clone(), h.value.clone().map(Bytes::from))).collect(),
                        timestamp: now,
                    },
                })
                .collect())
        }
        (None, Some(from)) => {
            if !(1..=TRY_RECORDS_MAX).contains(&from.count) {
                return Err(ApiError::field(
                    "from",
                    format!("count must be 1 to {TRY_RECORDS_MAX}, not {}", from.count),
                ));
            }
            let fetch = Fetch {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 1 << 20,
                partitions: vec![FetchFrom {
                    topic: from.topic.clone(),
                    partition: from.partition,
                    offset: from.offset,
                    max_bytes: 1 << 20,
                    module: None,
                }],
                from_replica: false,
            };
            let fetched = console.broker.fetch(fetch).await.map_err(|e| ApiError::from(e).with_field("from"))?;
            let Some(part) = fetched.into_iter().next() else { return Ok(Vec::new()) };
            if let Some(e) = part.error {
                return Err(ApiError::from(e).with_field("from"));
            }
            let bytes: Bytes = part.batches.concat().into();
            let (topic, partition, offset, limit) =
                (from.topic.clone(), from.partition, from.offset, console.broker.batch_decompressed_bytes_max());
            let mut records = tokio::task::spawn_blocking(move || {
                weir_sdk::batch::decode_batches_within(&topic, partition, bytes, offset, limit)
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
            records.truncate(from.count);
            if records.is_empty() {
                return Err(ApiError::field("from", "no records there"));
            }
            Ok(records)
        }
        _ => Err(ApiError::field("records", "give either records or from")),
    }
}

/// Runs a component over records without deploying it ("try it"): typed-in records or records
/// read from a partition, at most 100, under the broker's default deadline and memory cap.
/// Shows each record's outputs (transform), partition (partitioner) or verdict (validator).
#[utoipa::path(post, path = "/api/v1/modules/try", request_body = Try, tag = "modules",
    responses((status = 200, body = Tried, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 413, body = ErrorBody, description = "Too large; the error names the limit")))]
pub async fn try_module(State(console): State<Console>, t: Result<Json<Try>, JsonRejection>) -> ApiResult<Json<Tried>> {
    let Json(t) = body(t)?;
    let kind = PluginKind::parse(&t.kind).map_err(|e| ApiError::field("kind", e.to_string()))?;
    let bytes = component_bytes(&console, &t.component_base64)?;
    let inputs = try_inputs(&console, &t).await?;
    let _permit = console.compile_permit()?;
    let (plugins, params, partitions) = (console.broker.plugins().clone(), t.params, t.partitions.unwrap_or(1));
    let records = inputs.clone();
    let tried = tokio::task::spawn_blocking(move || plugins.try_component(&bytes, kind, params, &records, partitions))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| match e.code {
            ErrorCode::InvalidModule => ApiError::from(e).with_field("component_base64"),
            _ => ApiError::from(e),
        })?;
    let state = console.broker.controller().state();
    let mut decoder = weir_registry::validate::DatumDecoder::new(&state.registry);
    let mut results = Vec::with_capacity(inputs.len());
    let blank = |input| TriedRecord { input, outputs: None, error: None, partition: None };
    match tried {
        weir_broker::plugins::Tried::Transform(outcomes) => {
            for (r, outcome) in inputs.iter().zip(outcomes) {
                let mut tried = blank(crate::messages::view(r, &mut decoder).0);
                match outcome {
                    Ok(outputs) => {
                        let mut shown = Vec::with_capacity(outputs.len());
                        for (topic, o) in outputs {
                            let (key, value) = (o.key.as_deref(), o.value.as_deref());
                            shown.push(TriedOutput {
                                topic,
                                key: key.map(|k| crate::messages::payload(k, &mut decoder)),
                                value: value.map(|v| crate::messages::payload(v, &mut decoder)),
                                headers: o
                                    .headers
                                    .iter()
                                    .map(|(k, v)| crate::messages::HeaderView {
                                        key: k.clone(),
                                        value: v.as_deref().map(|v| crate::messages::payload(v, &mut decoder)),
                                    })
                                    .collect(),
                            });
                        }
                        tried.outputs = Some(shown);
                    }
                    Err(e) => tried.error = Some(e),
                }
                results.push(tried);
            }
        }
        weir_broker::plugins::Tried::Partitioner(chosen) => {
            for (r, p) in inputs.iter().zip(chosen) {
                results.push(TriedRecord { partition: Some(p), ..blank(crate::messages::view(r, &mut decoder).0) });
            }
        }
        weir_broker::plugins::Tried::Validator(verdicts) => {
            for (r, v) in inputs.iter().zip(verdicts) {
                results.push(TriedRecord { error: v, ..blank(crate::messages::view(r, &mut decoder).0) });
            }
        }
    }
    Ok(Json(Tried { kind: kind.as_str().to_owned(), results }))
}
