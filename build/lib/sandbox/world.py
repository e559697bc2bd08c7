"""The Discord-side state the stand-in serves: users, guilds, channels, messages, commands."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import payloads as p
from .payloads import JSON
from .records import FILES_KEPT, INTERACTIONS_KEPT, MESSAGES_KEPT, REACTIONS_KEPT, RecentDict


@dataclass
class GuildRecord:
    """A guild and the objects inside it, keyed by snowflake."""

    id: int
    name: str
    owner_id: int
    roles: dict[int, JSON] = field(default_factory=dict)
    channels: dict[int, JSON] = field(default_factory=dict)
    members: dict[int, JSON] = field(default_factory=dict)
    joined_at: str = field(default_factory=p.timestamp)

    def payload(self) -> JSON:
        """The GUILD_CREATE payload for this guild as it is right now."""
        return p.guild(
            self.id,
            self.name,
            owner_id=self.owner_id,
            roles=[copy.deepcopy(r) for r in self.roles.values()],
            channels=[copy.deepcopy(c) for c in self.channels.values()],
            members=[copy.deepcopy(m) for m in self.members.values()],
            joined_at=self.joined_at,
        )

    def summary(self) -> JSON:
        """The fields the permission calculation needs."""
        return {"id": p.sid(self.id), "owner_id": p.sid(self.owner_id), "roles": list(self.roles.values())}


@dataclass
class InteractionRecord:
    """An interaction the stand-in created, and what the bot has done with it so far."""

    id: int
    token: str
    type: int
    payload: JSON
    channel_id: int
    guild_id: int | None
    invoker_id: int
    message_id: int | None = None
    response_type: int | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)


@dataclass
class StoredFile:
    """Bytes served under ``/attachments/...`` for an attachment URL."""

    filename: str
    data: bytes
    content_type: str | None


class World:
    """Mutable Discord-side state. All ids are ints here; payloads carry strings.

    Messages, files, reactions and interactions are the most recent ones (bounds in sandbox/records.py).
    """

    def __init__(self, *, token: str, bot_name: str, owner_name: tuple[str, str]) -> None:
        self.token = token
        self.bot_user_id = p.snowflake()
        self.application_id = self.bot_user_id
        self.bot_user: JSON = p.self_user(self.bot_user_id, bot_name)
        #: Privileged intents enabled in the "developer portal"; IDENTIFY asking for others is closed with 4014.
        self.privileged_intents = p.PRIVILEGED_INTENTS
        self.users: dict[int, JSON] = {self.bot_user_id: p.user(self.bot_user_id, bot_name, bot=True)}
        self.guilds: dict[int, GuildRecord] = {}
        self.dm_channels: dict[int, JSON] = {}
        self.messages: RecentDict[int, JSON] = RecentDict(MESSAGES_KEPT)
        self.files: RecentDict[int, StoredFile] = RecentDict(FILES_KEPT)
        self.reactors: RecentDict[tuple[int, str], list[int]] = RecentDict(REACTIONS_KEPT)
        self.global_commands: dict[int, JSON] = {}
        self.guild_commands: dict[int, dict[int, JSON]] = {}
        self.interactions: RecentDict[str, InteractionRecord] = RecentDict(INTERACTIONS_KEPT)
        self.command_version = 0
        owner_id = p.snowflake()
        self.owner_id = owner_id
        self.users[owner_id] = p.user(owner_id, owner_name[0], global_name=owner_name[1])

    # --- application --------------------------------------------------------------------

    @property
    def application_flags(self) -> int:
        """Application flags as the developer portal's intent toggles would set them."""
        flags = p.APP_FLAG_APPLICATION_COMMAND_BADGE
        if self.privileged_intents & p.INTENT_MESSAGE_CONTENT:
            flags |= p.APP_FLAG_GATEWAY_MESSAGE_CONTENT
        if self.privileged_intents & p.INTENT_GUILD_MEMBERS:
            flags |= p.APP_FLAG_GATEWAY_GUILD_MEMBERS
        if self.privileged_intents & p.INTENT_GUILD_PRESENCES:
            flags |= p.APP_FLAG_GATEWAY_PRESENCE
        return flags

    def application(self) -> JSON:
        """``GET /oauth2/applications/@me``."""
        return p.application(
            self.application_id,
            self.bot_user["username"],
            owner=self.users[self.owner_id],
            flags=self.application_flags,
            bot=self.users[self.bot_user_id],
        )

    # --- users and members --------------------------------------------------------------

    def add_user(self, username: str, *, bot: bool = False, user_id: int | None = None, **extra: Any) -> int:
        """Create a user and return its id."""
        uid = user_id or p.snowflake()
        self.users[uid] = p.user(uid, username, bot=bot, **extra)
        return uid

    def user(self, user_id: int) -> JSON:
        """A copy of a known user's payload (``KeyError`` if unknown)."""
        return copy.deepcopy(self.users[user_id])

    def add_member(self, guild_id: int, user_id: int, *, roles: Iterable[int] = (), nick: str | None = None) -> JSON:
        """Make a known user a member of a guild."""
        data = p.member(self.user(user_id), roles=roles, nick=nick)
        self.guilds[guild_id].members[user_id] = data
        return data

    def member(self, guild_id: int, user_id: int) -> JSON | None:
        """A copy of a member payload, or ``None``."""
        rec = self.guilds.get(guild_id)
        if rec is None or user_id not in rec.members:
            return None
        return copy.deepcopy(rec.members[user_id])

    # --- guilds, roles, channels --------------------------------------------------------

    def add_guild(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        owner_id: int | None = None,
        everyone_permissions: int = p.DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: int = p.DEFAULT_BOT_PERMISSIONS,
    ) -> GuildRecord:
        """Create a guild with ``@everyone``, the bot's managed role and the bot as a member."""
        gid = guild_id or p.snowflake()
        owner = owner_id or self.owner_id
        rec = GuildRecord(id=gid, name=name, owner_id=owner)
        rec.roles[gid] = p.role(gid, "@everyone", permissions=everyone_permissions)
        bot_role = p.snowflake()
        rec.roles[bot_role] = p.role(
            bot_role,
            self.bot_user["username"],
            permissions=bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot_user_id,
        )
        self.guilds[gid] = rec
        if owner in self.users:
            self.add_member(gid, owner)
        self.add_member(gid, self.bot_user_id, roles=[bot_role])
        return rec

    def bot_role_id(self, guild_id: int) -> int:
        """The id of the bot's managed role in a guild."""
        for rid, data in self.guilds[guild_id].roles.items():
            if data.get("tags", {}).get("bot_id") == p.sid(self.bot_user_id):
                return rid
        raise KeyError(guild_id)

    def add_role(self, guild_id: int, name: str, *, permissions: int = 0, position: int | None = None) -> JSON:
        """Create a role in a guild."""
        rec = self.guilds[guild_id]
        rid = p.snowflake()
        pos = position if position is not None else len(rec.roles)
        rec.roles[rid] = p.role(rid, name, permissions=permissions, position=pos)
        return rec.roles[rid]

    def add_text_channel(
        self,
        guild_id: int,
        name: str,
        *,
        channel_id: int | None = None,
        overwrites: Iterable[JSON] = (),
        topic: str | None = None,
    ) -> JSON:
        """Create a text channel in a guild."""
        rec = self.guilds[guild_id]
        cid = channel_id or p.snowflake()
        rec.channels[cid] = p.text_channel(
            cid, guild_id, name, position=len(rec.channels), topic=topic, permission_overwrites=list(overwrites)
        )
        return rec.channels[cid]

    def guild_of_channel(self, channel_id: int) -> GuildRecord | None:
        """The guild a channel belongs to (``None`` for DMs and unknown channels)."""
        for rec in self.guilds.values():
            if channel_id in rec.channels:
                return rec
        return None

    def channel(self, channel_id: int) -> JSON | None:
        """The live channel payload (guild text channel or DM), or ``None``."""
        rec = self.guild_of_channel(channel_id)
        if rec is not None:
            return rec.channels[channel_id]
        return self.dm_channels.get(channel_id)

    def dm_channel_for(self, user_id: int) -> JSON:
        """The DM channel between the bot and a user, created on first use."""
        for data in self.dm_channels.values():
            if data["recipients"][0]["id"] == p.sid(user_id):
                return data
        cid = p.snowflake()
        self.dm_channels[cid] = p.dm_channel(cid, self.user(user_id))
        return self.dm_channels[cid]

    # --- permissions --------------------------------------------------------------------

    def permissions(self, channel_id: int, user_id: int) -> int:
        """A user's permissions in a channel (everything in DMs, nothing if not a member)."""
        rec = self.guild_of_channel(channel_id)
        if rec is None:
            return p.PERM_ALL if channel_id in self.dm_channels else 0
        member = rec.members.get(user_id)
        if member is None:
            return 0
        return p.compute_channel_permissions(rec.summary(), rec.channels[channel_id], member)

    def bot_permissions(self, channel_id: int) -> int:
        """The bot's permissions in a channel."""
        return self.permissions(channel_id, self.bot_user_id)

    # --- messages -----------------------------------------------------------------------

    def store_message(self, data: JSON) -> JSON:
        """Remember a message (gateway shape) so REST can serve it."""
        self.messages[int(data["id"])] = data
        channel = self.channel(int(data["channel_id"]))
        if channel is not None:
            channel["last_message_id"] = data["id"]
        return data

    def message_for_rest(self, message_id: int) -> JSON | None:
        """A stored message the way REST returns it (no ``member``; reactions' ``me`` for the bot)."""
        data = self.messages.get(message_id)
        if data is None:
            return None
        out = {k: copy.deepcopy(v) for k, v in data.items() if k not in ("member",)}
        out["reactions"] = self.reactions_of(message_id)
        return out

    def channel_messages(self, channel_id: int) -> list[JSON]:
        """Stored non-ephemeral messages in a channel, newest first (REST order)."""
        ids = sorted(
            (
                mid
                for mid, m in self.messages.items()
                if m["channel_id"] == p.sid(channel_id) and not int(m["flags"]) & p.MESSAGE_FLAG_EPHEMERAL
            ),
            reverse=True,
        )
        return [out for mid in ids if (out := self.message_for_rest(mid)) is not None]

    def store_file(self, filename: str, data: bytes, content_type: str | None) -> int:
        """Keep attachment bytes; returns the attachment id."""
        aid = p.snowflake()
        self.files[aid] = StoredFile(filename, data, content_type)
        return aid

    # --- reactions ----------------------------------------------------------------------

    def add_reaction(self, message_id: int, emoji: str, user_id: int) -> bool:
        """Record a reaction; ``False`` if the user had already reacted with that emoji."""
        users = self.reactors.setdefault((message_id, emoji), [])
        if user_id in users:
            return False
        users.append(user_id)
        return True

    def remove_reaction(self, message_id: int, emoji: str, user_id: int) -> bool:
        """Forget a reaction; ``False`` if there was none."""
        users = self.reactors.get((message_id, emoji), [])
        if user_id not in users:
            return False
        users.remove(user_id)
        return True

    def reactions_of(self, message_id: int) -> list[JSON]:
        """The ``reactions`` array of a message, from the bot's point of view."""
        out = []
        for (mid, emoji), users in self.reactors.items():
            if mid != message_id or not users:
                continue
            out.append(
                {
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": self.bot_user_id in users,
                    "me_burst": False,
                    "burst_colors": [],
                    "emoji": p.reaction_emoji(emoji),
                }
            )
        return out

    # --- application commands -----------------------------------------------------------

    def overwrite_commands(self, commands: list[JSON], guild_id: int | None) -> list[JSON]:
        """Bulk-overwrite commands (``PUT``), keeping ids of commands that keep their name and type."""
        table = self.global_commands if guild_id is None else self.guild_commands.setdefault(guild_id, {})
        existing = {(c["name"], c["type"]): int(c["id"]) for c in table.values()}
        table.clear()
        self.command_version += 1
        for command in commands:
            key = (command["name"], command.get("type", p.COMMAND_CHAT_INPUT))
            cid = existing.get(key) or p.snowflake()
            table[cid] = p.application_command(
                command,
                command_id=cid,
                application_id=self.application_id,
                guild_id=guild_id,
                version=p.snowflake(),
            )
        return [copy.deepcopy(c) for c in table.values()]

    def find_command(self, name: str, type: int, guild_id: int | None) -> JSON | None:
        """A synced command by name: the guild's own first, then the global one."""
        tables: list[Mapping[int, JSON]] = []
        if guild_id is not None:
            tables.append(self.guild_commands.get(guild_id, {}))
        tables.append(self.global_commands)
        for table in tables:
            for command in table.values():
                if command["name"] == name and command["type"] == type:
                    return command
        return None

    # --- interactions -------------------------------------------------------------------

    def new_interaction_token(self) -> str:
        """A fresh opaque interaction token."""
        return "standin." + secrets.token_urlsafe(48)
