//! The API's one error shape: a 4xx or 5xx status with a JSON body that names what was wrong
//! (`field`, when one field of the request caused it) and a stable `code`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weir_sdk::{ErrorCode, WireError};

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: `unknown_topic`, `invalid_config`, `malformed_json`, ...
    pub code: String,
    pub message: String,
    /// The request field (body, query or path) the error is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_owned(), message: message.into(), field: None }
    }

    /// A 400 about one field of the request.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self { field: Some(field.to_owned()), ..Self::new(StatusCode::BAD_REQUEST, "invalid_field", message) }
    }

    pub fn not_found(code: &str, field: &str, message: impl Into<String>) -> Self {
        Self { field: Some(field.to_owned()), ..Self::new(StatusCode::NOT_FOUND, code, message) }
    }

    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = %self.code, message = %self.message, "console API error");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, field: self.field } };
        (self.status, Json(body)).into_response()
    }
}

/// The HTTP status a service error is answered with: the client's mistakes are 4xx, a broker
/// that cannot serve right now is 503, and only an internal failure is 500.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        UnknownTopic | UnknownPartition | GroupNotFound | UnknownModule | UnknownMemberId => StatusCode::NOT_FOUND,
        TopicAlreadyExists | NonEmptyGroup | RebalanceInProgress | IllegalGeneration => StatusCode::CONFLICT,
        MessageTooLarge | FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        OffsetOutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
        LimitReached => StatusCode::TOO_MANY_REQUESTS,
        RequestTimedOut => StatusCode::GATEWAY_TIMEOUT,
        Storage
        | Connection
        | NotController
        | NotLeaderOrFollower
        | LeaderNotAvailable
        | NotEnoughReplicas
        | NotEnoughReplicasAfterAppend
        | FencedLeaderEpoch
        | UnknownLeaderEpoch
        | CoordinatorNotAvailable => StatusCode::SERVICE_UNAVAILABLE,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `UnknownTopic` -> `unknown_topic`.
pub fn code_name(code: ErrorCode) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        Self::new(status_of(e.code), &code_name(e.code), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_the_status_a_client_can_act_on() {
        let cases = [
            (ErrorCode::UnknownTopic, StatusCode::NOT_FOUND, "unknown_topic"),
            (ErrorCode::TopicAlreadyExists, StatusCode::CONFLICT, "topic_already_exists"),
            (ErrorCode::InvalidConfig, StatusCode::BAD_REQUEST, "invalid_config"),
            (ErrorCode::InvalidTopicName, StatusCode::BAD_REQUEST, "invalid_topic_name"),
            (ErrorCode::OffsetOutOfRange, StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range"),
            (ErrorCode::MessageTooLarge, StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
            (ErrorCode::NotController, StatusCode::SERVICE_UNAVAILABLE, "not_controller"),
            (ErrorCode::Internal, StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ];
        for (code, status, name) in cases {
            assert_eq!(status_of(code), status, "{code:?}");
            assert_eq!(code_name(code), name, "{code:?}");
        }
    }
}
