-- 3: community corrections (opt-in per guild), the only table with message text, and the salt of their hashes.
ALTER TABLE guild_settings ADD COLUMN corrections INTEGER NOT NULL DEFAULT 0;

CREATE TABLE corrections (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    labels TEXT NOT NULL,
    model_labels TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at REAL NOT NULL,
    dedup_hash TEXT NULL UNIQUE
);
CREATE INDEX corrections_guild_time ON corrections (guild_id, created_at);

CREATE TABLE store_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
INSERT INTO store_secrets (name, value) VALUES ('corrections_salt', randomblob(32));
