-- 5: a summary slot claimed but not known to be posted (a crash after the claim, a 5xx, a dropped connection):
-- retried with the same message nonce while Discord still deduplicates it (bot/cogs/mood.py).
ALTER TABLE summary_schedules ADD COLUMN send_pending INTEGER NOT NULL DEFAULT 0;
