//! Weir's web console: a JSON API under `/api/v1` (described by the OpenAPI document at
//! `/api/v1/openapi.json`, generated from the handlers), Prometheus metrics at `/metrics`, and
//! the pages, plain HTML, CSS and JavaScript shipped inside the binary, which do everything
//! through that API. `weir serve` serves it on `console_addr` (127.0.0.1:8080).
//!
//! The API is an adapter like the QUIC and Kafka listeners: every call goes to the broker's
//! service (`weir_broker::service::Broker`); no rule of the broker lives here.
//!
//! Safe by construction: state-changing requests need the `x-weir-console` header (a page of
//! another origin cannot send it without a CORS preflight, which is never granted), and a
//! request whose `Origin` is another host is refused; the pages set text with `textContent`,
//! never as HTML; every answer carries a `Content-Security-Policy` that allows only this
//! origin's scripts.

// Non-test code states why a value fits where it is narrowed, and never unwraps.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cluster;
pub mod error;
pub mod groups;
pub mod messages;
pub mod metrics;
pub mod modules;
pub mod overview;
pub mod rates;
pub mod schemas;
pub mod topics;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_broker::service::Broker;

use crate::error::{ApiError, ApiResult};

/// The header every state-changing API request carries (any value).
pub const CSRF_HEADER: &str = "x-weir-console";

/// What every handler shares: the broker's service and the console's own bounded state.
#[derive(Clone)]
pub struct Console {
    pub broker: Broker,
    pub rates: Arc<rates::Rates>,
    /// Message browses running now (at most `messages::BROWSES_MAX`).
    pub browses: Arc<tokio::sync::Semaphore>,
    /// Components being compiled for an inspection or a try (at most [`COMPILES_MAX`]).
    pub compiles: Arc<tokio::sync::Semaphore>,
    /// Server-sent event streams open (at most [`EVENT_STREAMS_MAX`]): each reads every
    /// topic's figures once a second.
    pub event_streams: Arc<tokio::sync::Semaphore>,
}

/// Event streams (`/api/v1/events`) open at once; more are answered 429.
pub const EVENT_STREAMS_MAX: usize = 16;

/// Components the console compiles at once (inspect, try); more are answered 429.
pub const COMPILES_MAX: usize = 2;

impl Console {
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            rates: Arc::default(),
            browses: Arc::new(tokio::sync::Semaphore::new(messages::BROWSES_MAX)),
            compiles: Arc::new(tokio::sync::Semaphore::new(COMPILES_MAX)),
            event_streams: Arc::new(tokio::sync::Semaphore::new(EVENT_STREAMS_MAX)),
        }
    }

    /// A permit to compile a component, or a 429 naming the limit.
    pub fn compile_permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        self.compiles.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "limit_reached",
                format!("the console compiles at most {COMPILES_MAX} components at once (COMPILES_MAX); try again when one ends"),
            )
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Weir console API", description = "Operate a Weir broker: topics, messages, consumer groups, Wasm modules, schemas."),
    tags(
        (name = "overview"), (name = "topics"), (name = "messages"), (name = "groups"), (name = "modules"), (name = "schemas"), (name = "metrics")
    )
)]
struct ApiDoc;

/// The JSON body of a request, or a 4xx naming what is wrong with it.
pub fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> ApiResult<Json<T>> {
    parsed.map_err(|rejection| {
        let message = rejection.body_text();
        // A body that parses but does not fit (a wrong type, a missing field) is a 400 like any
        // other bad input, not axum's 422.
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        let code = match rejection {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::JsonDataError(_) => "invalid_field",
            _ => "invalid_body",
        };
        ApiError { status, code: code.into(), field: field_in(&message), message }
    })
}

/// The query string of a request, or a 400 naming what is wrong with it.
pub fn query<T>(parsed: Result<axum::extract::Query<T>, QueryRejection>) -> ApiResult<axum::extract::Query<T>> {
    parsed.map_err(|rejection| {
        let message = rejection.body_text();
        ApiError { status: StatusCode::BAD_REQUEST, code: "invalid_query".into(), field: field_in(&message), message }
    })
}

/// The field serde's message names: `missing field `name``, `unknown field `x``, or the path
/// before `: invalid type` in a data error.
fn field_in(message: &str) -> Option<String> {
    if let Some(rest) = message.split("field `").nth(1) {
        return rest.split('`').next().map(str::to_owned);
    }
    let detail = message.split(": ").nth(1)?;
    let path = detail.split(": ").next()?;
    (!path.is_empty() && !path.contains(' ')).then(|| path.to_owned())
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.x.y.z`, `[::1]`),
/// with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a request naming another host than loopback when the console listens on loopback
/// (DNS rebinding), and state-changing requests without [`CSRF_HEADER`] or from a page of
/// another origin.
async fn guard(
    axum::extract::State(loopback_only): axum::extract::State<bool>,
    request: Request,
    next: Next,
) -> Response {
    if loopback_only {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !is_loopback_host(host) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host",
                format!("this console listens on loopback and answers requests for localhost or 127.0.0.1 only, not {host:?}"),
            )
            .with_field("host")
            .into_response();
        }
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let headers = request.headers();
        if !headers.contains_key(CSRF_HEADER) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                format!("a state-changing request needs the {CSRF_HEADER} header"),
            )
            .with_field(CSRF_HEADER)
            .into_response();
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if let (Some(origin), Some(host)) = (origin, host) {
            let origin_host = origin.split("://").nth(1).unwrap_or(origin);
            if origin_host != host {
                return ApiError::new(StatusCode::FORBIDDEN, "csrf", format!("requests from {origin} are refused"))
                    .with_field("origin")
                    .into_response();
            }
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn unknown_api_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_route",
        format!("no API route {} {}", request.method(), request.uri().path()),
    )
}

/// This OpenAPI document (generated from the handlers; it lists every route).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "overview",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(axum::extract::State(console): axum::extract::State<Console>) -> Json<utoipa::openapi::OpenApi> {
    Json(api(console).1)
}

/// The API routes and the OpenAPI document they make.
fn api(console: Console) -> (Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(overview::get_overview))
        .routes(routes!(overview::events))
        .routes(routes!(cluster::get_cluster))
        .routes(routes!(topics::list_topics, topics::create_topic))
        .routes(routes!(topics::get_topic, topics::delete_topic))
        .routes(routes!(topics::alter_configs))
        .routes(routes!(topics::purge))
        .routes(routes!(messages::browse, messages::produce))
        .routes(routes!(groups::list_groups))
        .routes(routes!(groups::get_group, groups::delete_group))
        .routes(routes!(groups::reset_offsets))
        .routes(routes!(modules::list_modules, modules::deploy))
        .routes(routes!(modules::get_module))
        .routes(routes!(modules::inspect))
        .routes(routes!(modules::try_module))
        .routes(routes!(modules::act))
        .routes(routes!(schemas::list_subjects))
        .routes(routes!(schemas::get_subject, schemas::register))
        .routes(routes!(schemas::check))
        .routes(routes!(schemas::set_subject_level))
        .routes(routes!(schemas::set_global_level))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
        .with_state(console)
        .split_for_parts()
}

/// The whole console: API, OpenAPI document, metrics and pages, for a listener on `addr`.
pub fn router(broker: Broker, addr: std::net::SocketAddr) -> Router {
    // A module upload is the largest body: base64 of at most module_bytes_max, and its spec.
    let body_max = broker.plugins().config().module_bytes_max / 3 * 4 + (1 << 20);
    // On a loopback listener a request must name a loopback host, so a page of another site
    // whose name resolves to 127.0.0.1 (DNS rebinding) cannot use the API with the browser's
    // same-origin rights.
    let loopback_only = addr.ip().is_loopback();
    let (api, _) = api(Console::new(broker));
    api.route("/api/v1", get(unknown_api_route))
        .route("/api/v1/{*rest}", axum::routing::any(unknown_api_route))
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .layer(DefaultBodyLimit::max(body_max))
        .layer(axum::middleware::from_fn_with_state(loopback_only, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_host_names_pass_on_a_loopback_listener() {
        let cases = [
            ("127.0.0.1:8080", true),
            ("localhost:8080", true),
            ("LOCALHOST", true),
            ("127.1.2.3", true),
            ("[::1]:8080", true),
            ("evil.example:8080", false),
            ("localhost.evil.example:8080", false),
            ("10.0.0.1:8080", false),
            ("[::2]:8080", false),
            ("", false),
        ];
        for (host, expected) in cases {
            assert_eq!(is_loopback_host(host), expected, "{host}");
        }
    }

    #[test]
    fn the_field_a_serde_message_names_is_found() {
        let cases = [
            ("Failed to deserialize the JSON body into the target type: missing field `name` at line 1 column 2", Some("name")),
            ("Failed to deserialize the JSON body into the target type: unknown field `bogus`, expected one of `name`", Some("bogus")),
            ("Failed to deserialize the JSON body into the target type: partitions: invalid type: string \"x\", expected u32 at line 1 column 20", Some("partitions")),
            ("Failed to parse the request body as JSON: expected value at line 1 column 1", None),
        ];
        for (message, field) in cases {
            assert_eq!(field_in(message).as_deref(), field, "{message}");
        }
    }
}
