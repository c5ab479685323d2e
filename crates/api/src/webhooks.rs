//! `/api/webhooks`: the webhook outbox, read-only but for a manual retry. Each
//! event shows where it goes, its state (`pending`, `delivered`, `failed`), its
//! attempts, the last answer's status and error; one event also shows its body.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voxgate_domain::clock::{is_id, now_ms};
use voxgate_store::outbox::{OutboxFilter, OutboxState};
use voxgate_webhooks::WebhookDelivery;

use crate::assistants::{check_cursor, check_limit, not_found_as};
use crate::auth::Admin;
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::state::ApiState;

/// Which deliveries to list.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookQuery {
    /// Only this call's events.
    #[param(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub call_id: Option<String>,
    /// `pending`, `delivered` or `failed`.
    #[param(value_type = Option<WebhookState>, inline)]
    pub state: Option<String>,
    /// Only events of this type (`status-update`, `transcript`, `tool-calls`, `end-of-call-report`).
    #[serde(rename = "type")]
    #[param(rename = "type", min_length = 1, max_length = 64)]
    pub kind: Option<String>,
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    #[param(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub cursor: Option<String>,
}

/// Where a webhook event is in its delivery (the `state` filter; parsed by the store).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookState {
    Pending,
    Delivered,
    Failed,
}

/// A page of deliveries.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPage {
    pub items: Vec<WebhookDelivery>,
    pub next_cursor: Option<String>,
}

/// Lists webhook events and their delivery status, newest first.
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", params(WebhookQuery),
    responses((status = 200, body = WebhookPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, _: Admin, ApiQuery(q): ApiQuery<WebhookQuery>) -> Result<Json<WebhookPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    check_cursor(q.cursor.as_deref())?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(OutboxState::parse(s).ok_or_else(|| ApiError::bad_request("state must be pending, delivered or failed"))?),
    };
    if q.call_id.as_deref().is_some_and(|c| !is_id(c)) {
        return Err(ApiError::bad_request("callId is not a call id"));
    }
    // Characters, as the document's maxLength counts them (not bytes).
    if q.kind.as_deref().is_some_and(|k| k.is_empty() || k.chars().count() > 64) {
        return Err(ApiError::bad_request("type must be 1 to 64 characters"));
    }
    let page = s
        .store
        .list_webhooks(&OutboxFilter { call_id: q.call_id, state, event_type: q.kind, cursor: q.cursor, limit })
        .await?;
    Ok(Json(WebhookPage {
        items: page.items.into_iter().map(|e| WebhookDelivery::from_event(e, false)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One webhook event, with the body that is (or was) sent.
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookDelivery), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<Json<WebhookDelivery>, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("webhook event"));
    }
    let e = s.store.get_webhook(&id).await.map_err(|e| not_found_as(e, "webhook event"))?;
    Ok(Json(WebhookDelivery::from_event(e, true)))
}

/// Queues a `failed` event again, with its attempts reset.
#[utoipa::path(post, path = "/api/webhooks/{id}/retry", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 202), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn retry(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("failed webhook event"));
    }
    s.store.retry_webhook(&id, now_ms()).await.map_err(|e| not_found_as(e, "failed webhook event"))?;
    if let Some(w) = &s.webhooks {
        w.wake();
    }
    Ok(StatusCode::ACCEPTED)
}
