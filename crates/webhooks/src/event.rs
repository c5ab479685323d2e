//! The event and its body, in the Vapi style.

use serde_json::{Map, Value, json};
use voxgate_domain::clock::{ms_to_rfc3339, new_id, now_ms};

/// Event types voxgate sends (others are allowed: the type is free text).
pub mod kinds {
    pub const STATUS_UPDATE: &str = "status-update";
    pub const TRANSCRIPT: &str = "transcript";
    pub const TOOL_CALLS: &str = "tool-calls";
    pub const END_OF_CALL_REPORT: &str = "end-of-call-report";
}

/// One event to send: its id, where to, and the exact body (built once, so every
/// attempt sends and signs the same bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// A UUIDv7 string; sent as `X-Voxgate-Event-Id` and as `id` in the body.
    pub id: String,
    /// The message type (`status-update`, ...); sent as `X-Voxgate-Event-Type`.
    pub kind: String,
    pub call_id: Option<String>,
    pub assistant_id: Option<String>,
    /// The receiver's URL (the assistant's or the organisation's server URL).
    pub url: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The JSON text sent.
    pub body: String,
}

impl Event {
    /// An event with a new id, created now. The body is
    /// `{"id", "createdAt" (RFC 3339), "message": {"type": kind, "timestamp" (Unix ms),
    /// ...payload, "call": {"id": call_id, ...}, "assistant": {"id": assistant_id, ...}}}`:
    /// an object payload's fields go into `message` (its own `type` and `timestamp` are
    /// overwritten; its `call`/`assistant` objects get the ids added); any other
    /// payload goes under `message.data`.
    pub fn new(kind: &str, call_id: Option<&str>, assistant_id: Option<&str>, url: &str, payload: Value) -> Event {
        let id = new_id();
        let created_at = now_ms();
        let mut message = match payload {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => Map::from_iter([("data".to_string(), other)]),
        };
        message.insert("type".into(), Value::String(kind.to_string()));
        message.insert("timestamp".into(), json!(created_at));
        for (key, value) in [("call", call_id), ("assistant", assistant_id)] {
            let Some(value) = value else { continue };
            match message.get_mut(key) {
                Some(Value::Object(o)) => {
                    o.insert("id".into(), Value::String(value.to_string()));
                }
                _ => {
                    message.insert(key.into(), json!({ "id": value }));
                }
            }
        }
        let body = json!({ "id": id, "createdAt": ms_to_rfc3339(created_at), "message": message }).to_string();
        Event {
            id,
            kind: kind.to_string(),
            call_id: call_id.map(str::to_string),
            assistant_id: assistant_id.map(str::to_string),
            url: url.to_string(),
            created_at,
            body,
        }
    }
}
