//! Logs (tracing, text or JSON) and error tracking (Sentry). Secrets stay out of
//! both: request spans carry the method, the path without its query (where a
//! browser's key may ride) and the request id, never headers.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogArgs, LogFormat};

/// Installs the global subscriber. `RUST_LOG` wins over `--log-level` when set.
pub fn init_logs(args: &LogArgs) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match args.log_format {
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false)).try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
}

/// Starts Sentry when a DSN is given. The guard flushes on drop.
pub fn init_sentry(dsn: Option<&str>) -> anyhow::Result<Option<sentry::ClientInitGuard>> {
    let Some(dsn) = dsn.filter(|d| !d.is_empty()) else { return Ok(None) };
    let dsn: sentry::types::Dsn = dsn.parse().map_err(|e| anyhow::anyhow!("SENTRY_DSN is not a valid DSN: {e}"))?;
    // The transport builds its reqwest client now, and reqwest (without a provider of
    // its own) panics unless rustls has one; `main` starts Sentry before anything else.
    crate::init_crypto();
    let mut opts = sentry::ClientOptions::default();
    opts.dsn = Some(dsn);
    opts.release = Some(concat!("voxgate@", env!("CARGO_PKG_VERSION")).into());
    opts.send_default_pii = false;
    opts.attach_stacktrace = true;
    // Requests are never attached by us; drop any that an integration adds, since
    // headers and query strings may carry keys.
    opts.before_send = Some(Arc::new(|mut event| {
        event.request = None;
        Some(event)
    }));
    let guard = sentry::init(opts);
    Ok(Some(guard))
}

/// Middleware: reports every 5xx answer to Sentry (when it is on), with the route
/// and the request id, and nothing else of the request.
pub async fn report_server_errors(req: Request, next: Next) -> Response {
    if !sentry::Hub::current().client().is_some_and(|c| c.is_enabled()) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| req.uri().path().to_owned());
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let res = next.run(req).await;
    if res.status().is_server_error() {
        let status = res.status().as_u16();
        sentry::with_scope(
            |scope| {
                scope.set_tag("request_id", &request_id);
                scope.set_tag("route", &route);
                scope.set_tag("status", status);
            },
            || sentry::capture_message(&format!("{method} {route} answered {status}"), sentry::Level::Error),
        );
    }
    res
}

/// How often the runtime probe wakes.
pub const LAG_PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The runtime's scheduling delay, as `voxgate_runtime_lag_seconds`: a task sleeps
/// [`LAG_PROBE_EVERY`] over and over and records how late it woke. Every call's
/// paced audio waits on this runtime the same way, so this is the delay each reply
/// frame meets before it is written, measured on the server: it rises before the
/// frame jitter a caller hears does, and it tells an overloaded instance from a
/// slow network or client. Ends with `stop`.
pub async fn runtime_lag_probe(stop: tokio_util::sync::CancellationToken) {
    loop {
        let due = tokio::time::Instant::now() + LAG_PROBE_EVERY;
        tokio::select! {
            _ = stop.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        let late = tokio::time::Instant::now().saturating_duration_since(due);
        metrics::histogram!("voxgate_runtime_lag_seconds").record(late.as_secs_f64());
    }
}
