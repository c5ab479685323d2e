//! `/api/metrics` in Prometheus text format. Counters and histograms are recorded
//! where things happen (the `metrics` facade); gauges that are cheaper to read than
//! to track (pool sizes, memory) are read at scrape time.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::ApiState;

/// Latency buckets in seconds: fine below 100 ms, where HTTP and voice stages live,
/// with one at 20 ms, the frame and the platform's own latency budget.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); then our
            // handle renders only what we record through it, which is still correct
            // for the scrape but empty. Say so rather than panic.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /api/metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Middleware: counts requests by method, route template and status, and times them.
pub async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    // A fixed set: any token is a valid HTTP method, and each new label value would
    // be a new series kept forever.
    let method: &'static str = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method.to_owned()), ("route", route), ("status", status)];
    metrics::counter!("voxgate_http_requests_total", &labels).increment(1);
    metrics::histogram!("voxgate_http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    res
}

/// Resident memory of this process in bytes, from `/proc/self/status`.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `GET /api/metrics`: everything, in Prometheus text format.
#[utoipa::path(
    get,
    path = "/api/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(("bearer" = []))
)]
pub async fn metrics(State(state): State<ApiState>, Caller(p): Caller) -> Result<Response, ApiError> {
    if !(p.is_admin() || matches!(p, crate::auth::Principal::Metrics)) {
        return Err(ApiError::forbidden("metrics need a private key or METRICS_TOKEN"));
    }
    for (pool, s) in state.store.pool_stats() {
        metrics::gauge!("voxgate_db_pool_connections", "pool" => pool, "state" => "open").set(s.size as f64);
        metrics::gauge!("voxgate_db_pool_connections", "pool" => pool, "state" => "idle").set(s.idle as f64);
        metrics::gauge!("voxgate_db_pool_connections", "pool" => pool, "state" => "in_use").set(s.size.saturating_sub(s.idle) as f64);
        metrics::gauge!("voxgate_db_pool_max_connections", "pool" => pool).set(s.max as f64);
    }
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
    // Every task of the runtime (calls, connections, workers): one that only grows
    // under a steady load is a leak.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        metrics::gauge!("voxgate_runtime_alive_tasks").set(rt.metrics().num_alive_tasks() as f64);
    }
    metrics::gauge!("voxgate_draining").set(if state.lifecycle.is_draining() { 1.0 } else { 0.0 });
    let body = state.metrics.render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}
