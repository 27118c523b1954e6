//! `/api/v1/topics`: list, create, describe, change configs, delete, purge.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_broker::service::{ConfigChange, NewTopic, TopicInfo};
use weir_sdk::ErrorCode;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::rates::Rate;
use crate::{body, query, Console};

#[derive(Debug, Serialize, ToSchema)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Bytes this broker holds for the topic.
    pub size_bytes: u64,
    /// Records between each partition's log start and high watermark, summed.
    pub records: i64,
    /// Records produced per second, averaged over the last few seconds.
    pub produce_records_per_sec: f64,
    pub produce_bytes_per_sec: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopicList {
    /// The topics on this page, sorted as asked.
    pub topics: Vec<TopicSummary>,
    /// Topics matching the search, on every page.
    pub total: usize,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopicListQuery {
    /// Only topics whose name contains this.
    pub search: Option<String>,
    /// `name` (the default), `partitions`, `size_bytes` or `records`.
    pub sort: Option<String>,
    /// Largest first.
    pub desc: Option<bool>,
    /// Topics skipped (paging).
    pub offset: Option<usize>,
    /// Topics on this page: 1 to 1000, 100 by default.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionView {
    pub partition: u32,
    /// The leading broker; absent while none leads.
    pub leader: Option<u64>,
    pub replicas: Vec<u64>,
    pub isr: Vec<u64>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    pub name: String,
    pub value: String,
    pub is_default: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopicDetail {
    pub name: String,
    pub partitions: Vec<PartitionView>,
    pub configs: Vec<ConfigView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    pub name: String,
    /// The broker's `default_partitions` when absent.
    pub partitions: Option<u32>,
    /// 1 when absent; at most the live brokers.
    pub replication_factor: Option<u32>,
    /// Topic configs by their Kafka names (`retention.ms`, `max.message.bytes`, ...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlterConfigs {
    /// Configs to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Configs to return to their defaults.
    #[serde(default)]
    pub reset: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteTopicQuery {
    /// The topic's name again: a delete without it is refused.
    pub confirm: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    pub partition: u32,
    /// Records before this offset are deleted; -1 deletes up to the high watermark.
    pub offset: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    pub partition: u32,
    /// The partition's log start offset after the purge.
    pub log_start_offset: i64,
}

/// Most topics on one page.
const PAGE_MAX: usize = 1000;

fn detail(info: TopicInfo, configs: Vec<ConfigView>) -> TopicDetail {
    TopicDetail {
        name: info.name,
        partitions: info
            .partitions
            .into_iter()
            .map(|p| PartitionView {
                partition: p.partition,
                leader: p.leader,
                replicas: p.replicas,
                isr: p.isr,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
            })
            .collect(),
        configs,
    }
}

fn summary(rates: &BTreeMap<String, Rate>, info: &TopicInfo) -> TopicSummary {
    let rate = rates.get(&info.name).copied().unwrap_or_default();
    TopicSummary {
        name: info.name.clone(),
        partitions: u32::try_from(info.partitions.len()).unwrap_or(u32::MAX),
        replication_factor: info.partitions.first().map_or(1, |p| u32::try_from(p.replicas.len()).unwrap_or(u32::MAX)),
        size_bytes: info.partitions.iter().map(|p| p.size_bytes).sum(),
        records: info.partitions.iter().map(|p| (p.high_watermark - p.log_start_offset).max(0)).sum(),
        produce_records_per_sec: rate.records_per_sec,
        produce_bytes_per_sec: rate.bytes_per_sec,
    }
}

/// Lists topics, searched, sorted and paged.
#[utoipa::path(get, path = "/api/v1/topics", params(TopicListQuery), tag = "topics",
    responses((status = 200, body = TopicList, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field")))]
pub async fn list_topics(
    State(console): State<Console>,
    q: Result<Query<TopicListQuery>, QueryRejection>,
) -> ApiResult<Json<TopicList>> {
    let Query(q) = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::field("limit", format!("limit must be 1 to {PAGE_MAX}, not {limit}")));
    }
    let search = q.search.unwrap_or_default();
    let rates = console.rates.current(console.broker.traffic());
    let mut topics: Vec<TopicSummary> = console
        .broker
        .list_topics()
        .into_iter()
        .filter(|name| name.contains(&search))
        .filter_map(|name| console.broker.describe_topic(&name).ok())
        .map(|info| summary(&rates, &info))
        .collect();
    match q.sort.as_deref().unwrap_or("name") {
        "name" => topics.sort_by(|a, b| a.name.cmp(&b.name)),
        "partitions" => topics.sort_by_key(|t| t.partitions),
        "size_bytes" => topics.sort_by_key(|t| t.size_bytes),
        "records" => topics.sort_by_key(|t| t.records),
        other => {
            return Err(ApiError::field(
                "sort",
                format!("sort must be name, partitions, size_bytes or records, not {other:?}"),
            ))
        }
    }
    if q.desc.unwrap_or(false) {
        topics.reverse();
    }
    let total = topics.len();
    let topics = topics.into_iter().skip(q.offset.unwrap_or(0)).take(limit).collect();
    Ok(Json(TopicList { topics, total }))
}

/// Creates a topic.
#[utoipa::path(post, path = "/api/v1/topics", request_body = CreateTopic, tag = "topics",
    responses((status = 201, body = TopicDetail, description = "Created"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 409, body = ErrorBody, description = "Conflict with the current state")))]
pub async fn create_topic(
    State(console): State<Console>,
    new: Result<Json<CreateTopic>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TopicDetail>)> {
    let Json(new) = body(new)?;
    if new.partitions == Some(0) {
        return Err(ApiError::field("partitions", "partitions must be at least 1"));
    }
    let request = NewTopic {
        name: new.name.clone(),
        partitions: new.partitions,
        replication_factor: new.replication_factor,
        config: new.configs.into_iter().collect(),
        validate_only: false,
    };
    console.broker.create_topic_as_asked(request).await.map_err(|e| {
        let field = match e.code {
            ErrorCode::InvalidConfig => "configs",
            ErrorCode::InvalidPartitions => "partitions",
            ErrorCode::InvalidReplicationFactor => "replication_factor",
            _ => "name",
        };
        ApiError::from(e).with_field(field)
    })?;
    Ok((StatusCode::CREATED, Json(describe(&console, &new.name)?)))
}

fn describe(console: &Console, name: &str) -> ApiResult<TopicDetail> {
    let info = console.broker.describe_topic(name).map_err(|e| ApiError::from(e).with_field("name"))?;
    let configs = console
        .broker
        .topic_configs(name)?
        .into_iter()
        .map(|c| ConfigView { name: c.name, value: c.value, is_default: c.is_default })
        .collect();
    Ok(detail(info, configs))
}

/// A topic's partitions (offsets, sizes, replicas) and configs.
#[utoipa::path(get, path = "/api/v1/topics/{name}", params(("name" = String, Path)), tag = "topics",
    responses((status = 200, body = TopicDetail, description = "OK"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn get_topic(State(console): State<Console>, Path(name): Path<String>) -> ApiResult<Json<TopicDetail>> {
    Ok(Json(describe(&console, &name)?))
}

/// Deletes a topic; `confirm` must repeat its name.
#[utoipa::path(delete, path = "/api/v1/topics/{name}", params(("name" = String, Path), DeleteTopicQuery), tag = "topics",
    responses((status = 204, description = "Done; no body"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn delete_topic(
    State(console): State<Console>,
    Path(name): Path<String>,
    q: Result<Query<DeleteTopicQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = query(q)?;
    if q.confirm.as_deref() != Some(name.as_str()) {
        return Err(ApiError::field(
            "confirm",
            format!("confirm must repeat the topic's name, {name:?}, to delete it"),
        ));
    }
    console.broker.delete_topic(&name).await.map_err(|e| ApiError::from(e).with_field("name"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets some configs and returns others to their defaults; the rest keep their values.
#[utoipa::path(patch, path = "/api/v1/topics/{name}/configs", params(("name" = String, Path)), request_body = AlterConfigs,
    tag = "topics", responses((status = 200, body = TopicDetail, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 404, body = ErrorBody, description = "Not found; the error names what")))]
pub async fn alter_configs(
    State(console): State<Console>,
    Path(name): Path<String>,
    change: Result<Json<AlterConfigs>, JsonRejection>,
) -> ApiResult<Json<TopicDetail>> {
    let Json(change) = body(change)?;
    let mut changes: Vec<(String, ConfigChange)> =
        change.set.into_iter().map(|(k, v)| (k, ConfigChange::Set(v))).collect();
    changes.extend(change.reset.into_iter().map(|k| (k, ConfigChange::Delete)));
    if changes.is_empty() {
        return Err(ApiError::field("set", "nothing to change: give configs to set or reset"));
    }
    console.broker.alter_topic_config(&name, changes, false).await.map_err(|e| match e.code {
        ErrorCode::UnknownTopic => ApiError::from(e).with_field("name"),
        _ => ApiError::from(e).with_field("set"),
    })?;
    Ok(Json(describe(&console, &name)?))
}

/// Deletes a partition's records before an offset (Kafka's DeleteRecords).
#[utoipa::path(post, path = "/api/v1/topics/{name}/purge", params(("name" = String, Path)), request_body = Purge,
    tag = "topics", responses((status = 200, body = Purged, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"), (status = 404, body = ErrorBody, description = "Not found; the error names what"), (status = 416, body = ErrorBody, description = "Offset out of range")))]
pub async fn purge(
    State(console): State<Console>,
    Path(name): Path<String>,
    purge: Result<Json<Purge>, JsonRejection>,
) -> ApiResult<Json<Purged>> {
    let Json(purge) = body(purge)?;
    let partition = i32::try_from(purge.partition)
        .map_err(|_| ApiError::field("partition", format!("no partition {}", purge.partition)))?;
    let start = console.broker.delete_records(&name, partition, purge.offset).await.map_err(|e| {
        let field = match e.code {
            ErrorCode::UnknownTopic => "name",
            ErrorCode::UnknownPartition => "partition",
            _ => "offset",
        };
        ApiError::from(e).with_field(field)
    })?;
    Ok(Json(Purged { partition: purge.partition, log_start_offset: start }))
}
