//! `/api/v1/schemas`: the schema registry for people: subjects with their versions, a
//! candidate checked against a subject's compatibility level before it is saved, registering,
//! and compatibility levels per subject and global. The same registry state and commands as
//! the Confluent REST API (`weir_registry::api::Backend`), through the controller.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_registry::api::Backend;
use weir_registry::compat::Compatibility;
use weir_registry::schema::{ParsedSchema, SchemaType};
use weir_registry::state::{RegistryCommand, RegistryOutcome, RegistryState};
use weir_registry::RegistryError;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{body, Console};

#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectSummary {
    pub subject: String,
    /// Live (not soft-deleted) versions.
    pub versions: Vec<u32>,
    /// `AVRO` or `JSON`, of the latest version.
    pub schema_type: String,
    pub latest_id: u32,
    /// The subject's level, or the global one it falls back to.
    pub compatibility: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectList {
    /// The global compatibility level.
    pub compatibility: String,
    pub subjects: Vec<SubjectSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaVersionView {
    pub version: u32,
    pub id: u32,
    pub schema_type: String,
    /// The schema as registered.
    pub schema: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectDetail {
    pub subject: String,
    pub compatibility: String,
    pub versions: Vec<SchemaVersionView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub schema: String,
    /// `AVRO` (default) or `JSON`.
    pub schema_type: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub compatible: bool,
    /// The level checked against.
    pub compatibility: String,
    /// Why it is not compatible (empty when it is).
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    pub id: u32,
    pub version: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE.
    pub compatibility: String,
}

/// A registry refusal as the API answers it, naming the field.
fn refused(e: RegistryError, field: &str) -> ApiError {
    let (status, _) = e.status_and_code();
    let code = match &e {
        RegistryError::SubjectNotFound(_) => "subject_not_found",
        RegistryError::VersionNotFound(_) => "version_not_found",
        RegistryError::Incompatible(_) => "incompatible_schema",
        RegistryError::InvalidSchema(_) => "invalid_schema",
        RegistryError::InvalidCompatibility(_) => "invalid_compatibility",
        RegistryError::LimitReached(_) => "limit_reached",
        RegistryError::Store(_) => "storage",
        _ => "invalid_request",
    };
    // Confluent's 422s are bad input here, as every other field error of this API.
    let status = match status {
        422 => StatusCode::BAD_REQUEST,
        s => StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    ApiError::new(status, code, e.to_string()).with_field(field)
}

/// Longest schema text, as the registry's REST API takes (its body limit).
const SCHEMA_BYTES_MAX: usize = 4 << 20;

fn parse(candidate: &Candidate) -> ApiResult<(SchemaType, ParsedSchema)> {
    if candidate.schema.len() > SCHEMA_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "schema_too_large",
            format!("a schema is at most {SCHEMA_BYTES_MAX} bytes, not {}", candidate.schema.len()),
        )
        .with_field("schema"));
    }
    let schema_type = SchemaType::from_api(candidate.schema_type.as_deref()).map_err(|e| refused(e, "schema_type"))?;
    let parsed = ParsedSchema::parse(schema_type, &candidate.schema).map_err(|e| refused(e, "schema"))?;
    Ok((schema_type, parsed))
}

fn summary(state: &RegistryState, subject: &str) -> Option<SubjectSummary> {
    let live = state.live_versions(subject);
    let latest = live.last()?;
    Some(SubjectSummary {
        subject: subject.to_owned(),
        versions: live.iter().map(|v| v.version).collect(),
        schema_type: state.schemas.get(&latest.id).map_or("AVRO", |s| s.schema_type.api_name()).to_owned(),
        latest_id: latest.id,
        compatibility: state.compatibility(subject).name().to_owned(),
    })
}

/// Every subject with live versions, and the global compatibility level.
#[utoipa::path(get, path = "/api/v1/schemas", tag = "schemas", responses((status = 200, body = SubjectList, description = "OK")))]
pub async fn list_subjects(State(console): State<Console>) -> Json<SubjectList> {
    let backend = console.broker.controller().registry_backend();
    Json(backend.read(|state| SubjectList {
        compatibility: state.global_compatibility.unwrap_or(Compatibility::Backward).name().to_owned(),
        subjects: state.subjects.keys().filter_map(|s| summary(state, s)).collect(),
    }))
}

/// A subject's live versions with their schemas.
#[utoipa::path(get, path = "/api/v1/schemas/{subject}", params(("subject" = String, Path)), tag = "schemas",
    responses((status = 200, body = SubjectDetail, description = "OK"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn get_subject(
    State(console): State<Console>,
    Path(subject): Path<String>,
) -> ApiResult<Json<SubjectDetail>> {
    let backend = console.broker.controller().registry_backend();
    backend.read(|state| {
        let live = state.live_versions(&subject);
        if live.is_empty() {
            return Err(refused(RegistryError::SubjectNotFound(subject.clone()), "subject"));
        }
        let versions = live
            .iter()
            .filter_map(|v| {
                let stored = state.schemas.get(&v.id)?;
                Some(SchemaVersionView {
                    version: v.version,
                    id: v.id,
                    schema_type: stored.schema_type.api_name().to_owned(),
                    schema: stored.schema.clone(),
                })
            })
            .collect();
        Ok(Json(SubjectDetail {
            compatibility: state.compatibility(&subject).name().to_owned(),
            subject: subject.clone(),
            versions,
        }))
    })
}

/// Checks a candidate against the subject's versions as its compatibility level says, without
/// saving it (a subject without versions accepts anything).
#[utoipa::path(post, path = "/api/v1/schemas/{subject}/check", params(("subject" = String, Path)), request_body = Candidate,
    tag = "schemas", responses((status = 200, body = CheckResult, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field")))]
pub async fn check(
    State(console): State<Console>,
    Path(subject): Path<String>,
    candidate: Result<Json<Candidate>, JsonRejection>,
) -> ApiResult<Json<CheckResult>> {
    let Json(candidate) = body(candidate)?;
    let (_, parsed) = parse(&candidate)?;
    let backend = console.broker.controller().registry_backend();
    let (problems, level) = backend
        .read(|state| {
            let level = state.compatibility(&subject);
            if state.live_versions(&subject).is_empty() {
                return Ok((Vec::new(), level));
            }
            state.check(&subject, &parsed, None).map(|p| (p, level))
        })
        .map_err(|e| refused(e, "schema"))?;
    Ok(Json(CheckResult { compatible: problems.is_empty(), compatibility: level.name().to_owned(), problems }))
}

/// Registers a schema under a subject (a new version, or the existing one if it is there).
#[utoipa::path(post, path = "/api/v1/schemas/{subject}", params(("subject" = String, Path)), request_body = Candidate,
    tag = "schemas", responses((status = 201, body = Registered, description = "Created"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"),
    (status = 409, body = ErrorBody, description = "Conflict with the current state")))]
pub async fn register(
    State(console): State<Console>,
    Path(subject): Path<String>,
    candidate: Result<Json<Candidate>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let Json(candidate) = body(candidate)?;
    let (schema_type, _) = parse(&candidate)?;
    let backend = console.broker.controller().registry_backend();
    let command = RegistryCommand::Register { subject, schema_type, schema: candidate.schema, references: Vec::new() };
    match backend.apply(command).await.map_err(|e| refused(e, "schema"))? {
        RegistryOutcome::Registered { id, version } => Ok((StatusCode::CREATED, Json(Registered { id, version }))),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the registry answered {other:?}"),
        )),
    }
}

async fn set_level(console: &Console, subject: Option<String>, level: Level) -> ApiResult<Json<CheckResult>> {
    let level: Compatibility = level.compatibility.parse().map_err(|e| refused(e, "compatibility"))?;
    let backend = console.broker.controller().registry_backend();
    backend
        .apply(RegistryCommand::SetCompatibility { subject, level })
        .await
        .map_err(|e| refused(e, "compatibility"))?;
    Ok(Json(CheckResult { compatible: true, compatibility: level.name().to_owned(), problems: Vec::new() }))
}

/// Sets a subject's compatibility level.
#[utoipa::path(put, path = "/api/v1/schemas/{subject}/compatibility", params(("subject" = String, Path)), request_body = Level,
    tag = "schemas", responses((status = 200, body = CheckResult, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field")))]
pub async fn set_subject_level(
    State(console): State<Console>,
    Path(subject): Path<String>,
    level: Result<Json<Level>, JsonRejection>,
) -> ApiResult<Json<CheckResult>> {
    let Json(level) = body(level)?;
    set_level(&console, Some(subject), level).await
}

/// Sets the global compatibility level (subjects without their own follow it).
#[utoipa::path(put, path = "/api/v1/schema-compatibility", request_body = Level, tag = "schemas",
    responses((status = 200, body = CheckResult, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field")))]
pub async fn set_global_level(
    State(console): State<Console>,
    level: Result<Json<Level>, JsonRejection>,
) -> ApiResult<Json<CheckResult>> {
    let Json(level) = body(level)?;
    set_level(&console, None, level).await
}
