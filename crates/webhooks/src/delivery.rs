//! What the API shows of a delivery.

use serde::Serialize;
use utoipa::ToSchema;
use voxgate_store::outbox::OutboxEvent;

/// A webhook event and how its delivery went (`GET /api/webhooks`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// The event id, as sent in `X-Voxgate-Event-Id` and the body's `id`.
    pub id: String,
    /// `status-update`, `transcript`, `tool-calls`, `end-of-call-report`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub call_id: Option<String>,
    pub assistant_id: Option<String>,
    /// Where it is sent.
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    #[serde(with = "voxgate_domain::clock::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// When the next attempt is due (pending events only).
    #[serde(with = "voxgate_domain::clock::rfc3339_ms::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
    #[serde(with = "voxgate_domain::clock::rfc3339_ms::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<i64>,
    /// HTTP status of the last answer, if one came.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The JSON body sent (only when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body: Option<serde_json::Value>,
}

impl WebhookDelivery {
    /// The view of an outbox row; `with_body` includes the sent JSON.
    pub fn from_event(e: OutboxEvent, with_body: bool) -> WebhookDelivery {
        let pending = e.state == voxgate_store::outbox::OutboxState::Pending;
        let body = with_body.then(|| serde_json::from_str(&e.body).unwrap_or(serde_json::Value::String(e.body.clone())));
        WebhookDelivery {
            id: e.id,
            kind: e.event_type,
            call_id: e.call_id,
            assistant_id: e.assistant_id,
            url: e.url,
            state: e.state.as_str().to_string(),
            attempts: e.attempts,
            created_at: e.created_at,
            next_attempt_at: pending.then_some(e.next_attempt_at),
            delivered_at: e.delivered_at,
            last_status: e.last_status,
            last_error: e.last_error,
            body,
        }
    }
}
