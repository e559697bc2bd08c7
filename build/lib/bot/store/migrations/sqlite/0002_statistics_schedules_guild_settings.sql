-- 2: hourly statistics, summary schedules and guild settings.
CREATE TABLE channel_buckets (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    bucket_start INTEGER NOT NULL,
    messages INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, channel_id, bucket_start)
) WITHOUT ROWID;
CREATE INDEX channel_buckets_guild_time ON channel_buckets (guild_id, bucket_start);

CREATE TABLE emotion_buckets (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    bucket_start INTEGER NOT NULL,
    label TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    score_sum REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, channel_id, bucket_start, label),
    FOREIGN KEY (guild_id, channel_id, bucket_start)
        REFERENCES channel_buckets (guild_id, channel_id, bucket_start) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX emotion_buckets_guild_time ON emotion_buckets (guild_id, bucket_start);

CREATE TABLE summary_schedules (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('daily', 'weekly', 'every')),
    hour INTEGER CHECK (hour IS NULL OR hour BETWEEN 0 AND 23),
    weekday INTEGER CHECK (weekday IS NULL OR weekday BETWEEN 0 AND 6),
    every_hours INTEGER CHECK (every_hours IS NULL OR every_hours >= 1),
    source_channel_id INTEGER NULL,
    last_posted_at REAL NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT NULL,
    UNIQUE (guild_id, channel_id),
    CHECK (kind <> 'daily' OR hour IS NOT NULL),
    CHECK (kind <> 'weekly' OR (hour IS NOT NULL AND weekday IS NOT NULL)),
    CHECK (kind <> 'every' OR every_hours IS NOT NULL)
);

CREATE TABLE guild_settings (
    guild_id INTEGER PRIMARY KEY,
    retention_days INTEGER NOT NULL DEFAULT 90 CHECK (retention_days >= 1)
);
