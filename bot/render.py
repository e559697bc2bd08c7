"""How predictions look in Discord: one emoji per label, embeds and their plain-text fallback."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord

from bot.text import shorten
from model import Prediction

if TYPE_CHECKING:
    from model import EmotionClassifier

EMOJI = {
    "admiration": "🤩",
    "amusement": "😂",
    "anger": "😠",
    "annoyance": "😒",
    "approval": "👍",
    "caring": "🤗",
    "confusion": "😕",
    "curiosity": "🤔",
    "desire": "😍",
    "disappointment": "😞",
    "disapproval": "👎",
    "disgust": "🤢",
    "embarrassment": "😳",
    "excitement": "🎉",
    "fear": "😨",
    "gratitude": "🙏",
    "grief": "😢",
    "joy": "😄",
    "love": "❤️",
    "nervousness": "😬",
    "optimism": "🌈",
    "pride": "🦁",
    "realization": "💡",
    "relief": "😌",
    "remorse": "😔",
    "sadness": "😭",
    "surprise": "😮",
    "neutral": "😐",
}

SENTIMENT_COLOURS = {"positive": 0x57F287, "negative": 0xED4245, "ambiguous": 0xFEE75C, "neutral": 0x99AAB5}
BAR_CELLS = 12
QUOTE_LIMIT = 300  # characters of the analysed text shown back


def emoji_for(label: str) -> str:
    return EMOJI.get(label, "❔")


def score_bar(score: float) -> str:
    filled = round(max(0.0, min(1.0, score)) * BAR_CELLS)
    return "█" * filled + "░" * (BAR_CELLS - filled)


def emotion_lines(prediction: Prediction) -> list[str]:
    """One line per label of `prediction.top`, in its order (the prediction's ✅ labels first, each group by
    probability: `Prediction`): the bar and the percentage are the calibrated probability, the ✅ is the
    threshold's decision on the raw score."""
    return [
        f"{'✅' if item.above_threshold else '▫️'} {emoji_for(item.label)} **{item.label}** "
        f"`{score_bar(item.probability)}` {item.probability:.0%}"
        for item in prediction.top
    ]


def emotion_embed(
    prediction: Prediction, title: str = "Emotions", jump_url: str | None = None, model_note: str | None = None
) -> discord.Embed:
    """Top emotions with score bars, a ✅ on those above their threshold, Ekman group and sentiment; `model_note`
    (which model answered, when it is not the full one) ends the footer."""
    sentiment = prediction.sentiment[0] if prediction.sentiment else "neutral"
    embed = discord.Embed(
        title=shorten(title, 256),
        description=f"> {shorten(_one_line(prediction.text), QUOTE_LIMIT)}",
        colour=SENTIMENT_COLOURS.get(sentiment, SENTIMENT_COLOURS["neutral"]),
        url=jump_url,
    )
    embed.add_field(name="Top emotions", value="\n".join(emotion_lines(prediction))[:1024], inline=False)
    embed.add_field(name="Ekman group", value=", ".join(prediction.ekman) or "—", inline=True)
    embed.add_field(name="Sentiment", value=", ".join(prediction.sentiment) or "—", inline=True)
    footer = "✅ above the label's threshold · GoEmotions SqueezeBERT"
    embed.set_footer(text=f"{footer} · {model_note}" if model_note else footer)
    return embed


def emotion_text(prediction: Prediction, model_note: str | None = None) -> str:
    """The embed's content as plain text, for channels where the bot cannot embed links."""
    lines = [f"> {shorten(_one_line(prediction.text), QUOTE_LIMIT)}", *emotion_lines(prediction)]
    lines.append(f"Ekman: {', '.join(prediction.ekman) or '—'} · Sentiment: {', '.join(prediction.sentiment) or '—'}")
    if model_note:
        lines.append(f"({model_note})")
    return shorten("\n".join(lines), 2000)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def count_of(count: int, noun: str) -> str:
    """'1 day', '30 days' (for nouns whose plural takes an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def readable_time(iso: str) -> str:
    """An ISO 8601 time (the model metadata's `created_at`) as '4 Dec 2026, 18:33 UTC'; anything else as it is."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def model_description(classifier: EmotionClassifier | None) -> str:
    """Which model is serving: when it was trained, its dev macro-F1 and the backend. An admin can tell a swapped-in
    model from the one before it (each process of a cluster answers for its own)."""
    if classifier is None:
        return "not trained yet"
    metadata = classifier.metadata
    metrics = metadata.dev_metrics_by_backend.get(classifier.backend) or metadata.dev_metrics
    parts = [f"trained {readable_time(metadata.created_at) if metadata.created_at else 'at an unknown time'}"]
    if metadata.is_starter:
        parts.insert(0, "starter model")
    if isinstance(metrics.get("macro_f1"), int | float):
        parts.append(f"dev macro-F1 {metrics['macro_f1']:.3f}")
    parts.append(f"served with {classifier.backend}")
    return " · ".join(parts)
