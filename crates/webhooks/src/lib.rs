//! Webhooks: signed events delivered from a persistent outbox (being written).
