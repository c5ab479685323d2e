//! `/api/calls`: the record of every call, with its transcript and per-turn latency.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voxgate_domain::call::{Call, CallStatus};
use voxgate_domain::clock::{is_id, rfc3339_to_ms};
use voxgate_store::calls::CallFilter;

use crate::assistants::{check_cursor, check_limit, not_found_as};
use crate::auth::Admin;
use crate::error::ApiJson;
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::state::ApiState;

/// Which calls to list.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    #[param(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub assistant_id: Option<String>,
    /// `in-progress` or `ended`.
    #[param(value_type = Option<CallStatus>)]
    pub status: Option<String>,
    /// RFC 3339; calls started at or after.
    #[param(format = DateTime)]
    pub started_after: Option<String>,
    /// RFC 3339; calls started before.
    #[param(format = DateTime)]
    pub started_before: Option<String>,
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    #[param(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub cursor: Option<String>,
}

/// A page of calls.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallPage {
    pub items: Vec<Call>,
    pub next_cursor: Option<String>,
}

fn time_param(v: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    v.map(|s| rfc3339_to_ms(s).ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC 3339 timestamp"))))
        .transpose()
}

/// Lists calls, newest first.
#[utoipa::path(get, path = "/api/calls", tag = "calls", params(CallQuery),
    responses((status = 200, body = CallPage), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, _: Admin, ApiQuery(q): ApiQuery<CallQuery>) -> Result<Json<CallPage>, ApiError> {
    check_cursor(q.cursor.as_deref())?;
    let status = q
        .status
        .as_deref()
        .map(|v| CallStatus::parse(v).ok_or_else(|| ApiError::bad_request("status must be `in-progress` or `ended`")))
        .transpose()?;
    if q.assistant_id.as_deref().is_some_and(|a| !is_id(a)) {
        return Err(ApiError::bad_request("assistantId is not an id"));
    }
    let filter = CallFilter {
        assistant_id: q.assistant_id,
        status,
        started_after: time_param(q.started_after.as_deref(), "startedAfter")?,
        started_before: time_param(q.started_before.as_deref(), "startedBefore")?,
        cursor: q.cursor,
        limit: check_limit(q.limit)?,
    };
    let page = s.store.list_calls(&filter).await?;
    Ok(Json(CallPage { items: page.items, next_cursor: page.next_cursor }))
}

/// One call with its transcript and per-turn latency.
#[utoipa::path(get, path = "/api/calls/{id}", tag = "calls", params(("id" = String, Path)),
    responses((status = 200, body = Call), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<Json<Call>, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("call"));
    }
    s.store.get_call(&id).await.map(Json).map_err(|e| not_found_as(e, "call"))
}

/// What a call token is for.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCall {
    /// An existing assistant's id.
    #[schema(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub assistant_id: String,
}

/// A single-use token that opens one call at `/agent?token=…` within a minute; for
/// browsers, which cannot send a key in a WebSocket header.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallToken {
    pub token: String,
    pub assistant_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: String,
    /// The path and query to open the call at, on the agent's host.
    pub agent_path: String,
}

/// How long a call token works.
const CALL_TOKEN_TTL_MS: i64 = 60_000;

/// Mints a call token for an assistant (a server mints it, a browser uses it).
#[utoipa::path(post, path = "/api/calls", tag = "calls", request_body = NewCall,
    responses((status = 201, body = CallToken), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    Admin(p): Admin,
    ApiJson(body): ApiJson<NewCall>,
) -> Result<(axum::http::StatusCode, Json<CallToken>), ApiError> {
    if !is_id(&body.assistant_id) {
        return Err(ApiError::validation(vec![voxgate_domain::FieldError::new("assistantId", "is not an id")]));
    }
    s.store.get_assistant(&body.assistant_id).await.map_err(|e| match e {
        voxgate_store::StoreError::NotFound => {
            ApiError::validation(vec![voxgate_domain::FieldError::new("assistantId", "no such assistant")])
        }
        other => other.into(),
    })?;
    let token = format!("vg_ct_{}", voxgate_domain::key::random_token());
    let hash = voxgate_domain::key::hash_secret(&token);
    let expires = s.store.create_call_token(&hash, &body.assistant_id, p.key_id(), CALL_TOKEN_TTL_MS).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(CallToken {
            agent_path: format!("/agent?token={token}"),
            token,
            assistant_id: body.assistant_id,
            expires_at: voxgate_domain::clock::ms_to_rfc3339(expires),
        }),
    ))
}

/// A call's recording: a stereo WAV (the caller left, the assistant right, 16 kHz),
/// streamed from its file.
#[utoipa::path(get, path = "/api/calls/{id}/recording", tag = "calls", params(("id" = String, Path)),
    responses((status = 200, content_type = "audio/wav", description = "the recording"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn recording(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    if !is_id(&id) {
        return Err(ApiError::not_found("call"));
    }
    let path = s.store.recording_path(&id).await.map_err(|e| not_found_as(e, "call"))?.ok_or_else(|| ApiError::not_found("recording"))?;
    // The path was written by the agent that held the call, never by a client.
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(call = %id, "the call's recording file is gone");
            return Err(ApiError::not_found("recording"));
        }
        Err(e) => return Err(ApiError::new(voxgate_domain::ErrorCode::Internal, format!("opening a recording: {e}"))),
    };
    let len = file.metadata().await.map_err(|e| ApiError::new(voxgate_domain::ErrorCode::Internal, format!("reading a recording: {e}")))?.len();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    axum::response::Response::builder()
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{id}.wav\""))
        .body(body)
        .map_err(|e| ApiError::new(voxgate_domain::ErrorCode::Internal, e.to_string()))
}
