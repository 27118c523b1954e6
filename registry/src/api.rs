//! The Confluent Schema Registry REST API, close enough that Confluent's clients work
//! unchanged: the same paths, JSON bodies, error bodies (`error_code`, `message`) and codes,
//! and the `application/vnd.schemaregistry.v1+json` content type.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::compat::Compatibility;
use crate::schema::{ParsedSchema, SchemaReference, SchemaType};
use crate::state::{Mode, RegistryCommand, RegistryOutcome, RegistryState};
use crate::RegistryError;

/// Largest request body accepted, in bytes.
pub const BODY_BYTES_LIMIT: usize = 4 * 1024 * 1024;
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where the registry's state lives: read it, or change it through a durable, replicated path.
pub trait Backend: Clone + Send + Sync + 'static {
    fn read<R>(&self, f: impl FnOnce(&RegistryState) -> R) -> R;
    fn apply(&self, command: RegistryCommand) -> impl Future<Output = Result<RegistryOutcome, RegistryError>> + Send;
}

pub fn router<B: Backend>(backend: B) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO", "JSON"])) }))
        .route("/subjects", get(list_subjects::<B>))
        .route("/subjects/{subject}", post(lookup::<B>).delete(delete_subject::<B>))
        .route("/subjects/{subject}/versions", get(list_versions::<B>).post(register::<B>))
        .route("/subjects/{subject}/versions/{version}", get(get_version::<B>).delete(delete_version::<B>))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema::<B>))
        .route("/schemas/ids/{id}", get(get_schema::<B>))
        .route("/schemas/ids/{id}/schema", get(get_schema_text::<B>))
        .route("/schemas/ids/{id}/versions", get(get_schema_versions::<B>))
        .route("/schemas/ids/{id}/subjects", get(get_schema_subjects::<B>))
        .route("/config", get(get_global_config::<B>).put(put_global_config::<B>))
        .route(
            "/config/{subject}",
            get(get_subject_config::<B>).put(put_subject_config::<B>).delete(delete_subject_config::<B>),
        )
        .route("/mode", get(get_global_mode::<B>).put(put_global_mode::<B>))
        .route("/mode/{subject}", get(get_subject_mode::<B>).put(put_subject_mode::<B>))
        .route("/compatibility/subjects/{subject}/versions", post(check_latest::<B>))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_version::<B>))
        .fallback(|| async { error(RegistryError::BadRequest("HTTP 404 Not Found".into())).with_status(404) })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(backend)
}

struct ApiResponse(StatusCode, Value);

impl ApiResponse {
    fn with_status(mut self, status: u16) -> Self {
        self.0 = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        self
    }
}

impl IntoResponse for ApiResponse {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, CONTENT_TYPE)], self.1.to_string()).into_response()
    }
}

fn ok(value: Value) -> ApiResponse {
    ApiResponse(StatusCode::OK, value)
}

fn error(e: RegistryError) -> ApiResponse {
    let (status, code) = e.status_and_code();
    ApiResponse(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"error_code": code, "message": e.to_string()}),
    )
}

fn respond(result: Result<Value, RegistryError>) -> ApiResponse {
    match result {
        Ok(v) => ok(v),
        Err(e) => error(e),
    }
}

/// Reads a JSON body within the size limit; bad JSON is a 400 with a Confluent error body.
async fn json_body<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, RegistryError> {
    let bytes: Bytes = axum::body::to_bytes(body, BODY_BYTES_LIMIT).await.map_err(|_| {
        RegistryError::BadRequest(format!("Request body exceeds the limit of {BODY_BYTES_LIMIT} bytes"))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadRequest(format!("Invalid JSON body: {e}")))
}

/// `latest`, `-1`, or a version number from 1 to 2^31-1.
fn parse_version(text: &str, state: &RegistryState, subject: &str) -> Result<u32, RegistryError> {
    if text == "latest" || text == "-1" {
        return state.live_versions(subject).last().map(|v| v.version).ok_or_else(|| {
            if state.subject_exists(subject, false) {
                RegistryError::VersionNotFound(0)
            } else {
                RegistryError::SubjectNotFound(subject.to_owned())
            }
        });
    }
    match text.parse::<i64>() {
        Ok(v) if (1..=i64::from(i32::MAX)).contains(&v) => Ok(v as u32),
        _ => Err(RegistryError::InvalidVersion(text.to_owned())),
    }
}

/// Boolean query flags, read leniently (`true`, `True`, `1`), as clients differ in how they
/// spell them; anything else is false.
#[derive(Deserialize)]
#[serde(from = "std::collections::HashMap<String, String>")]
struct DeletedQuery {
    deleted: bool,
    permanent: bool,
    verbose: bool,
}

impl From<std::collections::HashMap<String, String>> for DeletedQuery {
    fn from(q: std::collections::HashMap<String, String>) -> Self {
        let flag = |name: &str| q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        Self { deleted: flag("deleted"), permanent: flag("permanent"), verbose: flag("verbose") }
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<SchemaReference>,
}

/// The body's schema parsed with its references resolved against the registry's state.
fn parse_body(state: &RegistryState, body: &SchemaBody) -> Result<(SchemaType, ParsedSchema), RegistryError> {
    let schema_type = SchemaType::from_api(body.schema_type.as_deref())?;
    let text = state.resolve(schema_type, &body.schema, &body.references)?;
    Ok((schema_type, ParsedSchema::parse(schema_type, &text)?))
}

/// `schemaType` (when not Avro) and `references` (when any), as Confluent writes them.
fn describe_schema(value: &mut Value, stored: &crate::state::StoredSchema) {
    if stored.schema_type != SchemaType::Avro {
        value["schemaType"] = json!(stored.schema_type.api_name());
    }
    if !stored.references.is_empty() {
        value["references"] = json!(stored.references);
    }
}

fn version_json(state: &RegistryState, subject: &str, version: u32) -> Result<Value, RegistryError> {
    let stored = state.version_schema(subject, version)?;
    let id = state.subjects[subject].iter().find(|v| v.version == version).map(|v| v.id).unwrap_or_default();
    let mut value = json!({"subject": subject, "version": version, "id": id, "schema": stored.schema});
    describe_schema(&mut value, stored);
    Ok(value)
}

async fn list_subjects<B: Backend>(State(b): State<B>, Query(q): Query<DeletedQuery>) -> ApiResponse {
    ok(b.read(|s| json!(s.subjects.keys().filter(|k| s.subject_exists(k, q.deleted)).collect::<Vec<_>>())))
}

async fn list_versions<B: Backend>(
    State(b): State<B>,
    Path(subject): Path<String>,
    Query(q): Query<DeletedQuery>,
) -> ApiResponse {
    respond(b.read(|s| {
        if !s.subject_exists(&subject, q.deleted) {
            return Err(RegistryError::SubjectNotFound(subject.clone()));
        }
        Ok(json!(s.subjects[&subject]
            .iter()
            .filter(|v| q.deleted || !v.deleted)
            .map(|v| v.version)
            .collect::<Vec<_>>()))
    }))
}

async fn register<B: Backend>(State(b): State<B>, Path(subject): Path<String>, body: Body) -> ApiResponse {
    let outcome = async {
        let body: SchemaBody = json_body(body).await?;
        let (schema_type, _) = b.read(|s| parse_body(s, &body))?;
        let command = RegistryCommand::Register {
            subject: subject.clone(),
            schema_type,
            schema: body.schema,
            references: body.references,
        };
        match b.apply(command).await? {
            RegistryOutcome::Registered { id, .. } => Ok(json!({"id": id})),
            other => Err(RegistryError::Store(format!("unexpected outcome {other:?}"))),
        }
    }
    .await;
    respond(outcome)
}

async fn lookup<B: Backend>(State(b): State<B>, Path(subject): Path<String>, body: Body) -> ApiResponse {
    let outcome = async {
        let body: SchemaBody = json_body(body).await?;
        b.read(|s| {
            let (schema_type, parsed) = parse_body(s, &body)?;
            if !s.subject_exists(&subject, false) {
                return Err(RegistryError::SubjectNotFound(subject.clone()));
            }
            let found = s
                .find_in_subject(&subject, schema_type, &parsed.canonical, &body.references)
                .ok_or(RegistryError::SchemaNotInSubject)?;
            version_json(s, &subject, found.version)
        })
    }
    .await;
    respond(outcome)
}

async fn get_version<B: Backend>(State(b): State<B>, Path((subject, version)): Path<(String, String)>) -> ApiResponse {
    respond(b.read(|s| {
        let v = parse_version(&version, s, &subject)?;
        version_json(s, &subject, v)
    }))
}

async fn get_version_schema<B: Backend>(
    State(b): State<B>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResponse {
    respond(b.read(|s| {
        let v = parse_version(&version, s, &subject)?;
        let stored = s.version_schema(&subject, v)?;
        Ok(serde_json::from_str(&stored.schema).unwrap_or(Value::String(stored.schema.clone())))
    }))
}

async fn delete_version<B: Backend>(
    State(b): State<B>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Query<DeletedQuery>,
) -> ApiResponse {
    let outcome = async {
        let v = b.read(|s| {
            if version == "latest" || version == "-1" {
                parse_version(&version, s, &subject)
            } else {
                parse_version(&version, &RegistryState::default(), &subject)
            }
        })?;
        match b
            .apply(RegistryCommand::DeleteVersion { subject: subject.clone(), version: v, permanent: q.permanent })
            .await?
        {
            RegistryOutcome::DeletedVersions(vs) => Ok(json!(vs.first().copied().unwrap_or(v))),
            other => Err(RegistryError::Store(format!("unexpected outcome {other:?}"))),
        }
    }
    .await;
    respond(outcome)
}

async fn delete_subject<B: Backend>(
    State(b): State<B>,
    Path(subject): Path<String>,
    Query(q): Query<DeletedQuery>,
) -> ApiResponse {
    respond(match b.apply(RegistryCommand::DeleteSubject { subject, permanent: q.permanent }).await {
        Ok(RegistryOutcome::DeletedVersions(vs)) => Ok(json!(vs)),
        Ok(other) => Err(RegistryError::Store(format!("unexpected outcome {other:?}"))),
        Err(e) => Err(e),
    })
}

async fn get_schema<B: Backend>(State(b): State<B>, Path(id): Path<String>) -> ApiResponse {
    respond(b.read(|s| {
        let stored = schema_by_id(s, &id)?;
        let mut value = json!({"schema": stored.schema});
        describe_schema(&mut value, stored);
        Ok(value)
    }))
}

async fn get_schema_text<B: Backend>(State(b): State<B>, Path(id): Path<String>) -> ApiResponse {
    respond(b.read(|s| {
        let stored = schema_by_id(s, &id)?;
        Ok(serde_json::from_str(&stored.schema).unwrap_or(Value::String(stored.schema.clone())))
    }))
}

fn schema_by_id<'a>(s: &'a RegistryState, id: &str) -> Result<&'a crate::state::StoredSchema, RegistryError> {
    let id: u32 = id.parse().map_err(|_| RegistryError::SchemaNotFound(0))?;
    s.schemas.get(&id).ok_or(RegistryError::SchemaNotFound(id))
}

fn usages(s: &RegistryState, id: u32) -> Vec<(String, u32)> {
    s.subjects
        .iter()
        .flat_map(|(subject, vs)| {
            vs.iter().filter(move |v| v.id == id && !v.deleted).map(move |v| (subject.clone(), v.version))
        })
        .collect()
}

async fn get_schema_versions<B: Backend>(State(b): State<B>, Path(id): Path<String>) -> ApiResponse {
    respond(b.read(|s| {
        let id_num = schema_by_id(s, &id).map(|_| id.parse::<u32>().unwrap_or_default())?;
        Ok(json!(usages(s, id_num)
            .into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect::<Vec<_>>()))
    }))
}

async fn get_schema_subjects<B: Backend>(State(b): State<B>, Path(id): Path<String>) -> ApiResponse {
    respond(b.read(|s| {
        let id_num = schema_by_id(s, &id).map(|_| id.parse::<u32>().unwrap_or_default())?;
        let mut subjects: Vec<String> = usages(s, id_num).into_iter().map(|(subject, _)| subject).collect();
        subjects.dedup();
        Ok(json!(subjects))
    }))
}

#[derive(Deserialize)]
struct CompatibilityBody {
    compatibility: String,
}

async fn set_compatibility<B: Backend>(b: &B, subject: Option<String>, body: Body) -> Result<Value, RegistryError> {
    let body: CompatibilityBody = json_body(body).await?;
    let level: Compatibility = body.compatibility.parse()?;
    match b.apply(RegistryCommand::SetCompatibility { subject, level }).await? {
        RegistryOutcome::Compatibility(level) => Ok(json!({"compatibility": level.name()})),
        other => Err(RegistryError::Store(format!("unexpected outcome {other:?}"))),
    }
}

async fn get_global_config<B: Backend>(State(b): State<B>) -> ApiResponse {
    ok(b.read(|s| json!({"compatibilityLevel": s.global_compatibility.unwrap_or(Compatibility::Backward).name()})))
}

async fn put_global_config<B: Backend>(State(b): State<B>, body: Body) -> ApiResponse {
    respond(set_compatibility(&b, None, body).await)
}

async fn get_subject_config<B: Backend>(State(b): State<B>, Path(subject): Path<String>) -> ApiResponse {
    respond(b.read(|s| match s.subject_compatibility.get(&subject) {
        Some(level) => Ok(json!({"compatibilityLevel": level.name()})),
        None => Err(RegistryError::SubjectNotFound(subject.clone())),
    }))
}

async fn put_subject_config<B: Backend>(State(b): State<B>, Path(subject): Path<String>, body: Body) -> ApiResponse {
    respond(set_compatibility(&b, Some(subject), body).await)
}

async fn delete_subject_config<B: Backend>(State(b): State<B>, Path(subject): Path<String>) -> ApiResponse {
    respond(match b.apply(RegistryCommand::DeleteCompatibility { subject }).await {
        Ok(RegistryOutcome::Compatibility(level)) => Ok(json!({"compatibilityLevel": level.name()})),
        Ok(other) => Err(RegistryError::Store(format!("unexpected outcome {other:?}"))),
        Err(e) => Err(e),
    })
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

async fn set_mode<B: Backend>(b: &B, subject: Option<String>, body: Body) -> Result<Value, RegistryError> {
    let body: ModeBody = json_body(body).await?;
    let mode: Mode = body.mode.parse()?;
    match b.apply(RegistryCommand::SetMode { subject, mode }).await? {
        RegistryOutcome::Mode(mode) => Ok(json!({"mode": mode})),
        other => Err(RegistryError::Store(format!("unexpected outcome {other:?}"))),
    }
}

async fn get_global_mode<B: Backend>(State(b): State<B>) -> ApiResponse {
    ok(b.read(|s| json!({"mode": s.mode(None)})))
}

async fn put_global_mode<B: Backend>(State(b): State<B>, body: Body) -> ApiResponse {
    respond(set_mode(&b, None, body).await)
}

async fn get_subject_mode<B: Backend>(State(b): State<B>, Path(subject): Path<String>) -> ApiResponse {
    ok(b.read(|s| json!({"mode": s.mode(Some(&subject))})))
}

async fn put_subject_mode<B: Backend>(State(b): State<B>, Path(subject): Path<String>, body: Body) -> ApiResponse {
    respond(set_mode(&b, Some(subject), body).await)
}

async fn check<B: Backend>(
    b: &B,
    subject: &str,
    version: Option<&str>,
    verbose: bool,
    body: Body,
) -> Result<Value, RegistryError> {
    let body: SchemaBody = json_body(body).await?;
    b.read(|s| {
        let (_, parsed) = parse_body(s, &body)?;
        let against = match version {
            Some(v) => Some(parse_version(v, s, subject)?),
            None => None,
        };
        if against.is_some() && !s.subject_exists(subject, false) {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let problems = s.check(subject, &parsed, against)?;
        let mut value = json!({"is_compatible": problems.is_empty()});
        if verbose {
            value["messages"] = json!(problems);
        }
        Ok(value)
    })
}

async fn check_latest<B: Backend>(
    State(b): State<B>,
    Path(subject): Path<String>,
    Query(q): Query<DeletedQuery>,
    body: Body,
) -> ApiResponse {
    respond(check(&b, &subject, None, q.verbose, body).await)
}

async fn check_version<B: Backend>(
    State(b): State<B>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Query<DeletedQuery>,
    body: Body,
) -> ApiResponse {
    respond(check(&b, &subject, Some(&version), q.verbose, body).await)
}
