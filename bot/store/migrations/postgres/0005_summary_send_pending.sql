-- 5: a summary slot claimed but not known to be posted (a crash after the claim, a 5xx, a dropped connection):
-- retried with the same message nonce while Discord still deduplicates it (bot/cogs/mood.py); and the ids of the
-- latest statistics flushes (a flush whose COMMIT's answer was lost is written again under its id, and skipped when
-- the id is already there: bot/store/interface.py).
ALTER TABLE summary_schedules ADD COLUMN send_pending BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE statistics_flushes (
    id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX statistics_flushes_at ON statistics_flushes (at);
