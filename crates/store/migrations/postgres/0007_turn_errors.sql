-- A caller's turn whose speech could not be transcribed is kept, with empty text
-- and why (the code and message of the error event the caller was sent).
ALTER TABLE call_turns ADD COLUMN error_code TEXT;
ALTER TABLE call_turns ADD COLUMN error_message TEXT;
