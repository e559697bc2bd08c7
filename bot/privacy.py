"""The privacy statement: one text, answered by `/privacy` and printed in the README (a test keeps them equal).

Red-DiscordBot's idea of a data statement: what is stored, for how long, and how it is deleted. Add a kind of
data by adding a section; the README must then be updated with `privacy_statement(DEFAULT_RETENTION_DAYS)`.
"""

from __future__ import annotations


def privacy_sections(retention_days: int) -> list[tuple[str, str]]:
    """(heading, text) pairs, in order; `retention_days` is the server's statistics retention."""
    return [
        (
            "What moodring stores",
            "for each channel, whether analysis and auto-reactions are on, and mood-summary schedules; and mood "
            "statistics: for each channel and hour, how many messages were analysed, how many showed each "
            "emotion, and the sum of the model's scores. All of it is kept in one SQLite file on the bot's host.",
        ),
        (
            "What it never stores",
            "message text, user ids or names. Messages are classified in memory and forgotten; they are never "
            "used to train the model (it learns from the public GoEmotions data only). The flood limits remember "
            "who asked for a reading in memory only, for one limit window.",
        ),
        (
            "How long",
            f"statistics older than {retention_days} days are deleted by a daily prune "
            "(admins: `/moodring retention`).",
        ),
        (
            "How to delete it",
            "admins can delete all of this server's statistics with `/moodring forget`, or stop analysis in a "
            "channel with `/moodring channel analysis:false`. When the bot is removed from a server, that "
            "server's statistics, settings and schedules are deleted.",
        ),
    ]


def privacy_statement(retention_days: int) -> str:
    """The statement as Markdown that reads the same in Discord and on GitHub: one bullet per section."""
    return "\n".join(f"- **{heading}**: {text}" for heading, text in privacy_sections(retention_days))
