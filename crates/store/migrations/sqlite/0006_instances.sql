-- Agent instances: each agent-role process keeps a row and refreshes `seen_at`
-- (INSTANCE_HEARTBEAT_SECS). An instance whose row has not been refreshed for a
-- lease (INSTANCE_LEASE_SECS) is taken for dead by the others: they end the calls
-- it left in progress (`instance-lost`) and remove its row. A cleanly stopped
-- instance removes its own row. Timestamps are Unix milliseconds, from the
-- database's clock, so the hosts' clocks need not agree.
CREATE TABLE IF NOT EXISTS instances (
    id          TEXT PRIMARY KEY,             -- INSTANCE_ID, as written on calls.instance
    started_at  INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL
);
-- The live calls of one instance (the sweep and the end of a drain).
CREATE INDEX IF NOT EXISTS calls_live_instance ON calls (instance) WHERE status = 'in-progress';
