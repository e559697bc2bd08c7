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
            "settings (channels, summaries, alerts) and, per channel and hour, how many messages were analysed, how "
            "many showed each emotion and the sum of the model's scores, in the bot's own database (SQLite or "
            "PostgreSQL).",
        ),
        (
            "Corrections (only if an admin turns them on)",
            "for a **Not quite?** answer, moodring keeps the text the model read (mentions masked), the emotions "
            "chosen, the model's top emotions and version, the server, channel and time, to retrain it. No "
            "user id: two hashes keyed with a secret outside the database stop a second correction of a message and "
            "count members (an emotion trains only when two chose it; members and servers are capped); both go "
            "after the retention period. A retrain's copy is deleted when the retrain ends (or at the next start, if "
            "killed). The only place message text is kept; off by default (`/moodring corrections`).",
        ),
        (
            "Mood alerts (if an admin sets them up)",
            "per channel and hour, how many analysed messages showed a watched emotion; per channel, its snooze, "
            "sensitivity and alert times. Alerts quote no text; who pressed a button shows only in the alert.",
        ),
        (
            "Opt-out",
            "`/privacy choice:opt-out` stops all reading of your messages, everywhere; a keyed hash of your user id "
            "records it until you opt in (server deletions keep it).",
        ),
        (
            "What it never stores",
            "user ids or names, or the text of messages nobody corrected: messages are classified in memory and "
            "forgotten. The flood limits keep who asked in memory, for one window.",
        ),
        (
            "How long",
            f"statistics (alert counts too) older than {count_of(retention_days, 'day')} are deleted by a daily "
            "prune, as are the correction hashes (`/moodring retention`); corrections stay until an admin deletes "
            "them.",
        ),
        (
            "How to delete it",
            "admins: `/moodring forget` deletes this server's statistics and corrections, `/moodring corrections "
            "action:clear` the corrections alone; `/moodring channel analysis:false` stops analysis in a channel. "
            "When the bot is removed from a server, everything of that server is deleted.",
        ),
    ]


def privacy_statement(retention_days: int) -> str:
    """The statement as Markdown that reads the same in Discord and on GitHub: one bullet per section."""
    return "\n".join(f"- **{heading}**: {text}" for heading, text in privacy_sections(retention_days))
