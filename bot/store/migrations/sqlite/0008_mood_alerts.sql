-- 8: mood alerts (bot/alerts/, bot/cogs/alerts.py). alert_settings: a guild's alerts (the moderators' channel, the
-- watched emotions comma-separated, the sensitivity, the role to mention, on or off and why it went off).
-- alert_channels: per watched channel, its snooze, how many times moderators pressed "Less sensitive", its last
-- alert (the claim: one alert per cooldown across processes) and when that alert was acknowledged; no user id (who
-- acknowledged is written in the alert message on Discord, not here). alert_buckets: the counter the detector
-- tests, per channel and hour while alerts are on: the messages analysed, and how many of them carried at least one
-- of the guild's watched emotions at the time (labels overlap, so this cannot be derived from emotion_buckets).
CREATE TABLE alert_settings (
    guild_id INTEGER PRIMARY KEY,
    mod_channel_id INTEGER NOT NULL,
    labels TEXT NOT NULL CHECK (labels <> ''),
    sensitivity TEXT NOT NULL CHECK (sensitivity IN ('low', 'medium', 'high')),
    role_id INTEGER NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT NULL
);

CREATE TABLE alert_channels (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    snoozed_until REAL NULL,
    steps INTEGER NOT NULL DEFAULT 0 CHECK (steps >= 0),
    last_alert_at REAL NULL,
    acknowledged_at REAL NULL,
    PRIMARY KEY (guild_id, channel_id)
) WITHOUT ROWID;

CREATE TABLE alert_buckets (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    bucket_start INTEGER NOT NULL,
    messages INTEGER NOT NULL DEFAULT 0,
    watched INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, channel_id, bucket_start)
) WITHOUT ROWID;
CREATE INDEX alert_buckets_guild_time ON alert_buckets (guild_id, bucket_start);
