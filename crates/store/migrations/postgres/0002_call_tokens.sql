-- Short-lived, single-use tokens that let a browser open one call (POST /api/calls).
CREATE TABLE IF NOT EXISTS call_tokens (
    hash          TEXT PRIMARY KEY,
    assistant_id  TEXT NOT NULL,
    key_id        TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX IF NOT EXISTS call_tokens_expiry ON call_tokens (expires_at);
