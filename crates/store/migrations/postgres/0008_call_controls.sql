-- Control messages for live calls (`POST /api/calls/{id}/control`) on their way to
-- the agent instance that holds the call. The API writes a row and announces it
-- (PostgreSQL NOTIFY); the instance holding the call deletes the row as it takes the
-- message (so a message is taken once), and looks for rows it has not been told of
-- when its listening connection comes back and every few seconds (so a message sent
-- while that connection was down is not lost). Rows nobody takes (the call ended
-- first) are deleted once they are older than a minute. `created_at` is Unix
-- milliseconds from the database's clock.
CREATE TABLE IF NOT EXISTS call_controls (
    id          TEXT PRIMARY KEY,
    call_id     TEXT NOT NULL,
    message     TEXT NOT NULL,     -- the control message, JSON
    created_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_controls_created ON call_controls (created_at, id);
CREATE INDEX IF NOT EXISTS call_controls_call ON call_controls (call_id);
