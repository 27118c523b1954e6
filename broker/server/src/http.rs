//! The schema registry's HTTP listener: hyper's HTTP/1.1 under the limits every listener of
//! the broker has. A client must send a request's headers within `http_header_timeout_ms`
//! (an idle keep-alive connection too, so a slowloris client cannot hold a connection), and a
//! whole request, body included, is answered within `http_request_timeout_ms` (408 past it).
//! Connections count against `connections_max` and, with the QUIC and Kafka listeners',
//! against `connections_per_address_max`. Bodies are read within the registry's own 4 MiB
//! limit, and headers within 64 KiB.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::budget::Budgets;

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connections_max: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

/// Most bytes of a request's start line and headers.
const HEADER_BYTES_MAX: usize = 64 * 1024;

/// Serves `app` until `shutdown` changes, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    budgets: Budgets,
    limits: HttpLimits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let request_timeout = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(move |request, next: axum::middleware::Next| async move {
        match tokio::time::timeout(request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => request_timed_out(request_timeout),
        }
    }));
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    let mut back_off = Duration::from_millis(10);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    back_off = Duration::from_millis(10);
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE) or another accept failure: back off.
                    tracing::warn!(error = %e, back_off_ms = back_off.as_millis(), "registry accept failed; backing off");
                    tokio::time::sleep(back_off).await;
                    back_off = (back_off * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = limits.connections_max, "refusing registry connection: connections_max reached");
            continue;
        };
        let budget = match budgets.connect(remote.ip()) {
            Ok(budget) => budget,
            Err(e) => {
                tracing::warn!(%remote, "refusing registry connection: {e}");
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let (_permit, _budget) = (permit, budget);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(HEADER_BYTES_MAX.max(8192));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%remote, error = %e, "registry connection ended");
                    }
                }
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// Confluent's error body for a request that took too long.
fn request_timed_out(limit: Duration) -> axum::response::Response {
    let body = serde_json::json!({
        "error_code": 408,
        "message": format!("The request was not received and answered within http_request_timeout_ms = {}", limit.as_millis()),
    });
    (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [(axum::http::header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json")],
        body.to_string(),
    )
        .into_response()
}

use axum::response::IntoResponse;
