-- 1: per-channel settings (PostgreSQL's types: BIGINT ids, BOOLEAN flags, DOUBLE PRECISION times and sums).
CREATE TABLE channel_settings (
    guild_id BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    analysis BOOLEAN NOT NULL DEFAULT TRUE,
    reactions BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (guild_id, channel_id)
);
