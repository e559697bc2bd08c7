-- 6: members who opted out with `/privacy choice:opt-out`: the keyed hash of their user id (bot/store/member_key.py,
-- per user across all servers), until they opt in again. No guild deletion reaches it: it records the member's own
-- choice. Every change adds one to the single counter in opt_out_changes, which each process polls to know when to
-- read the opt-outs again (bot/store/interface.py).
CREATE TABLE opt_outs (
    digest TEXT PRIMARY KEY,
    opted_out_at REAL NOT NULL
);

CREATE TABLE opt_out_changes (
    version INTEGER NOT NULL
);
INSERT INTO opt_out_changes (version) VALUES (0);
