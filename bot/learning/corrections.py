"""Community corrections, the parts the cogs share: the **Not quite?** button under every reading, the emotion
picker it opens, the admins' report and what `/moodring retrain` shows the owner before it trains (the per-member
limit is bot/limits.py's).

The button is one persistent component (`NOT_QUITE_ID`, registered once with `bot.add_view` by
bot/cogs/corrections.py), so it works on answers sent before a restart. It carries no state: a press finds the
reading from the answer it sits under (bot/cogs/corrections.py, `reading_source`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot.learning.community_data import ExportPlan
from bot.render import count_of, emoji_for
from bot.replies import SOMETHING_WENT_WRONG, send_ephemeral
from bot.store import Correction, CorrectionOutcome

if TYPE_CHECKING:
    from model import EmotionClassifier, EmotionScore

log = logging.getLogger(__name__)

NOT_QUITE_ID = "moodring:not-quite"
PICK_CLOSEST_ID = "moodring:correction:closest"
PICK_OTHERS_ID = "moodring:correction:others"
SEND_ID = "moodring:correction:send"
MAX_CHOICES = 3
SERVERS_SHOWN = 10  # servers named in the retrain summary; the rest are counted
LARGEST_CONTRIBUTORS = 3  # members whose shares the retrain summary shows (never who they are)
SELECT_OPTIONS = 25  # Discord's limit per select: the 28 emotions are split over two
PICKER_TIMEOUT = 600.0  # seconds the member has to pick (the picker is ephemeral and short-lived)

CORRECTIONS_OFF = (
    "Thanks for wanting to help! This server doesn't collect corrections. A server admin can turn them on with "
    "`/moodring corrections action:enable` (`/privacy` says what is kept)."
)
EXPIRED = "That reading is too old to correct."
ALREADY_CORRECTED = "You've already corrected this reading. Thank you!"
PICK = (
    "Which emotions fit better? Pick one to three (the first list holds the ones I scored highest, in order), "
    "then press **Send**."
)
PICK_ONE_TO_THREE = "Pick one to three emotions, then press **Send**."
THANKS = "Thank you! I'll learn from your correction: {labels}."
SLOW_DOWN = "Slow down, please: you've sent a lot of corrections. Try again in {seconds} s."


def model_version(classifier: EmotionClassifier | None) -> str:
    """What identifies the serving model in a correction: when it was trained."""
    if classifier is None:
        return "unknown"
    return classifier.metadata.created_at or "unknown"


class NotQuiteView(discord.ui.View):
    """The **Not quite?** button. Registered once, persistent, with `on_press` (bot/cogs/corrections.py); the copies
    attached to readings (`not_quite_view`) only carry the component to Discord."""

    def __init__(self, on_press: Callable[[discord.Interaction], Awaitable[None]] | None = None) -> None:
        super().__init__(timeout=None)
        self.on_press = on_press

    @discord.ui.button(label="Not quite?", style=discord.ButtonStyle.secondary, custom_id=NOT_QUITE_ID)
    async def not_quite(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        if self.on_press is not None:
            await self.on_press(interaction)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        await _failed(interaction, error)


def not_quite_view() -> discord.ui.View:
    """The button to attach to a reading.

    The view is stopped before it is sent, so discord.py does not keep one view per answer in memory for ever:
    presses are handled by the single persistent view registered with `bot.add_view`, by custom id.
    """
    view = NotQuiteView()
    view.stop()
    return view


async def _failed(interaction: discord.Interaction, error: Exception) -> None:
    log.error("a correction failed", exc_info=error)
    await send_ephemeral(interaction, SOMETHING_WENT_WRONG)


@dataclass(frozen=True)
class PendingCorrection:
    """A reading a member pressed **Not quite?** under: what the store needs besides the chosen labels."""

    guild_id: int
    channel_id: int
    message_key: str  # "m<message id>" for a message, "a<answer id>" for `/emotion` text
    text: str
    model_labels: tuple[str, ...]  # the model's top labels, ranked
    model_version: str


Save = Callable[[PendingCorrection, int, tuple[str, ...]], Awaitable[CorrectionOutcome]]


class CorrectionPicker(discord.ui.View):
    """The ephemeral picker: the 28 emotions in two selects, ordered by the model's scores, then **Send**."""

    def __init__(self, pending: PendingCorrection, ranked: Sequence[EmotionScore], member_id: int, save: Save) -> None:
        super().__init__(timeout=PICKER_TIMEOUT)
        self.pending = pending
        self.member_id = member_id
        self.save = save
        half = (len(ranked) + 1) // 2
        assert half <= SELECT_OPTIONS
        self.closest = self._select(PICK_CLOSEST_ID, "Closest, by my scores", ranked[:half])
        self.others = self._select(PICK_OTHERS_ID, "More emotions", ranked[half:])
        send = discord.ui.Button(label="Send", style=discord.ButtonStyle.primary, custom_id=SEND_ID)
        send.callback = self.send
        self.add_item(send)

    def _select(self, custom_id: str, placeholder: str, scores: Sequence[EmotionScore]) -> discord.ui.Select:
        options = [
            discord.SelectOption(label=s.label, value=s.label, emoji=emoji_for(s.label), description=f"{s.score:.0%}")
            for s in scores
        ]
        select = discord.ui.Select(
            custom_id=custom_id,
            placeholder=placeholder,
            min_values=0,
            max_values=min(MAX_CHOICES, len(options)),
            options=options,
        )
        select.callback = self.picked
        self.add_item(select)
        return select

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.member_id

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        await _failed(interaction, error)

    async def picked(self, interaction: discord.Interaction) -> None:
        """A select changed: remember it (discord.py keeps its `values`), nothing to show."""
        await interaction.response.defer()

    @property
    def chosen(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.closest.values, *self.others.values]))

    async def send(self, interaction: discord.Interaction) -> None:
        chosen = self.chosen
        if not 1 <= len(chosen) <= MAX_CHOICES:
            await send_ephemeral(interaction, PICK_ONE_TO_THREE)
            return
        outcome = await self.save(self.pending, self.member_id, chosen)
        if outcome == "stored":
            content = THANKS.format(labels=", ".join(f"{emoji_for(label)} **{label}**" for label in chosen))
        elif outcome == "duplicate":
            content = ALREADY_CORRECTED
        else:
            content = CORRECTIONS_OFF
        await interaction.response.edit_message(content=content, view=None)
        self.stop()


def corrections_report(corrections: Sequence[Correction], enabled: bool, top: int = 5) -> discord.Embed:
    """How many corrections, which emotions members chose, and where they disagree with the model most."""
    chosen = Counter(label for c in corrections for label in c.labels)
    disagreements = Counter(
        (c.model_labels[0], label)
        for c in corrections
        if c.model_labels
        for label in c.labels
        if label != c.model_labels[0]
    )
    embed = discord.Embed(
        title="Community corrections",
        description=f"Collecting corrections: **{'on' if enabled else 'off'}**. {len(corrections)} kept.",
        colour=0x5865F2,
    )
    embed.add_field(
        name="Emotions members chose",
        value="\n".join(f"{emoji_for(label)} **{label}**: {count}" for label, count in chosen.most_common(10))[:1024]
        or "None yet.",
        inline=False,
    )
    embed.add_field(
        name="Most corrected",
        value="\n".join(
            f"model said **{said}**, members said **{instead}** ({count}×)"
            for (said, instead), count in disagreements.most_common(top)
        )[:1024]
        or "No disagreements yet.",
        inline=False,
    )
    return embed


def retrain_summary(plan: ExportPlan | None, server_name: Callable[[int], str]) -> str:
    """What the corrections hold, for the owner to confirm a retrain: rows, rows per server (`server_name(id)`) and
    the largest contributors' shares, never a member's id or hash; or that there are none to use."""
    if plan is None or not plan.rows:
        why = (
            "no server that collects them has any, or no model names their labels yet"
            if plan is None
            else f"of {count_of(plan.corrections, 'correction')}, no text has a label that two members chose"
        )
        return f"**No usable corrections** ({why}). Train on GoEmotions alone?"
    summary = plan.summary()
    servers = plan.rows_per_server().most_common()
    shown = ", ".join(f"**{server_name(guild_id)}** {count}" for guild_id, count in servers[:SERVERS_SHOWN])
    if len(servers) > SERVERS_SHOWN:
        shown += f" and {count_of(len(servers) - SERVERS_SHOWN, 'more server')}"
    shares = ", ".join(f"{share:.0%}" for share in plan.largest_shares(LARGEST_CONTRIBUTORS))
    return (
        f"**Before retraining**, the corrections make **{count_of(summary.rows, 'row')}** "
        f"({summary.train_rows} to train on, {summary.dev_rows} held out as community dev) from "
        f"{count_of(plan.corrections, 'correction')} counted by members; left out: "
        f"{count_of(plan.dropped, 'text')} without a label two members chose, and "
        f"{count_of(plan.capped, 'row')} over a member's or a server's cap.\n"
        f"Rows per server: {shown}.\n"
        f"The largest contributors back {shares} of the rows (every row has two members or more).\n"
        "Train on them and GoEmotions? The corrections are read again when you press **Train**."
    )
