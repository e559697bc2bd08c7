-- 1: per-channel settings, the first thing the bot needs.
CREATE TABLE channel_settings (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    analysis INTEGER NOT NULL DEFAULT 1,
    reactions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, channel_id)
);
