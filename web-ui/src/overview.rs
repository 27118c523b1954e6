//! `/api/v1/overview` (brokers, controller, topic and partition counts, partitions under
//! replicated or offline, bytes held, rates) and `/api/v1/events`, the same figures pushed
//! every second as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weir_sdk::wire::ClusterStatusResponse;

use axum::http::StatusCode;

use crate::error::{ApiError, ApiResult};
use crate::rates::Rate;
use crate::{Console, EVENT_STREAMS_MAX};

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub node_id: u64,
    /// Controller leader, term, voters, registered brokers, offline and under-replicated
    /// partitions (Weir's cluster status).
    #[schema(value_type = Object)]
    pub cluster: ClusterStatusResponse,
    pub topics: usize,
    pub partitions: u64,
    /// Bytes of log this broker holds, every partition.
    pub log_bytes: u64,
    /// Produce and fetch rates over the last few seconds, every topic together.
    pub rate: Rate,
}

pub fn overview(console: &Console) -> Overview {
    let topics = console.broker.topics();
    let partitions = topics.iter().map(|t| u64::from(t.partitions)).sum();
    let log_bytes = topics
        .iter()
        .filter_map(|t| console.broker.describe_topic(&t.name).ok())
        .flat_map(|i| i.partitions.into_iter().map(|p| p.size_bytes))
        .sum();
    let rate = console.rates.current(console.broker.traffic()).values().fold(Rate::default(), |sum, r| Rate {
        records_per_sec: sum.records_per_sec + r.records_per_sec,
        bytes_per_sec: sum.bytes_per_sec + r.bytes_per_sec,
        fetch_bytes_per_sec: sum.fetch_bytes_per_sec + r.fetch_bytes_per_sec,
    });
    Overview {
        node_id: console.broker.node_id(),
        cluster: console.broker.cluster_status(),
        topics: topics.len(),
        partitions,
        log_bytes,
        rate,
    }
}

/// The broker at a glance.
#[utoipa::path(get, path = "/api/v1/overview", tag = "overview", responses((status = 200, body = Overview, description = "OK")))]
pub async fn get_overview(State(console): State<Console>) -> Json<Overview> {
    Json(overview(&console))
}

/// The overview, pushed every second as a server-sent event named `overview`. At most
/// `EVENT_STREAMS_MAX` streams are open at once (429 past it).
#[utoipa::path(get, path = "/api/v1/events", tag = "overview",
    responses((status = 200, description = "text/event-stream of `overview` events, one a second", content_type = "text/event-stream"),
    (status = 429, body = crate::error::ErrorBody, description = "Too many at once; try again")))]
pub async fn events(
    State(console): State<Console>,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>> {
    let permit = console.event_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "limit_reached",
            format!("{EVENT_STREAMS_MAX} event streams are open (EVENT_STREAMS_MAX); close one"),
        )
    })?;
    // The permit lives as long as the stream: it is released when the client goes.
    let stream = futures::stream::unfold((console, permit, true), |(console, permit, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let data = serde_json::to_string(&overview(&console)).unwrap_or_default();
        Some((Ok(Event::default().event("overview").data(data)), (console, permit, false)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
