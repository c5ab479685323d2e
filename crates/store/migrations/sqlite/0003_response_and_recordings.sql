-- Each reply's response time (end-of-turn decision to first audio written), and
-- where a call's recording is kept when its assistant records calls.
ALTER TABLE call_turns ADD COLUMN response_ms REAL;
ALTER TABLE calls ADD COLUMN recording_path TEXT;
