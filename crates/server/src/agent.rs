//! The `/agent` WebSocket: where a call lives. This is the placeholder the voice
//! pipeline plugs into: it admits or refuses the upgrade (draining, rate limits,
//! `Origin`, key, assistant), keeps the call's record from start to end, answers
//! the control messages, and closes with a code and a reason on bad input and on
//! shutdown (1012, so clients reconnect elsewhere).
//!
//! Wire protocol (version `voxgate.v1`): JSON text messages with a `type` both ways;
//! binary messages are PCM16 little-endian mono audio.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tokio_util::task::TaskTracker;
use voxgate_api::auth::{Principal, bearer};
use voxgate_api::cors::same_origin;
use voxgate_api::ratelimit::{Group, client_ip};
use voxgate_api::{ApiError, ApiState};
use voxgate_domain::ErrorCode;
use voxgate_domain::call::{Call, CallStatus};
use voxgate_domain::clock::{is_id, new_id, now_ms};
use voxgate_domain::key::KeyKind;

/// What the agent shares between calls.
#[derive(Clone)]
pub struct AgentState {
    pub api: ApiState,
    /// This instance's name, written on each call it holds.
    pub instance: String,
    /// Cancelled when the drain deadline passes: every call closes with 1012.
    pub hard_stop: CancellationToken,
    /// Every live call's task, so a drain can wait for them.
    pub calls: TaskTracker,
    pub max_message: usize,
}

/// The `/agent` route.
pub fn router(state: AgentState) -> Router {
    Router::new()
        .route(
            "/agent",
            get(upgrade).fallback(|| async {
                let mut res = ApiError::new(ErrorCode::MethodNotAllowed, "/agent takes a WebSocket upgrade (GET)").into_response();
                res.headers_mut().insert(header::ALLOW, axum::http::HeaderValue::from_static("GET"));
                res
            }),
        )
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentQuery {
    assistant_id: Option<String>,
    /// Browsers cannot set headers on a WebSocket: a public key may come here.
    key: Option<String>,
}

async fn upgrade(
    State(s): State<AgentState>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    query: Result<Query<AgentQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match admit(&s, ws, query, Some(peer), &headers).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn admit(
    s: &AgentState,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    query: Result<Query<AgentQuery>, axum::extract::rejection::QueryRejection>,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if s.api.lifecycle.is_draining() {
        return Err(ApiError::new(ErrorCode::Unavailable, "this instance is draining; connect again").with_retry_after(1));
    }
    let ip = client_ip(headers, peer, s.api.config.trust_proxy);
    s.api.limiter.check_ip(Group::Calls, &ip)?;

    let origin = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("invalid"));
    if let Some(origin) = origin {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !(same_origin(origin, host) || s.api.config.allowed_origins.allows(origin)) {
            return Err(ApiError::forbidden("this origin may not open calls (see ALLOWED_ORIGINS)"));
        }
    }
    let ws = ws.map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {}", e.body_text())))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;

    let token = bearer(headers).map(str::to_owned).or(q.key).ok_or_else(|| {
        ApiError::unauthorized("send a key: `Authorization: Bearer <key>`, or `?key=` with a public key")
    })?;
    let principal = s.api.auth.authenticate(&token).await?;
    let assistant_id = q.assistant_id.ok_or_else(|| ApiError::bad_request("assistantId is required"))?;
    match &principal {
        Principal::Metrics => return Err(ApiError::forbidden("the metrics token cannot open calls")),
        Principal::Key(k) if k.kind == KeyKind::Public && !k.assistant_ids.contains(&assistant_id) => {
            return Err(ApiError::forbidden("this public key does not list that assistant"));
        }
        // Public keys are for browsers, which always send Origin (checked above).
        Principal::Key(k) if k.kind == KeyKind::Public && origin.is_none() => {
            return Err(ApiError::forbidden("a public key opens calls from a browser page on an allowed origin"));
        }
        _ => {}
    }
    if !is_id(&assistant_id) {
        return Err(ApiError::not_found("assistant"));
    }
    let assistant = s.api.store.get_assistant(&assistant_id).await.map_err(|e| match e {
        voxgate_store::StoreError::NotFound => ApiError::not_found("assistant"),
        other => other.into(),
    })?;
    s.api.limiter.check_caller(Group::Calls, &principal)?;

    let call = Call {
        id: new_id(),
        assistant_id: assistant.id,
        key_id: principal.key_id().map(str::to_owned),
        status: CallStatus::InProgress,
        ended_reason: None,
        started_at: now_ms(),
        ended_at: None,
        duration_ms: None,
        instance: Some(s.instance.clone()),
        metadata: Default::default(),
        turns: None,
    };
    // Recorded before the upgrade, so a call that the client sees always has a record.
    s.api.store.create_call(&call).await?;
    let session = s.clone();
    Ok(ws
        .max_message_size(s.max_message)
        .max_frame_size(s.max_message)
        .on_failed_upgrade({
            let store = s.api.store.clone();
            let id = call.id.clone();
            move |e| {
                tracing::warn!(error = %e, "websocket upgrade failed");
                tokio::spawn(async move {
                    let _ = store.end_call(&id, "upgrade-failed").await;
                });
            }
        })
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("call", call_id = %call.id, assistant_id = %call.assistant_id);
            let tracker = session.calls.clone();
            tracker.track_future(run_call(socket, call, session).instrument(span))
        }))
}

/// Messages a client may send.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum ClientMessage {
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// The caller hangs up.
    End,
}

/// Why a call ended, and how to close the socket.
struct Ending {
    reason: &'static str,
    close: Option<(u16, String)>,
}

async fn run_call(mut socket: WebSocket, call: Call, s: AgentState) {
    let _live = LiveGauge::new();
    tracing::info!("call started");
    let hello = serde_json::json!({
        "type": "call-started",
        "protocol": "voxgate.v1",
        "callId": call.id,
        "assistantId": call.assistant_id,
        "sampleRate": 16000,
    });
    let ending = if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        Ending { reason: "connection-lost", close: None }
    } else {
        converse(&mut socket, &s).await
    };
    if let Some((code, reason)) = &ending.close {
        let frame = CloseFrame { code: *code, reason: reason.clone().into() };
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(Message::Close(Some(frame)))).await;
    }
    // The record must end even if the database hiccups: retry briefly.
    for attempt in 0..5 {
        match s.api.store.end_call(&call.id, ending.reason).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, attempt, "could not end the call record");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    tracing::info!(reason = ending.reason, "call ended");
}

async fn converse(socket: &mut WebSocket, s: &AgentState) -> Ending {
    loop {
        let msg = tokio::select! {
            _ = s.hard_stop.cancelled() => {
                return Ending { reason: "server-shutdown", close: Some((close_code::RESTART, "server restarting; reconnect".into())) };
            }
            msg = socket.recv() => msg,
        };
        let msg = match msg {
            None => return Ending { reason: "connection-lost", close: None },
            Some(Err(e)) => {
                tracing::info!(error = %e, "websocket error");
                return read_error(&e, s.max_message);
            }
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                Ok(ClientMessage::Ping { id }) => {
                    let pong = serde_json::json!({ "type": "pong", "id": id });
                    if socket.send(Message::Text(pong.to_string().into())).await.is_err() {
                        return Ending { reason: "connection-lost", close: None };
                    }
                }
                Ok(ClientMessage::End) => {
                    return Ending { reason: "customer-ended-call", close: Some((close_code::NORMAL, "call ended".into())) };
                }
                Err(e) => {
                    let mut why = format!("bad message: {e}");
                    why.truncate(120); // a close reason must fit in 123 bytes
                    while !why.is_char_boundary(why.len()) {
                        why.pop();
                    }
                    return Ending { reason: "protocol-error", close: Some((close_code::INVALID, why)) };
                }
            },
            Message::Binary(audio) => {
                if audio.len() % 2 != 0 {
                    return Ending {
                        reason: "protocol-error",
                        close: Some((close_code::INVALID, "audio must be PCM16: an even number of bytes".into())),
                    };
                }
                // The pipeline consumes audio here once it lands.
            }
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return Ending { reason: "customer-ended-call", close: None },
        }
    }
}

/// Why reading failed. A client that vanished (TCP closed or reset without a
/// closing handshake) lost its connection; anything else is bad input. axum hides
/// tungstenite's error type, so this reads the I/O cause and the message.
fn read_error(e: &axum::Error, max_message: usize) -> Ending {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some() {
            return Ending { reason: "connection-lost", close: None };
        }
        cause = c.source();
    }
    let text = e.to_string();
    if ["without closing handshake", "Connection closed normally", "closed connection"].iter().any(|t| text.contains(t)) {
        return Ending { reason: "connection-lost", close: None };
    }
    let close = if text.contains("Space limit exceeded") || text.contains("too long") {
        (close_code::SIZE, format!("message too large (max {max_message} bytes)"))
    } else if text.contains("UTF-8") {
        (close_code::INVALID, "text must be UTF-8".into())
    } else {
        (close_code::PROTOCOL, "malformed WebSocket frame".into())
    };
    Ending { reason: "protocol-error", close: Some(close) }
}

/// Counts live WebSocket calls while alive.
struct LiveGauge;

impl LiveGauge {
    fn new() -> LiveGauge {
        metrics::gauge!("voxgate_websocket_connections").increment(1.0);
        LiveGauge
    }
}

impl Drop for LiveGauge {
    fn drop(&mut self) {
        metrics::gauge!("voxgate_websocket_connections").decrement(1.0);
    }
}
