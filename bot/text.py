"""Display helpers for text the bot shows back. What the model reads is prepared in model/text_preparation.py."""

from __future__ import annotations


def shorten(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
