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
    let max = console.broker.plugins().config().module_bytes_max;
    // Base64 is 4 characters per 3 bytes: a longer text cannot decode within the limit.
    if deploy.component_base64.len() / 4 * 3 > max + 3 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "module_too_large",
            format!("a component is at most {max} bytes (module_bytes_max)"),
        )
        .with_field("component_base64"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(deploy.component_base64.as_bytes())
        .map_err(|e| ApiError::field("component_base64", format!("component_base64 is not base64: {e}")))?;
    if bytes.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "module_too_large",
            format!("the component has {} bytes; at most {max} (module_bytes_max)", bytes.len()),
        )
        .with_field("component_base64"));
    }
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
