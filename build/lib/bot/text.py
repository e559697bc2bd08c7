"""Turn Discord message text into the kind of text the model was trained on (Reddit comments).

Every path that classifies user text goes through `prepare_text`.
"""

from __future__ import annotations

import re

MODEL_MAX_CHARS = 2000  # far beyond the model's 64 tokens; keeps tokenizer work bounded

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"<?https?://[^\s>]+>?", re.IGNORECASE)
_USER_OR_ROLE = re.compile(r"<@[!&]?\d+>")
_CHANNEL = re.compile(r"<#\d+>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_TIMESTAMP = re.compile(r"<t:-?\d+(:[tTdDfFR])?>")
_SLASH_MENTION = re.compile(r"</([\w -]+):\d+>")
_EVERYONE = re.compile(r"@(everyone|here)\b")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def prepare_text(content: str, max_chars: int = MODEL_MAX_CHARS) -> str:
    """Mask mentions as `[NAME]` (GoEmotions' own mask), keep custom emoji names, drop URLs and code.

    Returns "" when nothing worth classifying is left; callers skip such messages.
    """
    text = _CODE_BLOCK.sub(" ", content)
    text = _INLINE_CODE.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _USER_OR_ROLE.sub("[NAME]", text)
    text = _EVERYONE.sub("[NAME]", text)
    text = _CHANNEL.sub(" ", text)
    text = _TIMESTAMP.sub(" ", text)
    text = _SLASH_MENTION.sub(r"/\1", text)
    text = _CUSTOM_EMOJI.sub(lambda m: m.group(1).replace("_", " "), text)
    text = _BLANK_LINES.sub("\n", _SPACES.sub(" ", text)).strip()
    if not any(ch.isalnum() or ord(ch) > 0x2000 for ch in text.replace("[NAME]", "")):
        return ""  # only masks and punctuation left
    return text[:max_chars]


def shorten(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
