"""What members see: `/emotion`, the "Analyze emotions" context menu, reply-mentions, auto-reactions. Every
reading carries a **Not quite?** button (bot/cogs/corrections.py).

On-demand readings (`/emotion`, the "Analyze emotions" menu, reply-mentions) share one set of flood limits, per
member and per channel, checked before anything else (no database read, no fetch, no inference for a refused one);
each limit's window gets at most one "slow down".

A member who opted out (`/privacy`) is never read: their messages get no automatic analysis (so no statistics and no
reactions), and the menu and reply-mentions refuse, politely, to read a message they wrote. This is checked from the
store's memory before any other work on the message (after the flood limits); `/emotion` reads what they type into it,
since they asked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import MoodringBot
from bot.inference import InferenceBusy, InferenceFailed, NoModel
from bot.learning.corrections import not_quite_view
from bot.limits import RateLimits
from bot.reactions import ReactionQueue
from bot.render import emoji_for, emotion_embed, emotion_text
from bot.replies import BUSY, NO_MENTIONS, SOMETHING_WENT_WRONG, reading_or_apology, send_ephemeral
from model import Prediction
from model.text_preparation import clean_markup

log = logging.getLogger(__name__)

NOTHING_TO_READ = "There's no text there for me to read (links, code, attachments and stickers are skipped)."
MEMBER_OPTED_OUT = "This member has opted out of moodring (`/privacy`), so I don't read their messages. Sorry!"
#: For a `Prediction.unreadable` text: a neutral reading would be a guess about characters the model cannot read.
UNREADABLE = "I can't read that message: it has no words or emoji I know."
ANSWER_TIMEOUT = 2.5  # seconds; Discord drops interactions not answered within 3
SLOW_DOWN = {
    "user": "Slow down, please: you've asked me for a lot of readings. Try again in {seconds} s.",
    "channel": "Slow down, please: this channel has asked me for a lot of readings. Try again in {seconds} s.",
}


class Emotions(commands.Cog):
    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot
        self.reactions = ReactionQueue(bot.counters)
        config = bot.config
        self.flood_limits = RateLimits(
            config.reading_window_s,
            lambda: bot.clock(),
            user=config.readings_per_user,
            channel=config.readings_per_channel,
        )
        self.context_menu = app_commands.ContextMenu(name="Analyze emotions", callback=self.analyze_message)
        self.bot.tree.add_command(self.context_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.context_menu.name, type=self.context_menu.type)
        await self.reactions.close()

    async def classify(self, text: str) -> Prediction:
        return await self.bot.inference.classify(text, timeout=ANSWER_TIMEOUT)

    async def within_flood_limits(self, user_id: int, channel_id: int, warn: Callable[[str], Awaitable[None]]) -> bool:
        """True (and counted against the limits) when this reading may go ahead; otherwise `warn` is awaited
        with a "slow down" once per window, and later refusals in that window stay silent."""
        refusal = self.flood_limits.check(user=user_id, channel=channel_id)
        if refusal is None:
            return True
        self.bot.counters["readings_refused"] += 1
        if refusal.warn:
            self.bot.counters["slow_downs_sent"] += 1
            await warn(SLOW_DOWN[refusal.scope].format(seconds=math.ceil(refusal.retry_after)))
        return False

    @app_commands.command(name="emotion", description="Read the emotions in a piece of text")
    @app_commands.describe(text="What should I read?", ephemeral="Only you see the answer")
    async def emotion(
        self, interaction: discord.Interaction, text: app_commands.Range[str, 1, 2000], ephemeral: bool = False
    ) -> None:
        if await self.within_flood_limits(
            interaction.user.id, interaction.channel_id or 0, lambda warning: send_ephemeral(interaction, warning)
        ):
            await self.answer(interaction, text, title="Emotions", ephemeral=ephemeral)

    def opted_out(self, author: discord.abc.User) -> bool:
        """Whether the author of a message opted out of being read (from the store's memory: no database read)."""
        store = self.bot.store
        return store is not None and store.is_opted_out(author.id)

    async def analyze_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        if not await self.within_flood_limits(
            interaction.user.id, interaction.channel_id or 0, lambda warning: send_ephemeral(interaction, warning)
        ):
            return
        if self.opted_out(message.author):
            self.bot.counters["readings_opted_out"] += 1
            await send_ephemeral(interaction, MEMBER_OPTED_OUT)
            return
        title = f"Emotions in {message.author.display_name}'s message"
        await self.answer(interaction, message.content, title=title, ephemeral=True, jump_url=message.jump_url)

    async def answer(
        self, interaction: discord.Interaction, raw: str, *, title: str, ephemeral: bool, jump_url: str | None = None
    ) -> None:
        text = clean_markup(raw)
        if not text:
            await send_ephemeral(interaction, NOTHING_TO_READ)
            return
        prediction = await reading_or_apology(interaction, self.classify(text), self.bot.no_model_message)
        if prediction is None:
            return
        if prediction.unreadable:
            await send_ephemeral(interaction, UNREADABLE)
            return
        embed = emotion_embed(prediction, title=title, jump_url=jump_url, model_note=self.bot.model_note())
        await interaction.response.send_message(
            embed=embed, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS, view=not_quite_view()
        )

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None or message.guild is None:
            return
        self.bot.counters["messages_seen"] += 1
        if message.reference is not None and self.mentions_me(message):
            self.bot.counters["reply_mentions"] += 1
            await self.analyze_reply(message)
            return
        if self.bot.store is None:
            return
        if self.opted_out(message.author):  # before anything else is read or written for it
            self.bot.counters["skipped_opted_out"] += 1
            return
        settings = await self.bot.store.channel_settings(message.guild.id, message.channel.id)
        if not settings.analysis:
            self.bot.counters["skipped_analysis_off"] += 1
            return
        text = clean_markup(message.content)
        if not text:
            self.bot.counters["skipped_empty"] += 1
            return
        try:
            prediction = await self.bot.inference.classify(text, top_k=None)
        except NoModel:
            self.bot.counters["skipped_no_model"] += 1
            return
        except InferenceBusy:
            self.bot.counters["skipped_busy"] += 1
            return
        except TimeoutError:
            self.bot.counters["analysis_timed_out"] += 1
            return
        except Exception:  # the inference service has logged the failed batch
            self.bot.counters["analysis_failed"] += 1
            return
        if prediction.unreadable:  # neither counted in the statistics nor reacted to
            self.bot.counters["skipped_unreadable"] += 1
            return
        self.bot.counters["analyzed"] += 1
        # Statistics count the emotions above their thresholds (the top one when none is).
        shown = [s for s in prediction.top if s.above_threshold] or prediction.top[:1]  # top holds all 28
        self.bot.store.record(
            message.guild.id, message.channel.id, [(s.label, s.score) for s in shown], at=self.bot.clock()
        )
        if settings.reactions:
            self.react(message, prediction)

    def mentions_me(self, message: discord.Message) -> bool:
        """The bot is @mentioned in the text itself (its user or its own managed role).

        Not `Member.mentioned_in`: that is also true for @everyone/@here, for any role the bot has, and for
        a plain reply to one of the bot's messages (Discord puts the replied-to author in `mentions`).
        """
        me = message.guild.me if message.guild is not None else None
        if me is None:
            return False
        if me.id in message.raw_mentions:
            return True
        return any(role.id in message.raw_role_mentions and role.is_bot_managed() for role in me.roles)

    def react(self, message: discord.Message, prediction: Prediction) -> None:
        emojis = [emoji_for(label) for label in prediction.labels[: self.bot.config.max_reactions]]
        if not emojis:
            return
        if not message.channel.permissions_for(message.guild.me).add_reactions:
            self.bot.counters["reactions_forbidden"] += 1
            return
        self.reactions.submit(message, emojis)

    async def analyze_reply(self, message: discord.Message) -> None:
        """Someone replied to a message and mentioned the bot: read the replied-to message."""
        if not await self.within_flood_limits(
            message.author.id, message.channel.id, lambda warning: self.reply(message, content=warning)
        ):
            return
        reference = message.reference
        target = reference.resolved if isinstance(reference.resolved, discord.Message) else None
        try:
            if target is None and reference.message_id is not None:
                target = await message.channel.fetch_message(reference.message_id)
        except discord.NotFound:
            await self.reply(message, content="I couldn't find the message you replied to. Was it deleted?")
            return
        except discord.Forbidden:
            await self.reply(message, content="I can't read that message (I need **Read Message History**).")
            return
        if target is None:
            await self.reply(message, content="I couldn't find the message you replied to.")
            return
        if self.opted_out(target.author):
            self.bot.counters["readings_opted_out"] += 1
            await self.reply(message, content=MEMBER_OPTED_OUT)
            return
        text = clean_markup(target.content)
        if not text:
            await self.reply(message, content=NOTHING_TO_READ)
            return
        try:
            prediction = await self.classify(text)
        except NoModel:
            await self.reply(message, content=self.bot.no_model_message())
            return
        except (InferenceBusy, TimeoutError):
            await self.reply(message, content=BUSY)
            return
        except InferenceFailed:
            await self.reply(message, content=SOMETHING_WENT_WRONG)
            return
        if prediction.unreadable:
            await self.reply(message, content=UNREADABLE)
            return
        title = f"Emotions in {target.author.display_name}'s message"
        if message.channel.permissions_for(message.guild.me).embed_links:
            embed = emotion_embed(prediction, title=title, jump_url=target.jump_url, model_note=self.bot.model_note())
            await self.reply(message, embed=embed, view=not_quite_view())
        else:
            await self.reply(message, content=emotion_text(prediction, self.bot.model_note()), view=not_quite_view())

    async def reply(self, message: discord.Message, **kwargs) -> None:
        try:
            await message.reply(mention_author=False, allowed_mentions=NO_MENTIONS, **kwargs)
        except discord.Forbidden:
            self.bot.counters["replies_forbidden"] += 1
            log.warning("missing permission to reply in channel %s", message.channel.id)
        except discord.HTTPException as error:
            log.warning("could not reply in channel %s: %s", message.channel.id, error)


async def setup(bot: MoodringBot) -> None:
    await bot.add_cog(Emotions(bot))
