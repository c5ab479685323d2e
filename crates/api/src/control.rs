//! `POST /api/calls/{id}/control`: end a live call, make its assistant say
//! something, or add a message to its conversation.
//!
//! The API checks the request and the call's record (it must be `in-progress`),
//! then hands the message to [`CallControl`], which the binary implements: straight
//! to the call when this process holds it, else queued in PostgreSQL and announced
//! to every agent instance with `NOTIFY` (the instance that holds the call takes
//! it). The API never sees the call's session itself.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use voxgate_domain::call::CallStatus;
use voxgate_domain::clock::is_id;
use voxgate_domain::{ErrorCode, FieldError};

use crate::assistants::not_found_as;
use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::ApiState;

/// Longest `text` or `content`, in bytes: the message must fit in one PostgreSQL
/// notification (under 8000 bytes) with its envelope, even with JSON escapes.
pub const MAX_CONTROL_TEXT: usize = 4000;

/// A message for a live call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ControlMessage {
    /// End the call now (`endedReason`: `api-ended-call`).
    End {},
    /// The assistant says `text`, verbatim, after what it is saying now.
    Say {
        /// Not blank, at most 4000 characters, no NUL.
        #[schema(min_length = 1, max_length = 4000)]
        text: String,
    },
    /// A message joins the conversation: a `system` message guides the next
    /// replies; a `user` message is answered as if the caller had typed it.
    AddMessage {
        role: MessageRole,
        /// Not blank, at most 4000 characters, no NUL.
        #[schema(min_length = 1, max_length = 4000)]
        content: String,
    },
}

/// Who an added message is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    System,
    User,
}

impl ControlMessage {
    /// The message's `type`, as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlMessage::End {} => "end",
            ControlMessage::Say { .. } => "say",
            ControlMessage::AddMessage { .. } => "add-message",
        }
    }

    /// Checks the text fields: not blank, not too long, no NUL (PostgreSQL refuses
    /// it in a notification).
    pub fn validate(&self) -> Result<(), FieldError> {
        let (field, text) = match self {
            ControlMessage::End {} => return Ok(()),
            ControlMessage::Say { text } => ("text", text),
            ControlMessage::AddMessage { content, .. } => ("content", content),
        };
        if text.trim().is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        // Characters, as the document's maxLength counts them.
        if text.chars().count() > MAX_CONTROL_TEXT {
            return Err(FieldError::new(field, format!("must be at most {MAX_CONTROL_TEXT} characters")));
        }
        if text.contains('\0') {
            return Err(FieldError::new(field, "must not contain NUL characters"));
        }
        Ok(())
    }
}

/// Where a control message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the call's session in this process.
    Local,
    /// Queued in PostgreSQL and announced to every agent instance (`NOTIFY`); the
    /// one holding the call takes it.
    Notified,
    /// No instance this process can reach holds the call.
    NotLive,
    /// The call's queue of control messages is full; try again.
    Busy,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::Local => "local",
            Delivery::Notified => "notified",
            Delivery::NotLive => "not-live",
            Delivery::Busy => "busy",
        }
    }
}

/// Hands control messages to live calls; implemented by the binary.
pub trait CallControl: Send + Sync + 'static {
    /// Delivers `msg` to the call `call_id` (checked to be an id). An `Err` is an
    /// outage (the database did not take the message), logged by the caller.
    fn deliver(&self, call_id: &str, msg: ControlMessage) -> BoxFuture<'_, Result<Delivery, String>>;
}

pub type SharedCallControl = Arc<dyn CallControl>;

/// The answer to a control request that was handed over.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlAccepted {
    pub call_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `local` (this process holds the call) or `notified` (queued for the agent
    /// instances in PostgreSQL, and announced).
    pub delivery: String,
}

/// Sends a control message to a live call.
#[utoipa::path(post, path = "/api/calls/{id}/control", tag = "calls", params(("id" = String, Path)), request_body = ControlMessage,
    responses((status = 202, body = ControlAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn control(
    State(s): State<ApiState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(msg): ApiJson<ControlMessage>,
) -> Result<(StatusCode, Json<ControlAccepted>), ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("call"));
    }
    msg.validate().map_err(|f| ApiError::validation(vec![f]))?;
    let call = s.store.get_call(&id).await.map_err(|e| not_found_as(e, "call"))?;
    if call.status != CallStatus::InProgress {
        return Err(ApiError::new(ErrorCode::Conflict, "the call has ended"));
    }
    let Some(control) = &s.call_control else {
        return Err(ApiError::new(ErrorCode::Unavailable, "this instance cannot reach live calls").with_retry_after(1));
    };
    let kind = msg.kind();
    let delivery = control.deliver(&id, msg).await.map_err(|e| {
        tracing::error!(error = %e, call = %id, "a control message could not be sent");
        ApiError::new(ErrorCode::Unavailable, "the message could not be sent to the agents; try again").with_retry_after(1)
    })?;
    metrics::counter!("voxgate_call_control_total", "type" => kind, "delivery" => delivery.as_str()).increment(1);
    match delivery {
        Delivery::Local | Delivery::Notified => Ok((
            StatusCode::ACCEPTED,
            Json(ControlAccepted { call_id: id, kind: kind.into(), delivery: delivery.as_str().into() }),
        )),
        // The record still says in progress, but no session holds the call: it is
        // ending (its record is written behind it) or was left by a crashed process.
        Delivery::NotLive => Err(ApiError::new(ErrorCode::Conflict, "the call is not live on any instance this one can reach (it has ended)")),
        Delivery::Busy => Err(ApiError::new(ErrorCode::RateLimited, "too many control messages for this call at once; try again").with_retry_after(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_strictly() {
        let ok: ControlMessage = serde_json::from_str(r#"{"type":"add-message","role":"user","content":"hi"}"#).unwrap();
        assert_eq!(ok, ControlMessage::AddMessage { role: MessageRole::User, content: "hi".into() });
        for bad in [
            r#"{"type":"end","extra":1}"#,
            r#"{"type":"hangup"}"#,
            r#"{"type":"say"}"#,
            r#"{"type":"say","text":5}"#,
            r#"{"type":"add-message","role":"assistant","content":"x"}"#,
            r#"{"text":"no type"}"#,
        ] {
            assert!(serde_json::from_str::<ControlMessage>(bad).is_err(), "{bad}");
        }
        assert!(ControlMessage::Say { text: " ".into() }.validate().is_err());
        assert!(ControlMessage::Say { text: "a".repeat(MAX_CONTROL_TEXT + 1) }.validate().is_err());
        assert!(ControlMessage::Say { text: "a\0b".into() }.validate().is_err());
        assert!(ControlMessage::Say { text: "a".repeat(MAX_CONTROL_TEXT) }.validate().is_ok());
        // Characters, as the document's maxLength counts them, not bytes.
        assert!(ControlMessage::Say { text: "é".repeat(MAX_CONTROL_TEXT) }.validate().is_ok());
        assert!(ControlMessage::Say { text: "é".repeat(MAX_CONTROL_TEXT + 1) }.validate().is_err());
    }
}
