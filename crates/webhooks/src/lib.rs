//! Webhooks: signed events delivered from a persistent outbox.
//!
//! Events (status updates, final transcripts, tool calls, the end-of-call report)
//! are written to the store's outbox table ([`voxgate_store::outbox`]) before
//! anything is sent, then POSTed to the assistant's (or organisation's) server URL
//! by [`Webhooks::run`], retried with back-off until a receiver answers 2xx, so a
//! restart or an unreachable receiver loses nothing. Delivery is **at least once**:
//! a receiver must deduplicate by event id.
//!
//! # The request
//! `POST <url>` with the body built by [`Event::new`] (Vapi style:
//! `{"id", "createdAt", "message": {"type", "timestamp", ..., "call": {"id"}}}`)
//! and these headers:
//!
//! | header | value |
//! |---|---|
//! | `Content-Type` | `application/json` |
//! | `X-Voxgate-Event-Id` | the event id (a UUIDv7), the same on every attempt; deduplicate by it |
//! | `X-Voxgate-Event-Type` | the message type, e.g. `end-of-call-report` |
//! | `X-Voxgate-Timestamp` | Unix seconds when this attempt was signed |
//! | `X-Voxgate-Signature` | `t=<the same seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>` |
//!
//! Receivers check it with [`verify`]: recompute the HMAC over the raw body bytes,
//! compare in constant time, and refuse timestamps far from now (5 minutes is usual).
//!
//! # Secret
//! Webhooks require a signing secret: [`Webhooks::new`] refuses an empty one
//! ([`WebhookError::NoSecret`]). Unsigned events are never sent; a server without a
//! secret should leave webhooks off and say so at startup.
//!
//! # Retries
//! 2xx is delivered. Any other status, a connection error or no answer within
//! [`Options::timeout`] is retried after [`Options::backoff`] (doubling from
//! `backoff_base`, jittered, capped at `backoff_max`; a `Retry-After` in seconds is
//! honoured up to that cap) until `max_attempts`, then the event is `failed`.
//! `410 Gone` gives up at once (the receiver says the endpoint is no more). Redirects
//! are not followed (they count as failures). Only the first 512 bytes of a failed
//! answer are read, for `last_error`; the URL is left out of error texts (it may
//! carry a token) and the secret is never logged or stored.
//!
//! # Metrics
//! `voxgate_webhook_deliveries_total{outcome="delivered|retry|failed"}`,
//! `voxgate_webhook_outbox_pending` (gauge), `voxgate_webhook_delivery_seconds`
//! (histogram, per attempt).

mod delivery;
mod event;
pub mod outbound;
pub mod sign;
mod worker;

pub use delivery::WebhookDelivery;
pub use event::{Event, kinds};
pub use sign::{VerifyError, sign, signed, verify};
pub use worker::{Options, Webhooks, default_client};

/// The header names sent with every event.
pub mod headers {
    pub const EVENT_ID: &str = "X-Voxgate-Event-Id";
    pub const EVENT_TYPE: &str = "X-Voxgate-Event-Type";
    pub const TIMESTAMP: &str = "X-Voxgate-Timestamp";
    pub const SIGNATURE: &str = "X-Voxgate-Signature";
}

/// What can go wrong when setting up webhooks or enqueueing an event.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks need a signing secret: set one (e.g. VOXGATE_WEBHOOK_SECRET) or leave webhooks off")]
    NoSecret,
    #[error("the webhook URL is unusable ({0}); give an absolute http:// or https:// URL as the server URL")]
    BadUrl(&'static str),
    #[error("the event body is {bytes} bytes, more than the {max} allowed; send less in the payload")]
    TooLarge { bytes: usize, max: usize },
    #[error("cannot build the HTTP client for webhooks: {0}")]
    Client(String),
    #[error("webhook outbox: {0}")]
    Store(#[from] voxgate_store::StoreError),
}
