-- 8: mood alerts (bot/alerts/, bot/cogs/alerts.py). alert_settings: a guild's alerts (the moderators' channel, the
-- watched emotions comma-separated, the sensitivity, the role to mention, on or off and why it went off).
-- alert_channels: per watched channel, its snooze, how many times moderators pressed "Less sensitive", its last
-- alert (the claim: one alert per cooldown across processes) and when that alert was acknowledged; no user id (who
-- acknowledged is written in the alert message on Discord, not here). alert_buckets: the counter the detector
-- tests, per channel and hour while alerts are on: the messages analysed, and how many of them carried at least one
-- of the guild's watched emotions at the time (labels overlap, so this cannot be derived from emotion_buckets).
CREATE TABLE alert_settings (
    guild_id BIGINT PRIMARY KEY,
    mod_channel_id BIGINT NOT NULL,
    labels TEXT NOT NULL CHECK (labels <> ''),
    sensitivity TEXT NOT NULL CHECK (sensitivity IN ('low', 'medium', 'high')),
    role_id BIGINT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason TEXT NULL
);

CREATE TABLE alert_channels (
    guild_id BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    snoozed_until DOUBLE PRECISION NULL,
    steps INTEGER NOT NULL DEFAULT 0 CHECK (steps >= 0),
    last_alert_at DOUBLE PRECISION NULL,
    acknowledged_at DOUBLE PRECISION NULL,
    PRIMARY KEY (guild_id, channel_id)
);

CREATE TABLE alert_buckets (
    guild_id BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    bucket_start BIGINT NOT NULL,
    messages BIGINT NOT NULL DEFAULT 0,
    watched BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, channel_id, bucket_start)
);
CREATE INDEX alert_buckets_guild_time ON alert_buckets (guild_id, bucket_start);
