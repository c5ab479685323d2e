//! The `/agent` WebSocket: where a call lives. This module admits or refuses the
//! upgrade (draining, rate limits, `Origin`, key, assistant) and keeps the call's
//! record from start to end; the call itself runs in [`crate::session`]. The wire
//! protocol (`voxgate.v1`) is in `docs/agent-protocol.md`.
//!
//! `?call=<id>&resume=<token>` resumes a live call of this instance on a new
//! socket instead ([`resume`]): the token is the credential, and the socket is
//! handed to the call's session once its `start` is read.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
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
use voxgate_domain::call::Call;
use voxgate_domain::clock::is_id;
use voxgate_domain::key::KeyKind;
use voxgate_domain::Assistant;

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
    /// Most live calls on this instance; more are refused with 503 and
    /// `Retry-After` before the upgrade, so a proxy or client tries another.
    pub max_calls: usize,
    /// What each call's session needs (store, providers, the drain's hard stop).
    pub session: crate::session::SessionDeps,
    /// The live calls of this process (to resume and control them).
    pub registry: crate::session::registry::Registry,
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
    /// A single-use call token from `POST /api/calls` (the assistant comes with it).
    token: Option<String>,
    /// With `resume`: the live call to continue on this socket.
    call: Option<String>,
    /// The call's resume token (from `call-started` or the last `call-resumed`).
    resume: Option<String>,
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
        Err(e) => {
            let mut res = e.into_response();
            // As on /api: a 401 says how to authenticate.
            if res.status() == axum::http::StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
            }
            res
        }
    }
}

async fn admit(
    s: &AgentState,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    query: Result<Query<AgentQuery>, axum::extract::rejection::QueryRejection>,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if let Ok(Query(q)) = &query
        && (q.call.is_some() || q.resume.is_some())
    {
        return resume(s, ws, q, peer, headers);
    }
    // Counted as a live call from here, before the draining check: a drain that
    // starts while this call is being admitted must wait for it.
    let guard = s.calls.token();
    if s.api.lifecycle.is_draining() {
        metrics::counter!("voxgate_calls_refused_total", "reason" => "draining").increment(1);
        return Err(ApiError::new(ErrorCode::Unavailable, "this instance is draining; connect again").with_retry_after(1));
    }
    // The guard above counts this attempt: more than the limit means it is one too many.
    if s.max_calls > 0 && s.calls.len() > s.max_calls {
        metrics::counter!("voxgate_calls_refused_total", "reason" => "full").increment(1);
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("this instance holds its maximum of {} calls (MAX_CALLS); try again or another instance", s.max_calls),
        )
        .with_retry_after(1));
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

    let (key_id, assistant_id) = match q.token {
        Some(token) => {
            // A call token stands for the private key that minted it, for one call.
            if token.len() > 100 {
                return Err(ApiError::unauthorized("the call token is unknown, used or expired"));
            }
            let (assistant_id, key_id) = s
                .api
                .store
                .consume_call_token(&voxgate_domain::key::hash_secret(&token))
                .await?
                .ok_or_else(|| ApiError::unauthorized("the call token is unknown, used or expired"))?;
            if q.assistant_id.as_ref().is_some_and(|a| *a != assistant_id) {
                return Err(ApiError::forbidden("the call token is for another assistant"));
            }
            // Revoking a key revokes the call tokens it minted and has not used yet.
            if let Some(id) = &key_id {
                match s.api.store.get_key(id).await {
                    Ok(k) if k.revoked_at.is_none() => {}
                    Ok(_) | Err(voxgate_store::StoreError::NotFound) => {
                        return Err(ApiError::unauthorized("the key that minted this call token is revoked"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (key_id, assistant_id)
        }
        None => {
            let header_key = bearer(headers).map(str::to_owned);
            let in_url = header_key.is_none();
            let token = header_key.or(q.key).ok_or_else(|| {
                ApiError::unauthorized("send a key (`Authorization: Bearer <key>`, or `?key=` with a public key) or `?token=`")
            })?;
            let principal = s.api.auth.authenticate(&token).await?;
            // A URL reaches proxy logs and browser history: only a public key (made to
            // be seen) may ride in it. A private key or a user's token goes in the
            // header, or mints a one-call `?token=` (`POST /api/calls`).
            if in_url && !matches!(&principal, Principal::Key(k) if k.kind == KeyKind::Public) {
                return Err(ApiError::forbidden(
                    "only a public key may be sent as `?key=`: send this one as `Authorization: Bearer`, or open the call with a `?token=` from POST /api/calls",
                ));
            }
            let assistant_id = q.assistant_id.ok_or_else(|| ApiError::bad_request("assistantId is required"))?;
            match &principal {
                Principal::Metrics => return Err(ApiError::forbidden("the metrics token cannot open calls")),
                // Anyone may sign up to a Supabase project: only the users listed in
                // SUPABASE_ADMIN_USER_IDS or SUPABASE_ADMIN_EMAILS may use this server,
                // calls included.
                Principal::User { admin: false, .. } => {
                    return Err(ApiError::forbidden("this user may not open calls (see SUPABASE_ADMIN_USER_IDS and SUPABASE_ADMIN_EMAILS)"));
                }
                Principal::Key(k) if k.kind == KeyKind::Public && !k.assistant_ids.contains(&assistant_id) => {
                    return Err(ApiError::forbidden("this public key does not list that assistant"));
                }
                // Public keys are for browsers, which always send Origin (checked above).
                Principal::Key(k) if k.kind == KeyKind::Public && origin.is_none() => {
                    return Err(ApiError::forbidden("a public key opens calls from a browser page on an allowed origin"));
                }
                _ => {}
            }
            s.api.limiter.check_caller(Group::Calls, &principal)?;
            (principal.key_id().map(str::to_owned), assistant_id)
        }
    };
    if !is_id(&assistant_id) {
        return Err(ApiError::not_found("assistant"));
    }
    let assistant = s.api.store.get_assistant(&assistant_id).await.map_err(|e| match e {
        voxgate_store::StoreError::NotFound => ApiError::not_found("assistant"),
        other => other.into(),
    })?;

    let call = Call::start(assistant.id.clone(), key_id, s.instance.clone());
    // Written before the upgrade, so a call the client sees always has a record;
    // through the journal, so a burst of calls shares its commits.
    if !s.session.journal.create(call.clone(), CALL_CREATE_WRITE).await {
        // It may still be written later: end it, so it never shows as live.
        let journal = s.session.journal.clone();
        let id = call.id.clone();
        tokio::spawn(async move { journal.end(&id, "not-started", CALL_END_WRITE).await });
        return Err(ApiError::new(ErrorCode::Unavailable, "the database is unavailable; try again").with_retry_after(1));
    }
    let session = s.clone();
    Ok(ws
        // The read buffer is zero-filled before every read; at 128 KiB (the
        // default) that was 3% of a busy server's CPU for 666-byte audio messages.
        .read_buffer_size(READ_BUFFER)
        .max_message_size(s.max_message)
        .max_frame_size(s.max_message)
        .on_failed_upgrade({
            let journal = s.session.journal.clone();
            let id = call.id.clone();
            move |e| {
                tracing::warn!(error = %e, "websocket upgrade failed");
                tokio::spawn(async move {
                    journal.end(&id, "upgrade-failed", CALL_END_WRITE).await;
                });
            }
        })
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("call", call_id = %call.id, assistant_id = %call.assistant_id);
            async move {
                let _guard = guard;
                run_call(socket, call, assistant, session).instrument(span).await
            }
        }))
}

/// The socket's read buffer: one 20 ms audio message at 48 kHz (1,934 bytes with its
/// header), three at 16 kHz. Larger messages take several reads.
const READ_BUFFER: usize = 2 * 1024;
/// How long opening a call waits for its record to be written.
const CALL_CREATE_WRITE: Duration = Duration::from_secs(5);
/// How long a call's task waits for its record's end to be written.
const CALL_END_WRITE: Duration = Duration::from_secs(10);

async fn run_call(socket: WebSocket, call: Call, assistant: Assistant, s: AgentState) {
    let _live = LiveGauge::new();
    tracing::info!("call started");
    let registration = s.registry.register(&call.id);
    if registration.is_none() {
        tracing::warn!("the registry of live calls is full; this call cannot be resumed or controlled");
    }
    let reason = crate::session::run(socket, &call, &assistant, &s.session, registration).await;
    // After its turns, in order; the journal retries while the database is away.
    if !s.session.journal.end(&call.id, reason.as_str(), CALL_END_WRITE).await {
        tracing::error!("the call's end is not written yet; it stays queued");
    } else if let Some(n) = s.session.notifier_for(&call, &assistant) {
        // The record is complete now (the journal writes a call's turns before its
        // end): the report is built from what was stored.
        match s.session.store.get_call(&call.id).await {
            Ok(mut done) => {
                let turns = done.turns.take().unwrap_or_default();
                n.ended(&done, &turns).await;
            }
            Err(e) => tracing::error!(error = %e, "the end-of-call report could not be built"),
        }
    }
    tracing::info!(reason = reason.as_str(), "call ended");
}

/// Admits a resume: the token must be the call's current one and its socket gone.
/// Draining does not refuse it (the call is here until the drain's deadline), nor
/// does the call limit (the call is counted already).
fn resume(
    s: &AgentState,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    q: &AgentQuery,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    use crate::session::registry::Refusal;
    let refused = |outcome: &'static str| metrics::counter!("voxgate_call_resumes_total", "outcome" => outcome).increment(1);
    let ip = client_ip(headers, peer, s.api.config.trust_proxy);
    s.api.limiter.check_ip(Group::Calls, &ip)?;
    if let Some(origin) = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("invalid")) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !(same_origin(origin, host) || s.api.config.allowed_origins.allows(origin)) {
            return Err(ApiError::forbidden("this origin may not open calls (see ALLOWED_ORIGINS)"));
        }
    }
    let ws = ws.map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {}", e.body_text())))?;
    let call_id = q.call.as_deref().ok_or_else(|| ApiError::bad_request("`resume` needs `call`: the id of the call to resume"))?;
    let token = q.resume.as_deref().ok_or_else(|| ApiError::unauthorized("`call` needs `resume`: the call's resume token"))?;
    let not_here = || ApiError::new(ErrorCode::NotFound, format!("no live call {call_id} on this instance"));
    if !is_id(call_id) {
        refused("not-found");
        return Err(not_here());
    }
    if token.len() > 100 {
        refused("bad-token");
        return Err(ApiError::unauthorized("the resume token is wrong or used"));
    }
    let claim = match s.registry.claim_resume(call_id, token) {
        Ok(c) => c,
        Err(Refusal::NotFound) => {
            refused("not-found");
            return Err(not_here());
        }
        Err(Refusal::BadToken) => {
            refused("bad-token");
            return Err(ApiError::unauthorized("the resume token is wrong or used"));
        }
        Err(Refusal::Attached) => {
            refused("live-socket");
            return Err(ApiError::new(ErrorCode::Conflict, "the call's socket is still open; resume once it has dropped"));
        }
    };
    // The resumed socket's own task, counted so a drain waits for its hand-over.
    let guard = s.calls.token();
    let (hard_stop, max_message) = (s.hard_stop.clone(), s.max_message);
    let (start_timeout, ping) = (s.session.start_timeout, s.session.ws_ping);
    let span = tracing::info_span!("resume", call_id = %call_id);
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .max_message_size(s.max_message)
        .max_frame_size(s.max_message)
        .on_upgrade(move |socket| {
            async move {
                let _guard = guard;
                hand_over(socket, claim, hard_stop, max_message, start_timeout, ping).await;
            }
            .instrument(span)
        }))
}

/// Reads a resumed socket's `start`, then gives the socket to the call's session.
async fn hand_over(
    socket: WebSocket,
    claim: crate::session::registry::ResumeClaim,
    hard_stop: CancellationToken,
    max_message: usize,
    start_timeout: Duration,
    ping: Option<Duration>,
) {
    use voxgate_transport::close::{Close, code};
    use voxgate_transport::input::{InputDecoder, await_start};
    use voxgate_transport::protocol::Limits;
    use voxgate_transport::wire::{WireOut, pump_then_release, writer_channel};

    let (sink, mut stream) = crate::session::socket::split(socket, max_message, ping);
    let (tx, rx) = writer_channel();
    let pump = tokio::spawn(pump_then_release(rx, sink));
    let d = Limits::default();
    let mut decoder = InputDecoder::new(Limits { max_audio_bytes: max_message.min(d.max_audio_bytes), max_text_bytes: max_message.min(d.max_text_bytes) });
    let started = tokio::select! {
        _ = hard_stop.cancelled() => None,
        r = await_start(&mut stream, &mut decoder, &tx, start_timeout) => Some(r),
    };
    let negotiated = match started {
        Some(Ok(n)) => n,
        other => {
            let close = match other {
                Some(Err(end)) => end.close(),
                _ => Some(Close::new(code::RESTART, "server restarting; reconnect")),
            };
            if let Some(c) = close {
                let _ = tx.send(WireOut::Close(c)).await;
            }
            drop(tx);
            crate::session::writer_done(pump).await;
            metrics::counter!("voxgate_call_resumes_total", "outcome" => "failed").increment(1);
            tracing::info!("the resumed socket did not start; its token works again");
            claim.restore();
            return;
        }
    };
    drop(tx);
    // What went out before `start` (pongs, errors) is written within a grace: a
    // client that stops reading must not hold the socket, or its token, forever.
    let Some(Some(sink)) = crate::session::writer_done(pump).await else {
        metrics::counter!("voxgate_call_resumes_total", "outcome" => "failed").increment(1);
        claim.restore();
        return;
    };
    if let Err(r) = claim.hand_over(Box::pin(stream), Box::pin(sink), decoder, negotiated).await {
        // The call ended while this socket was starting.
        use futures_util::SinkExt;
        let mut sink = r.sink;
        let _ = sink.send(WireOut::Close(Close::new(code::NORMAL, "the call has ended"))).await;
        metrics::counter!("voxgate_call_resumes_total", "outcome" => "ended").increment(1);
    }
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
