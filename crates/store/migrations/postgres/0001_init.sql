-- voxgate schema, PostgreSQL. Timestamps are Unix milliseconds; JSON is TEXT.
CREATE TABLE IF NOT EXISTS assistants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('private', 'public')),
    prefix         TEXT NOT NULL,
    hash           TEXT NOT NULL UNIQUE,
    assistant_ids  TEXT NOT NULL DEFAULT '[]',
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT
);

CREATE TABLE IF NOT EXISTS login_codes (
    hash        TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE IF NOT EXISTS calls (
    id            TEXT PRIMARY KEY,
    assistant_id  TEXT NOT NULL,
    key_id        TEXT,
    status        TEXT NOT NULL CHECK (status IN ('in-progress', 'ended')),
    ended_reason  TEXT,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    duration_ms   BIGINT,
    instance      TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS calls_assistant ON calls (assistant_id, id);
CREATE INDEX IF NOT EXISTS calls_status ON calls (status, id);

CREATE TABLE IF NOT EXISTS call_turns (
    call_id             TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    idx                 BIGINT NOT NULL,
    role                TEXT NOT NULL,
    text                TEXT NOT NULL,
    started_ms          BIGINT NOT NULL,
    interrupted         BIGINT NOT NULL DEFAULT 0,
    endpointing_ms      DOUBLE PRECISION,
    stt_ms              DOUBLE PRECISION,
    llm_first_token_ms  DOUBLE PRECISION,
    tts_first_audio_ms  DOUBLE PRECISION,
    queue_wait_ms       DOUBLE PRECISION,
    voice_to_voice_ms   DOUBLE PRECISION,
    PRIMARY KEY (call_id, idx)
);

CREATE TABLE IF NOT EXISTS files (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    assistant_id  TEXT,
    storage_path  TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_assistant ON files (assistant_id, id);
