//! The web UI, embedded in the binary: static files at `/`, `index.html` for any
//! other path without a file extension (the app routes on the client), long cache
//! lifetimes for hashed assets, and `/config.json` so one build runs on any domain.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use serde::Serialize;

#[derive(RustEmbed)]
#[folder = "$VOXGATE_UI_DIR"]
struct Assets;

/// What the web app reads at start: where the API and the agent are.
#[derive(Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UiConfig {
    /// The API base, e.g. `/api` or `https://api.example.com/api`.
    pub api_base: String,
    /// The agent's WebSocket URL; empty means "same host as the page, `/agent`",
    /// with `wss://` when the page is on https.
    pub agent_url: String,
    pub supabase_url: Option<String>,
    pub supabase_anon_key: Option<String>,
    /// A folder to serve the app from instead of the embedded copy.
    #[serde(skip)]
    pub dir: Option<std::path::PathBuf>,
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
    media-src 'self' blob:; connect-src 'self' ws: wss: https:; worker-src 'self' blob:; frame-ancestors 'none'; \
    base-uri 'none'; object-src 'none'; form-action 'self'";

/// The UI routes.
pub fn router(config: UiConfig) -> Router {
    Router::new()
        .route("/config.json", get(config_json).fallback(method_not_allowed))
        .fallback(get(asset).fallback(method_not_allowed))
        .with_state(config)
}

/// The UI is read-only: other methods get the API's error shape, not an empty 405.
async fn method_not_allowed() -> Response {
    let mut res = voxgate_api::ApiError::new(voxgate_domain::ErrorCode::MethodNotAllowed, "the web app is read-only: use GET")
        .into_response();
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}

async fn config_json(State(cfg): State<UiConfig>) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(cfg)).into_response()
}

async fn asset(State(cfg): State<UiConfig>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    // rust-embed looks names up in a map of the embedded files; `..` or an encoded
    // slash can only miss, never reach the disk. Refuse them plainly anyway.
    if path.split('/').any(|seg| seg == ".." || seg.contains('\\') || seg.contains('%')) {
        return not_found();
    }
    let path = if path.is_empty() { "index.html" } else { path };
    if let Some(data) = load(cfg.dir.as_deref(), path).await {
        return file_response(path, data);
    }
    let last = path.rsplit('/').next().unwrap_or(path);
    // The API's and the agent's paths are never pages: a UI-only instance answers
    // them 404, so a misrouted proxy shows up as an error, not as the app.
    if last.contains('.') || path.starts_with("api/") || path == "api" || path == "agent" || path.starts_with("agent/") {
        return not_found();
    }
    match load(cfg.dir.as_deref(), "index.html").await {
        Some(index) => file_response("index.html", index),
        None => not_found(),
    }
}

/// A file of the app: from the folder when one is set (the path was checked for
/// `..` above, and symlinks out of the folder are refused), else embedded.
async fn load(dir: Option<&std::path::Path>, path: &str) -> Option<std::borrow::Cow<'static, [u8]>> {
    let Some(dir) = dir else { return Assets::get(path).map(|f| f.data) };
    let root = tokio::fs::canonicalize(dir).await.ok()?;
    let file = tokio::fs::canonicalize(root.join(path)).await.ok()?;
    if !file.starts_with(&root) || !tokio::fs::metadata(&file).await.ok()?.is_file() {
        return None;
    }
    tokio::fs::read(file).await.ok().map(std::borrow::Cow::Owned)
}

fn file_response(path: &str, data: std::borrow::Cow<'static, [u8]>) -> Response {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let cache = if path.starts_with("assets/") {
        // Vite names assets by content hash: they never change under one name.
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut res = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_str(mime.as_ref()).unwrap_or(HeaderValue::from_static("application/octet-stream"))),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        axum::body::Body::from(data),
    )
        .into_response();
    if path.ends_with(".html") {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    res
}

fn not_found() -> Response {
    voxgate_api::ApiError::not_found("file").into_response()
}
