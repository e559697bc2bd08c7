"""The privacy statement: one text, answered by `/privacy` and printed in docs/privacy.md (a test keeps them equal).

Red-DiscordBot's idea of a data statement: what is stored, for how long, and how it is deleted. Add a kind of
data by adding a section; docs/privacy.md must then be updated with `privacy_statement(DEFAULT_RETENTION_DAYS)`.
"""

from __future__ import annotations

from bot.render import count_of


def privacy_sections(retention_days: int) -> list[tuple[str, str]]:
    """(heading, text) pairs, in order; `retention_days` is the server's statistics retention."""
    return [
        (
            "What moodring stores",
            "channel settings (analysis, auto-reactions, mood-summary schedules) and mood statistics: per channel "
            "and hour, how many messages were analysed, how many showed each emotion, and the sum of the model's "
            "scores, all in the bot's own database (SQLite on its host, or its operator's PostgreSQL).",
        ),
        (
            "Corrections (only if an admin turns them on)",
            "when a member answers **Not quite?** under a reading, moodring keeps the text the model read (mentions "
            "masked), the emotions chosen, the model's top emotions and version, the server, channel and time, to "
            "retrain the model. No user id: two hashes keyed with a secret kept outside the database stop a member "
            "correcting a message twice and count members (an emotion trains only when two chose it; members and "
            "servers are capped); both are deleted after the retention period, when the correction stops training. "
            "A retrain's copy is deleted when the retrain ends (or at the next start, if killed). This is the only "
            "place message text is kept; it is off by default (`/moodring corrections`).",
        ),
        (
            "Opt-out",
            "`/privacy choice:opt-out` stops all reading of your messages, everywhere; a keyed hash of your user id "
            "records it until you opt in (server deletions keep it).",
        ),
        (
            "What it never stores",
            "user ids or names, or the text of messages nobody corrected: messages are classified in memory and "
            "forgotten. The flood limits keep who asked in memory only, for one limit window.",
        ),
        (
            "How long",
            f"statistics older than {count_of(retention_days, 'day')} are deleted by a daily prune, and so are the "
            "correction hashes (admins: `/moodring retention`); corrections stay until an admin deletes them.",
        ),
        (
            "How to delete it",
            "admins can delete all of this server's statistics and corrections with `/moodring forget`, the "
            "corrections alone with `/moodring corrections action:clear`, or stop analysis in a channel with "
            "`/moodring channel analysis:false`. When the bot is removed from a server, that server's "
            "statistics, corrections, settings and schedules are deleted.",
        ),
    ]


def privacy_statement(retention_days: int) -> str:
    """The statement as Markdown that reads the same in Discord and on GitHub: one bullet per section."""
    return "\n".join(f"- **{heading}**: {text}" for heading, text in privacy_sections(retention_days))
