-- Webhooks: the outbox of events to POST to customers' servers. A row is written
-- before anything is sent and kept until delivered (or given up), so a restart or
-- an unreachable receiver loses nothing. Timestamps are Unix milliseconds.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id               TEXT PRIMARY KEY,            -- event id (UUIDv7), also sent as X-Voxgate-Event-Id
    event_type       TEXT NOT NULL,
    call_id          TEXT,
    assistant_id     TEXT,
    url              TEXT NOT NULL,
    body             TEXT NOT NULL,               -- the exact JSON that is sent and signed
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    delivered_at     BIGINT,
    last_status      BIGINT,                      -- HTTP status of the last attempt, if any answer came
    last_error       TEXT,
    lease_until      BIGINT                       -- a worker holds the row until then
);
-- Due pending events, in order.
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_outbox_call ON webhook_outbox (call_id, id);
CREATE INDEX IF NOT EXISTS webhook_outbox_state ON webhook_outbox (state, id);
