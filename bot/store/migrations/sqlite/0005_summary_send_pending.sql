-- 5: a summary slot claimed but not known to be posted (a crash after the claim, a 5xx, a dropped connection):
-- retried with the same message nonce while Discord still deduplicates it (bot/cogs/mood.py); and the ids of the
-- latest statistics flushes (a flush whose COMMIT's answer was lost is written again under its id, and skipped when
-- the id is already there: bot/store/interface.py).
ALTER TABLE summary_schedules ADD COLUMN send_pending INTEGER NOT NULL DEFAULT 0;

CREATE TABLE statistics_flushes (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE INDEX statistics_flushes_at ON statistics_flushes (at);
