-- Knowledge bases: an uploaded file is processed in a background job (text,
-- chunks, embeddings); its status and outcome are kept on the file. Chunks carry
-- their embedding as little-endian f32 bytes, searched by the server (the same on
-- both databases). Each turn's retrieval time joins the latency breakdown.
ALTER TABLE files ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE files ADD COLUMN error_code TEXT;
ALTER TABLE files ADD COLUMN error_message TEXT;
ALTER TABLE files ADD COLUMN chunk_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN processed_at BIGINT;
CREATE INDEX IF NOT EXISTS files_status ON files (status);

CREATE TABLE IF NOT EXISTS knowledge_chunks (
    file_id    TEXT NOT NULL,
    idx        BIGINT NOT NULL,
    text       TEXT NOT NULL,
    embedding  BYTEA NOT NULL,
    PRIMARY KEY (file_id, idx)
);

ALTER TABLE call_turns ADD COLUMN retrieval_ms DOUBLE PRECISION;
