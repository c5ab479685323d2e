-- Short-lived, single-use tokens that let a browser open one call (POST /api/calls).
CREATE TABLE IF NOT EXISTS call_tokens (
    hash          TEXT PRIMARY KEY,
    assistant_id  TEXT NOT NULL,
    key_id        TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE INDEX IF NOT EXISTS call_tokens_expiry ON call_tokens (expires_at);
