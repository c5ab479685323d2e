-- Control messages for live calls (`POST /api/calls/{id}/control`) on their way to
-- the agent instance that holds the call. The API writes a row and announces it
-- (PostgreSQL NOTIFY); the instance holding the call hands the messages to the call
-- in `seq` order, deleting each row as it does (so a message is handed over once).
-- It also looks for rows it was not told of when its listening connection comes
-- back and every few seconds (so a message announced while that connection was down
-- is not lost). Rows nobody takes (the call ended first) are deleted once older than
-- a minute. `created_at` is Unix milliseconds from the database's clock.
CREATE TABLE IF NOT EXISTS call_controls (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,     -- the order they were queued in
    id          TEXT NOT NULL UNIQUE,
    call_id     TEXT NOT NULL,
    message     TEXT NOT NULL,     -- the control message, JSON
    created_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_controls_created ON call_controls (created_at);
CREATE INDEX IF NOT EXISTS call_controls_call ON call_controls (call_id, seq);
