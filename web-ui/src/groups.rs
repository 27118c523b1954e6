//! `/api/v1/groups`: consumer groups, their members and lag; resetting a group's offsets
//! (only while it has no members, as Kafka requires) and deleting a group. The rules are the
//! service's (`Broker::reset_group_offsets` and the rest), which `weir group` calls too.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use weir_sdk::wire::{GroupDescribed, GroupListing, ResetOffsetsRequest, ResetOffsetsResponse, ResetTo};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{body, Console};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetOffsets {
    pub topic: String,
    /// `earliest`, `latest`, `timestamp` (with `timestamp`) or `offset` (with `offsets`).
    pub to: String,
    /// With `to=timestamp`: ms since the epoch.
    pub timestamp: Option<i64>,
    /// With `to=offset`: the offset per partition (by partition number, as text in JSON).
    #[serde(default)]
    pub offsets: BTreeMap<u32, i64>,
    /// The partitions to reset; every partition of the topic when absent (with `to=offset`,
    /// those in `offsets`).
    pub partitions: Option<Vec<u32>>,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// Every consumer group with its state, members and total lag.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", responses((status = 200, body = [GroupListing], description = "OK")))]
pub async fn list_groups(State(console): State<Console>) -> Json<Vec<GroupListing>> {
    Json(console.broker.list_groups())
}

/// A group's state, members with their assignments, and lag per partition.
#[utoipa::path(get, path = "/api/v1/groups/{group_id}", params(("group_id" = String, Path)), tag = "groups",
    responses((status = 200, body = GroupDescribed, description = "OK"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn get_group(
    State(console): State<Console>,
    Path(group_id): Path<String>,
) -> ApiResult<Json<GroupDescribed>> {
    Ok(Json(console.broker.describe_group(&group_id).map_err(|e| ApiError::from(e).with_field("group_id"))?))
}

/// Deletes a group and its committed offsets; refused while it has members.
#[utoipa::path(delete, path = "/api/v1/groups/{group_id}", params(("group_id" = String, Path)), tag = "groups",
    responses((status = 204, description = "Done; no body"), (status = 404, body = ErrorBody, description = "Not found; the error names what"), (status = 409, body = ErrorBody, description = "Conflict with the current state")))]
pub async fn delete_group(State(console): State<Console>, Path(group_id): Path<String>) -> ApiResult<StatusCode> {
    console.broker.delete_group(&group_id).await.map_err(|e| ApiError::from(e).with_field("group_id"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves a group's committed offsets of one topic to the earliest, the latest, a time or
/// given offsets; only while the group has no members. `dry_run` says what would change.
#[utoipa::path(post, path = "/api/v1/groups/{group_id}/reset-offsets", params(("group_id" = String, Path)),
    request_body = ResetOffsets, tag = "groups",
    responses((status = 200, body = ResetOffsetsResponse, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 404, body = ErrorBody, description = "Not found; the error names what"),
    (status = 409, body = ErrorBody, description = "Conflict with the current state"), (status = 416, body = ErrorBody, description = "Offset out of range")))]
pub async fn reset_offsets(
    State(console): State<Console>,
    Path(group_id): Path<String>,
    reset: Result<Json<ResetOffsets>, JsonRejection>,
) -> ApiResult<Json<ResetOffsetsResponse>> {
    let Json(reset) = body(reset)?;
    let to = match (reset.to.as_str(), reset.timestamp) {
        ("earliest", _) => ResetTo::Earliest,
        ("latest", _) => ResetTo::Latest,
        ("timestamp", Some(t)) => ResetTo::Timestamp(t),
        ("timestamp", None) => return Err(ApiError::field("timestamp", "to=timestamp needs a timestamp (ms)")),
        ("offset", _) => ResetTo::Offsets(reset.offsets),
        (other, _) => {
            return Err(ApiError::field(
                "to",
                format!("to must be earliest, latest, timestamp or offset, not {other:?}"),
            ))
        }
    };
    let request =
        ResetOffsetsRequest { group_id, topic: reset.topic, to, partitions: reset.partitions, dry_run: reset.dry_run };
    let answer =
        console.broker.reset_group_offsets(request).await.map_err(|e| ApiError::from(e.error).with_field(e.field))?;
    Ok(Json(answer))
}
