"""**Not quite?**: a member corrects a reading. The button, the picker and the report are in
bot/learning/corrections.py; the admins' `/moodring corrections` is in bot/cogs/admin.py.

A press finds the reading from the answer the button sits under, so the button keeps working after a restart:
the embed's link names the message that was read (the "Analyze emotions" menu, reply-mentions), a plain-text
answer replies to the question that replied to it, and a `/emotion` answer quotes the whole text it read (keyed by
that text: a member corrects a text they type once, however many answers they ask for). The
model reads the text again to order the emotions in the picker. Nothing is stored until the member sends a
choice, and only while the server collects corrections; a message whose author opted out (`/privacy`) takes none.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re

import discord
from discord.ext import commands

from bot.app import MoodringBot
from bot.cogs.emotions import MEMBER_OPTED_OUT, NOTHING_TO_READ, UNREADABLE
from bot.learning.corrections import (
    ALREADY_CORRECTED,
    CORRECTIONS_OFF,
    EXPIRED,
    PICK,
    SLOW_DOWN,
    CorrectionPicker,
    NotQuiteView,
    PendingCorrection,
    model_version,
)
from bot.limits import RateLimits
from bot.replies import NO_MENTIONS, reading_or_apology, send_ephemeral
from bot.store import Correction, CorrectionOutcome
from model.text_preparation import clean_markup

log = logging.getLogger(__name__)

JUMP_URL = re.compile(r"/channels/(\d+)/(\d+)/(\d+)$")
GONE = "I can't find the message that was read any more. Was it deleted?"
CANT_READ = "I can't read that message any more, so I can't take a correction for it."
QUOTED_IN_PART = "That text was too long to show in full, so I can't take a correction for it."
MODEL_LABELS = 3  # the model's top labels kept with a correction


class Unreadable(Exception):
    """The reading under the button cannot be found again; the message says why, for the member."""


class Corrections(commands.Cog):
    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot
        config = bot.config
        self.limit = RateLimits(config.corrections_window_s, lambda: bot.clock(), member=config.corrections_per_member)
        self.button = NotQuiteView(self.not_quite)

    async def cog_load(self) -> None:
        self.bot.add_view(self.button)  # persistent: answers sent before a restart keep working

    async def cog_unload(self) -> None:
        self.button.stop()  # removes it from discord.py's view store

    async def not_quite(self, interaction: discord.Interaction) -> None:
        store = self.bot.store
        answer = interaction.message
        if interaction.guild_id is None or answer is None or store is None:
            await send_ephemeral(interaction, "Corrections only work in a server.")
            return
        guild_id = interaction.guild_id
        # The limit first: a flood of presses costs no database read (nor a fetch or an inference).
        refusal = self.limit.check(member=interaction.user.id)
        if refusal is not None:  # every refusal is told (warn or not): the press must be answered anyway
            self.bot.counters["corrections_refused"] += 1
            await send_ephemeral(interaction, SLOW_DOWN.format(seconds=math.ceil(refusal.retry_after)))
            return
        if not await store.corrections_enabled(guild_id):
            self.bot.counters["corrections_off"] += 1
            await send_ephemeral(interaction, CORRECTIONS_OFF)
            return
        if self.bot.clock() - answer.created_at.timestamp() > 86400 * await store.retention_days(guild_id):
            await send_ephemeral(interaction, EXPIRED)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # fetching and reading take a moment
        try:
            message_key, text = await self.reading_source(interaction)
        except Unreadable as reason:
            await send_ephemeral(interaction, str(reason))
            return
        if await store.has_corrected(guild_id, message_key, interaction.user.id):
            await send_ephemeral(interaction, ALREADY_CORRECTED)
            return
        reading = self.bot.inference.classify(text, top_k=None)
        prediction = await reading_or_apology(interaction, reading, self.bot.no_model_message)
        if prediction is None:
            return
        if prediction.unreadable:  # the model now serving reads the text differently from the one that answered
            await send_ephemeral(interaction, UNREADABLE)
            return
        pending = PendingCorrection(
            guild_id=guild_id,
            channel_id=interaction.channel_id or 0,
            message_key=message_key,
            text=text,
            model_labels=tuple(prediction.labels[:MODEL_LABELS]) or (prediction.top[0].label,),
            model_version=model_version(self.bot.inference.classifier),
        )
        picker = CorrectionPicker(pending, prediction.top, interaction.user.id, self.save)
        await interaction.followup.send(PICK, view=picker, ephemeral=True, allowed_mentions=NO_MENTIONS, wait=True)

    async def save(self, pending: PendingCorrection, member_id: int, labels: tuple[str, ...]) -> CorrectionOutcome:
        correction = Correction(
            guild_id=pending.guild_id,
            channel_id=pending.channel_id,
            text=pending.text,
            labels=labels,
            model_labels=pending.model_labels,
            model_version=pending.model_version,
            created_at=self.bot.clock(),
        )
        outcome = await self.bot.store.add_correction(correction, message_key=pending.message_key, member_id=member_id)
        self.bot.counters[f"corrections_{outcome}"] += 1
        return outcome

    async def reading_source(self, interaction: discord.Interaction) -> tuple[str, str]:
        """(message key, text the model read) of the answer under the button; `Unreadable` when it is gone."""
        answer = interaction.message
        assert answer is not None
        embed = answer.embeds[0] if answer.embeds else None
        jump = JUMP_URL.search(embed.url or "") if embed is not None else None
        if jump is not None:  # "Analyze emotions" and reply-mentions: the embed links to the message read
            if int(jump[1]) != interaction.guild_id:
                raise Unreadable(GONE)
            channel_id, message_id = int(jump[2]), int(jump[3])
        elif answer.reference is not None and answer.reference.message_id is not None:  # a plain-text reply-mention
            question = await self.fetch(answer.reference.channel_id, answer.reference.message_id)
            if question.reference is None or question.reference.message_id is None:
                raise Unreadable(GONE)
            channel_id, message_id = question.reference.channel_id, question.reference.message_id
        else:  # `/emotion`: the embed quotes the text it read, whitespace collapsed (the same to the tokenizer)
            quote = (embed.description or "").removeprefix("> ") if embed is not None else ""
            if not quote or quote.endswith("…"):
                raise Unreadable(QUOTED_IN_PART)
            # Keyed by the text, not the answer: asking again about the same text gives no second correction.
            return f"t{hashlib.sha256(quote.encode()).hexdigest()}", quote
        read = await self.fetch(channel_id, message_id)
        if self.bot.store.is_opted_out(read.author.id):  # its author opted out since it was read: no correction
            raise Unreadable(MEMBER_OPTED_OUT)
        text = clean_markup(read.content)
        if not text:
            raise Unreadable(NOTHING_TO_READ)
        return f"m{message_id}", text

    async def fetch(self, channel_id: int, message_id: int) -> discord.Message:
        try:
            channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
            return await channel.fetch_message(message_id)  # type: ignore[union-attr]
        except discord.NotFound:
            raise Unreadable(GONE) from None
        except discord.Forbidden:
            raise Unreadable(CANT_READ) from None


async def setup(bot: MoodringBot) -> None:
    await bot.add_cog(Corrections(bot))
