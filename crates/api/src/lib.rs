//! voxgate's HTTP API under `/api`. It sees the store and the domain types, never
//! audio. The binary mounts [`router`] beside the UI and the agent.
//!
//! # Layout
//! - [`state`]: what the handlers share; [`ApiConfig`].
//! - [`error`]: the one error shape, and extractors whose rejections use it.
//! - [`auth`]: keys, Supabase user tokens, the auth middleware.
//! - [`ratelimit`]: per-caller and per-address limits by route group.
//! - [`cors`][]: `ALLOWED_ORIGINS`.
//! - [`metrics`]: `/api/metrics` and the HTTP metrics middleware.
//! - [`ops`], [`assistants`], [`calls`], [`keys`], [`files`], [`webhooks`]: one module per resource.
//! - [`control`]: `POST /api/calls/{id}/control`, handed to live calls through [`control::CallControl`].
//!
//! Each request passes, outermost first: error normalization, CORS, HTTP metrics,
//! the per-address limit, authentication, the per-caller limit, the timeout and
//! the body limit, then the handler.

pub mod assistants;
pub mod auth;
pub mod calls;
pub mod control;
pub mod cors;
pub mod error;
pub mod files;
pub mod keys;
pub mod metrics;
pub mod openapi_doc;
pub mod ops;
pub mod providers;
pub mod ratelimit;
pub mod state;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use state::{ApiConfig, ApiState, Lifecycle};

#[derive(OpenApi)]
#[openapi(
    info(title = "voxgate", description = "Self-hostable voice AI agents: the HTTP API. Errors are `{\"error\":{\"code\",\"message\"}}`."),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody, voxgate_domain::ErrorCode))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// Which routes to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// Everything under `/api`.
    Full,
    /// Only health, readiness and metrics (for an agent-only instance).
    OpsOnly,
}

fn routes(mount: Mount) -> OpenApiRouter<ApiState> {
    let ops = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(metrics::metrics));
    if mount == Mount::OpsOnly {
        return ops;
    }
    ops.routes(routes!(assistants::list, assistants::create))
        .routes(routes!(assistants::get, assistants::update, assistants::delete))
        .routes(routes!(calls::list, calls::create))
        .routes(routes!(calls::get))
        .routes(routes!(calls::recording))
        .routes(routes!(control::control))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::login))
        .routes(routes!(keys::me))
        .routes(routes!(providers::providers))
        .routes(routes!(files::list, files::upload))
        .routes(routes!(files::get, files::delete))
        .routes(routes!(webhooks::list))
        .routes(routes!(webhooks::get))
        .routes(routes!(webhooks::retry))
}

/// The OpenAPI document of every route, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes(Mount::Full).route("/api/openapi.json", axum::routing::get(|| async {})).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    openapi_doc::add_layer_errors(&mut doc);
    openapi_doc::merge_flattened_objects(&mut doc);
    openapi_doc::close_tagged_variants(&mut doc, &["ControlMessage"]);
    openapi_doc::forbid_nul_in_queries(&mut doc);
    doc
}

async fn no_such_route() -> axum::response::Response {
    ApiError::new(voxgate_domain::ErrorCode::NotFound, "no such route").into_response()
}

/// How much of a refused body is read and thrown away after its 413, and for how long.
const REFUSED_DRAIN_MAX: u64 = 64 * 1024 * 1024;
const REFUSED_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets the body limit of each request (uploads to `POST /api/files` get
/// `upload_limit`, everything else `body_limit`), and refuses a body whose declared
/// `Content-Length` is over it at once. The body limit alone reads up to the limit
/// and then waits for bytes it would refuse anyway, so a lying length held the
/// request open until the timeout.
///
/// The refused body is then read and dropped behind the answer (up to
/// [`REFUSED_DRAIN_MAX`] bytes, for [`REFUSED_DRAIN_TIME`] at most): a client still
/// sending it (a browser uploading a file that is too big) reads its 413. Without
/// this the connection closed with the body unread, the client's next write met a
/// reset, and it saw a broken pipe instead of the answer.
///
/// A chunked body (no declared length) is refused only once the limit is read; its
/// reading goes through [`relay_body`], so what the handler leaves unread is drained
/// the same way.
async fn body_limits(body_limit: usize, upload_limit: usize, mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use tower::{Layer, ServiceExt};
    let limit = if ratelimit::is_upload(req.method(), req.uri().path()) { upload_limit } else { body_limit };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        if n <= REFUSED_DRAIN_MAX {
            tokio::spawn(drain(req.into_body(), n));
        }
        return ApiError::new(voxgate_domain::ErrorCode::PayloadTooLarge, "the body is larger than this endpoint accepts").into_response();
    }
    if declared.is_none() && req.headers().contains_key(axum::http::header::TRANSFER_ENCODING) {
        *req.body_mut() = relay_body(std::mem::take(req.body_mut()));
    }
    match DefaultBodyLimit::max(limit).layer(next).oneshot(req).await {
        Ok(res) => res.into_response(),
        Err(never) => match never {},
    }
}

/// Reads and drops a refused body of `declared` bytes, for [`REFUSED_DRAIN_TIME`] at most.
async fn drain(body: axum::body::Body, declared: u64) {
    drain_stream(body.into_data_stream(), declared).await;
}

/// Reads and drops what is left of `chunks`, up to `max` bytes and for
/// [`REFUSED_DRAIN_TIME`] at most.
async fn drain_stream(mut chunks: axum::body::BodyDataStream, max: u64) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(REFUSED_DRAIN_TIME, async {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = chunks.next().await {
            read += chunk.len() as u64;
            if read >= max {
                break;
            }
        }
    })
    .await;
}

/// A body of unknown length, read by a task of its own and handed on through a small
/// channel: when the handler lets go of it before its end (a 413 once the limit is
/// read, a 408, an early error), the task reads the rest and drops it, for
/// [`REFUSED_DRAIN_TIME`] at most (see [`drain`]), so a client still sending reads its
/// answer instead of a reset, and a client that stalls is let go of then.
fn relay_body(body: axum::body::Body) -> axum::body::Body {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, axum::Error>>(2);
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        loop {
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                // The handler let go while the client sends nothing.
                () = tx.closed() => break,
            };
            let Some(chunk) = chunk else { return };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() {
                break;
            }
            if failed {
                return;
            }
        }
        drain_stream(chunks, REFUSED_DRAIN_MAX).await;
    });
    axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }))
}

/// The `/api` router, with its state and every layer applied.
pub fn router(state: ApiState, mount: Mount) -> Router {
    let doc = serde_json::to_string(&openapi()).expect("the OpenAPI document serializes");
    let (router, _) = routes(mount).split_for_parts();
    let router = if mount == Mount::Full {
        router.route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
    } else {
        router
    };
    let cfg = state.config.clone();
    let (body_limit, upload_limit) = (cfg.body_limit, cfg.upload_limit);
    router
        // Not a fallback: the binary merges this router with the UI's, which owns `/`.
        .route("/api/{*rest}", axum::routing::any(no_such_route))
        // `{*rest}` needs a segment: `/api` and `/api/` are ours too (JSON 404s).
        .route("/api", axum::routing::any(no_such_route))
        .route("/api/", axum::routing::any(no_such_route))
        .layer(axum::middleware::from_fn(move |req, next| body_limits(body_limit, upload_limit, req, next)))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, cfg.request_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::limit_by_caller))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::limit_by_ip))
        .layer(axum::middleware::from_fn(metrics::track_http))
        .layer(cfg.allowed_origins.layer())
        .layer(axum::middleware::from_fn(error::normalize_errors))
        .with_state(state)
}
