//! `/api/v1/groups`: consumer groups, their members and lag; resetting a group's offsets
//! (only while it has no members, as Kafka requires) and deleting a group.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_broker::groups::{CommittedOffset, GroupState};
use weir_sdk::{ErrorCode, OffsetSpec, WireError};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{body, Console};

/// Partitions one reset may name.
const RESET_PARTITIONS_MAX: usize = 10_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSummary {
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub state: String,
    pub protocol_type: String,
    pub members: usize,
    /// Records behind the high watermark, over every committed partition.
    pub total_lag: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// `topic:partition` pairs the member was assigned (Kafka's consumer protocol).
    pub assignment: Vec<AssignedPartition>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssignedPartition {
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OffsetView {
    pub topic: String,
    pub partition: u32,
    pub committed: i64,
    /// Absent when the topic or partition no longer exists.
    pub high_watermark: Option<i64>,
    pub lag: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupDetail {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub generation_id: i32,
    pub members: Vec<MemberView>,
    pub offsets: Vec<OffsetView>,
    pub total_lag: i64,
}

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

#[derive(Debug, Serialize, ToSchema)]
pub struct ResetEntry {
    pub topic: String,
    pub partition: u32,
    /// The committed offset before; absent when none was.
    pub from: Option<i64>,
    pub to: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResetPlan {
    pub dry_run: bool,
    pub offsets: Vec<ResetEntry>,
}

fn state_name(state: GroupState) -> String {
    format!("{state:?}")
}

/// A group's committed offsets with the high watermarks and lag.
pub fn lag(console: &Console, group: &str) -> Vec<OffsetView> {
    console
        .broker
        .groups()
        .committed(group, None)
        .into_iter()
        .filter_map(|(topic, partition, committed)| {
            let committed = committed?.offset;
            let high_watermark = console.broker.offsets(&topic, partition).ok().map(|(_, hw)| hw);
            let lag = high_watermark.map(|hw| (hw - committed).max(0));
            Some(OffsetView { topic, partition, committed, high_watermark, lag })
        })
        .collect()
}

/// Every consumer group with its state, members and total lag.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", responses((status = 200, body = [GroupSummary], description = "OK")))]
pub async fn list_groups(State(console): State<Console>) -> Json<Vec<GroupSummary>> {
    let groups = console.broker.groups();
    Json(
        groups
            .list()
            .into_iter()
            .map(|(group_id, protocol_type, state)| {
                let members = groups.describe(&group_id).map_or(0, |d| d.members.len());
                let total_lag = lag(&console, &group_id).iter().filter_map(|o| o.lag).sum();
                GroupSummary { group_id, state: state_name(state), protocol_type, members, total_lag }
            })
            .collect(),
    )
}

fn detail(console: &Console, group_id: &str) -> ApiResult<GroupDetail> {
    let d =
        console.broker.groups().describe(group_id).ok_or_else(|| {
            ApiError::not_found("group_not_found", "group_id", format!("no consumer group {group_id:?}"))
        })?;
    let members = d
        .members
        .into_iter()
        .map(|m| MemberView {
            assignment: weir_sdk::consumer_protocol::decode_assignment(&m.assignment)
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partition)| AssignedPartition { topic, partition })
                .collect(),
            member_id: m.member_id,
            client_id: m.client_id,
            client_host: m.client_host,
        })
        .collect();
    let offsets = lag(console, group_id);
    Ok(GroupDetail {
        group_id: d.group_id,
        state: state_name(d.state),
        protocol_type: d.protocol_type,
        protocol: d.protocol_name,
        generation_id: d.generation_id,
        members,
        total_lag: offsets.iter().filter_map(|o| o.lag).sum(),
        offsets,
    })
}

/// A group's state, members with their assignments, and lag per partition.
#[utoipa::path(get, path = "/api/v1/groups/{group_id}", params(("group_id" = String, Path)), tag = "groups",
    responses((status = 200, body = GroupDetail, description = "OK"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn get_group(State(console): State<Console>, Path(group_id): Path<String>) -> ApiResult<Json<GroupDetail>> {
    Ok(Json(detail(&console, &group_id)?))
}

/// Deletes a group and its committed offsets; refused while it has members.
#[utoipa::path(delete, path = "/api/v1/groups/{group_id}", params(("group_id" = String, Path)), tag = "groups",
    responses((status = 204, description = "Done; no body"), (status = 404, body = ErrorBody, description = "Not found; the error names what"), (status = 409, body = ErrorBody, description = "Conflict with the current state")))]
pub async fn delete_group(State(console): State<Console>, Path(group_id): Path<String>) -> ApiResult<StatusCode> {
    console
        .broker
        .groups()
        .delete(&group_id)
        .await
        .map_err(|e| ApiError::from(WireError::from(e)).with_field("group_id"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves a group's committed offsets of one topic to the earliest, the latest, a time or
/// given offsets; only while the group has no members. `dry_run` says what would change.
#[utoipa::path(post, path = "/api/v1/groups/{group_id}/reset-offsets", params(("group_id" = String, Path)),
    request_body = ResetOffsets, tag = "groups",
    responses((status = 200, body = ResetPlan, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 404, body = ErrorBody, description = "Not found; the error names what"),
    (status = 409, body = ErrorBody, description = "Conflict with the current state"), (status = 416, body = ErrorBody, description = "Offset out of range")))]
pub async fn reset_offsets(
    State(console): State<Console>,
    Path(group_id): Path<String>,
    reset: Result<Json<ResetOffsets>, JsonRejection>,
) -> ApiResult<Json<ResetPlan>> {
    let Json(reset) = body(reset)?;
    if group_id.is_empty() {
        return Err(ApiError::field("group_id", "a group id is not empty"));
    }
    if let Some(d) = console.broker.groups().describe(&group_id) {
        if !d.members.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "non_empty_group",
                format!(
                    "group {group_id:?} has {} active members; offsets can be reset only while it has none (stop its consumers first)",
                    d.members.len()
                ),
            )
            .with_field("group_id"));
        }
    }
    let info = console.broker.describe_topic(&reset.topic).map_err(|e| ApiError::from(e).with_field("topic"))?;
    let partitions: Vec<u32> = match (&reset.partitions, reset.to.as_str()) {
        (Some(ps), _) => ps.clone(),
        (None, "offset") => reset.offsets.keys().copied().collect(),
        (None, _) => info.partitions.iter().map(|p| p.partition).collect(),
    };
    if partitions.is_empty() {
        return Err(ApiError::field("partitions", "no partitions to reset"));
    }
    if partitions.len() > RESET_PARTITIONS_MAX {
        return Err(ApiError::field("partitions", format!("a reset names at most {RESET_PARTITIONS_MAX} partitions")));
    }
    let spec = match (reset.to.as_str(), reset.timestamp) {
        ("earliest", _) => Some(OffsetSpec::Earliest),
        ("latest", _) => Some(OffsetSpec::Latest),
        ("timestamp", Some(t)) => Some(OffsetSpec::Timestamp(t)),
        ("timestamp", None) => return Err(ApiError::field("timestamp", "to=timestamp needs a timestamp (ms)")),
        ("offset", _) => None,
        (other, _) => {
            return Err(ApiError::field(
                "to",
                format!("to must be earliest, latest, timestamp or offset, not {other:?}"),
            ))
        }
    };
    let before: BTreeMap<u32, i64> = console
        .broker
        .groups()
        .committed(&group_id, Some(&partitions.iter().map(|p| (reset.topic.clone(), *p)).collect::<Vec<_>>()))
        .into_iter()
        .filter_map(|(_, p, c)| Some((p, c?.offset)))
        .collect();
    let mut planned = Vec::with_capacity(partitions.len());
    for p in &partitions {
        let Some(part) = info.partitions.iter().find(|i| i.partition == *p) else {
            return Err(ApiError::not_found(
                "unknown_partition",
                "partitions",
                format!("topic {:?} has no partition {p}", reset.topic),
            ));
        };
        let to = match spec {
            None => {
                let o = *reset.offsets.get(p).ok_or_else(|| {
                    ApiError::field("offsets", format!("to=offset needs an offset for partition {p}"))
                })?;
                if o < part.log_start_offset || o > part.high_watermark {
                    return Err(ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "offset_out_of_range",
                        format!(
                            "offset {o} for partition {p} is outside its records, {} to {}",
                            part.log_start_offset, part.high_watermark
                        ),
                    )
                    .with_field("offsets"));
                }
                o
            }
            Some(spec) => {
                let listed = console.broker.list_offsets(&reset.topic, &[(*p, spec)])?;
                match listed.into_iter().next().map(|l| l.found) {
                    Some(Ok((offset, _))) if offset >= 0 => offset,
                    // No record that late: the end.
                    Some(Ok(_)) | None => part.high_watermark,
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        };
        planned.push(ResetEntry { topic: reset.topic.clone(), partition: *p, from: before.get(p).copied(), to });
    }
    if !reset.dry_run {
        let now = weir_sdk::now_ms();
        let commits = planned
            .iter()
            .map(|e| {
                (e.topic.clone(), e.partition, CommittedOffset { offset: e.to, metadata: None, commit_time_ms: now })
            })
            .collect();
        console.broker.groups().commit(&group_id, -1, "", commits).await.map_err(|e| {
            let e = WireError::from(e);
            match e.code {
                ErrorCode::UnknownMemberId => ApiError::new(
                    StatusCode::CONFLICT,
                    "non_empty_group",
                    format!("group {group_id:?} got members while resetting; nothing was changed"),
                ),
                _ => ApiError::from(e),
            }
        })?;
    }
    Ok(Json(ResetPlan { dry_run: reset.dry_run, offsets: planned }))
}
