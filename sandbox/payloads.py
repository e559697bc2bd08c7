"""Builders for Discord-shaped JSON objects (API v10), as Discord itself sends them.

Everything here returns plain ``dict`` objects with the same keys, value types and
string-encoded snowflakes that Discord uses on the wire, so that discord.py parses
them through its normal code paths. The functions are deliberately free of
discord.py imports: the stand-in plays *Discord*, not the library.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# --- gateway opcodes -------------------------------------------------------------------------
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

# --- gateway intents -------------------------------------------------------------------------
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_REACTIONS = 1 << 13
INTENT_DIRECT_MESSAGE_TYPING = 1 << 14
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# --- application flags (what the developer portal toggles set) ------------------------------
APP_FLAG_GATEWAY_PRESENCE = 1 << 12
APP_FLAG_GATEWAY_GUILD_MEMBERS = 1 << 14
APP_FLAG_GATEWAY_MESSAGE_CONTENT = 1 << 18
APP_FLAG_APPLICATION_COMMAND_BADGE = 1 << 23

# --- permission bits -------------------------------------------------------------------------
PERM_CREATE_INSTANT_INVITE = 1 << 0
PERM_KICK_MEMBERS = 1 << 1
PERM_BAN_MEMBERS = 1 << 2
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_CHANNELS = 1 << 4
PERM_MANAGE_GUILD = 1 << 5
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_MENTION_EVERYONE = 1 << 17
PERM_USE_EXTERNAL_EMOJIS = 1 << 18
PERM_CHANGE_NICKNAME = 1 << 26
PERM_USE_APPLICATION_COMMANDS = 1 << 31
PERM_CREATE_PUBLIC_THREADS = 1 << 35
PERM_SEND_MESSAGES_IN_THREADS = 1 << 38
PERM_USE_EXTERNAL_APPS = 1 << 50
PERM_ALL = (1 << 51) - 1

#: What Discord gives ``@everyone`` in a freshly created server (the relevant subset).
DEFAULT_EVERYONE_PERMISSIONS = (
    PERM_CREATE_INSTANT_INVITE
    | PERM_ADD_REACTIONS
    | PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_MENTION_EVERYONE
    | PERM_USE_EXTERNAL_EMOJIS
    | PERM_CHANGE_NICKNAME
    | PERM_USE_APPLICATION_COMMANDS
    | PERM_CREATE_PUBLIC_THREADS
    | PERM_SEND_MESSAGES_IN_THREADS
    | PERM_USE_EXTERNAL_APPS
)

#: A typical set granted to a bot's managed role by an invite link.
DEFAULT_BOT_PERMISSIONS = (
    PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_ADD_REACTIONS
    | PERM_USE_EXTERNAL_EMOJIS
    | PERM_USE_APPLICATION_COMMANDS
    | PERM_SEND_MESSAGES_IN_THREADS
)

# --- enums used below ------------------------------------------------------------------------
CHANNEL_GUILD_TEXT = 0
CHANNEL_DM = 1
CHANNEL_GUILD_CATEGORY = 4

OVERWRITE_ROLE = 0
OVERWRITE_MEMBER = 1

MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20
MESSAGE_CONTEXT_MENU_COMMAND = 23

MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7

INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3

COMMAND_CHAT_INPUT = 1
COMMAND_USER = 2
COMMAND_MESSAGE = 3

OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11

COMPONENT_ACTION_ROW = 1
COMPONENT_BUTTON = 2
COMPONENT_STRING_SELECT = 3

# --- snowflakes and timestamps ---------------------------------------------------------------


class SnowflakeGenerator:
    """Thread-safe, strictly increasing snowflakes whose timestamp part is "now"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._increment = itertools.count()

    def __call__(self) -> int:
        with self._lock:
            candidate = ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._increment) & 0xFFF)
            self._last = max(candidate, self._last + 1)
            return self._last


#: The module-wide generator; every id the stand-in invents comes from here.
snowflake = SnowflakeGenerator()


def snowflake_time(snowflake_id: int | str) -> _dt.datetime:
    """The creation time encoded in a snowflake."""
    ms = (int(snowflake_id) >> 22) + DISCORD_EPOCH_MS
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC)


def timestamp(when: _dt.datetime | None = None) -> str:
    """An ISO-8601 timestamp in the format Discord uses (``+00:00`` offset, microseconds)."""
    when = when or _dt.datetime.now(_dt.UTC)
    return when.isoformat(timespec="microseconds")


def sid(value: int | str) -> str:
    """A snowflake as Discord serialises it (a string)."""
    return str(int(value))


# --- users, roles, members -------------------------------------------------------------------


def user(
    user_id: int,
    username: str,
    *,
    bot: bool = False,
    global_name: str | None = None,
    avatar: str | None = None,
    system: bool = False,
    public_flags: int = 0,
) -> JSON:
    """A user object (``GET /users/{id}`` shape)."""
    data: JSON = {
        "id": sid(user_id),
        "username": username,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": avatar,
        "public_flags": public_flags,
        "flags": public_flags,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "collectibles": None,
        "primary_guild": None,
    }
    if bot:
        data["bot"] = True
    if system:
        data["system"] = True
    return data


def self_user(user_id: int, username: str) -> JSON:
    """The bot's own user as ``GET /users/@me`` and READY return it."""
    data = user(user_id, username, bot=True)
    data.update({"verified": True, "mfa_enabled": False, "email": None, "locale": "en-US", "premium_type": 0})
    return data


def role(
    role_id: int,
    name: str,
    *,
    permissions: int,
    position: int = 0,
    color: int = 0,
    hoist: bool = False,
    managed: bool = False,
    mentionable: bool = False,
    bot_id: int | None = None,
) -> JSON:
    """A role object. ``bot_id`` makes it the managed role of that bot."""
    data: JSON = {
        "id": sid(role_id),
        "name": name,
        "description": None,
        "permissions": str(permissions),
        "position": position,
        "color": color,
        "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
        "hoist": hoist,
        "icon": None,
        "unicode_emoji": None,
        "managed": managed,
        "mentionable": mentionable,
        "flags": 0,
    }
    if bot_id is not None:
        data["tags"] = {"bot_id": sid(bot_id)}
    return data


def member(
    user_data: JSON,
    *,
    roles: Iterable[int] = (),
    nick: str | None = None,
    joined_at: str | None = None,
    include_user: bool = True,
) -> JSON:
    """A guild member object; ``roles`` never contains the ``@everyone`` role id."""
    data: JSON = {
        "roles": [sid(r) for r in roles],
        "nick": nick,
        "avatar": None,
        "banner": None,
        "joined_at": joined_at or timestamp(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
        "avatar_decoration_data": None,
    }
    if include_user:
        data["user"] = user_data
    return data


def member_without_user(member_data: Mapping[str, Any]) -> JSON:
    """The partial member that accompanies MESSAGE_CREATE / mentions / resolved data."""
    return {k: v for k, v in member_data.items() if k != "user"}


def overwrite(target_id: int, *, type: int, allow: int = 0, deny: int = 0) -> JSON:
    """A channel permission overwrite (``type`` 0 = role, 1 = member)."""
    return {"id": sid(target_id), "type": type, "allow": str(allow), "deny": str(deny)}


# --- channels and guilds ---------------------------------------------------------------------


def text_channel(
    channel_id: int,
    guild_id: int,
    name: str,
    *,
    position: int = 0,
    topic: str | None = None,
    parent_id: int | None = None,
    nsfw: bool = False,
    permission_overwrites: Sequence[JSON] = (),
    rate_limit_per_user: int = 0,
) -> JSON:
    """A guild text channel object."""
    return {
        "id": sid(channel_id),
        "type": CHANNEL_GUILD_TEXT,
        "guild_id": sid(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [dict(o) for o in permission_overwrites],
        "topic": topic,
        "nsfw": nsfw,
        "parent_id": sid(parent_id) if parent_id is not None else None,
        "last_message_id": None,
        "rate_limit_per_user": rate_limit_per_user,
        "default_auto_archive_duration": 1440,
        "flags": 0,
    }


def dm_channel(channel_id: int, recipient: JSON) -> JSON:
    """A DM channel object with one recipient."""
    return {
        "id": sid(channel_id),
        "type": CHANNEL_DM,
        "last_message_id": None,
        "recipients": [recipient],
        "flags": 0,
    }


def guild(
    guild_id: int,
    name: str,
    *,
    owner_id: int,
    roles: Sequence[JSON],
    channels: Sequence[JSON] = (),
    members: Sequence[JSON] = (),
    joined_at: str | None = None,
) -> JSON:
    """A GUILD_CREATE payload (a guild object plus the gateway-only extra fields)."""
    return {
        "id": sid(guild_id),
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": sid(owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "roles": list(roles),
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_presences": None,
        "max_members": 500000,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "incidents_data": None,
        # gateway-only GUILD_CREATE fields
        "joined_at": joined_at or timestamp(),
        "large": False,
        "unavailable": False,
        "member_count": len(members),
        "voice_states": [],
        "members": list(members),
        "channels": list(channels),
        "threads": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def rest_guild(guild_create: Mapping[str, Any]) -> JSON:
    """``GET /guilds/{id}``: a GUILD_CREATE payload without the gateway-only fields."""
    gateway_only = {
        "joined_at",
        "large",
        "unavailable",
        "member_count",
        "voice_states",
        "members",
        "channels",
        "threads",
        "presences",
        "stage_instances",
        "guild_scheduled_events",
        "soundboard_sounds",
    }
    return {k: v for k, v in guild_create.items() if k not in gateway_only}


def application(app_id: int, name: str, *, owner: JSON, flags: int, bot: JSON | None = None) -> JSON:
    """``GET /oauth2/applications/@me``."""
    return {
        "id": sid(app_id),
        "name": name,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "hook": True,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": owner,
        "team": None,
        "flags": flags,
        "tags": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "approximate_guild_count": 1,
        "integration_types_config": {"0": {}},
        "bot": bot,
    }


# --- messages --------------------------------------------------------------------------------


def message(
    message_id: int,
    channel_id: int,
    author: JSON,
    content: str,
    *,
    guild_id: int | None = None,
    member_data: JSON | None = None,
    mentions: Sequence[JSON] = (),
    mention_roles: Sequence[int] = (),
    mention_everyone: bool = False,
    embeds: Sequence[JSON] = (),
    attachments: Sequence[JSON] = (),
    components: Sequence[JSON] = (),
    sticker_items: Sequence[JSON] = (),
    message_reference: JSON | None = None,
    referenced_message: JSON | None = None,
    include_referenced: bool = False,
    webhook_id: int | None = None,
    application_id: int | None = None,
    interaction_metadata: JSON | None = None,
    type: int = MESSAGE_DEFAULT,
    flags: int = 0,
    tts: bool = False,
    nonce: str | int | None = None,
) -> JSON:
    """A message object. ``guild_id``/``member_data`` are only set for gateway events in a guild."""
    data: JSON = {
        "id": sid(message_id),
        "channel_id": sid(channel_id),
        "author": author,
        "content": content,
        "timestamp": timestamp(snowflake_time(message_id)),
        "edited_timestamp": None,
        "tts": tts,
        "mention_everyone": mention_everyone,
        "mentions": list(mentions),
        "mention_roles": [sid(r) for r in mention_roles],
        "attachments": list(attachments),
        "embeds": list(embeds),
        "pinned": False,
        "type": type,
        "flags": flags,
        "components": list(components),
        "sticker_items": list(sticker_items),
        "reactions": [],
    }
    if guild_id is not None:
        data["guild_id"] = sid(guild_id)
    if member_data is not None:
        data["member"] = member_data
    if webhook_id is not None:
        data["webhook_id"] = sid(webhook_id)
    if application_id is not None:
        data["application_id"] = sid(application_id)
    if interaction_metadata is not None:
        data["interaction_metadata"] = interaction_metadata
    if nonce is not None:
        data["nonce"] = nonce
    if message_reference is not None:
        data["message_reference"] = message_reference
        if include_referenced or referenced_message is not None:
            data["referenced_message"] = referenced_message
    return data


def attachment(
    attachment_id: int,
    filename: str,
    *,
    size: int,
    url: str,
    content_type: str | None = None,
    description: str | None = None,
) -> JSON:
    """An attachment object whose ``url`` points wherever the stand-in serves the bytes."""
    data: JSON = {
        "id": sid(attachment_id),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
    }
    if content_type is not None:
        data["content_type"] = content_type
    if description is not None:
        data["description"] = description
    return data


def message_reference(message_id: int, channel_id: int, guild_id: int | None) -> JSON:
    """A reply-style message reference."""
    ref: JSON = {"type": 0, "message_id": sid(message_id), "channel_id": sid(channel_id)}
    if guild_id is not None:
        ref["guild_id"] = sid(guild_id)
    return ref


def reaction_emoji(emoji: str) -> JSON:
    """Turn the ``{emoji}`` path segment of a reaction route into an emoji object."""
    prefix, sep, emoji_id = emoji.rpartition(":")
    if sep and emoji_id.isdigit():
        return {"id": emoji_id, "name": prefix.rpartition(":")[2], "animated": prefix.startswith("a:")}
    return {"id": None, "name": emoji}


# --- application commands and interactions ---------------------------------------------------


def application_command(
    command: Mapping[str, Any], *, command_id: int, application_id: int, guild_id: int | None, version: int
) -> JSON:
    """How Discord echoes a command that was written with ``PUT .../commands``."""
    data: JSON = {
        "id": sid(command_id),
        "application_id": sid(application_id),
        "version": sid(version),
        "type": command.get("type", COMMAND_CHAT_INPUT),
        "name": command["name"],
        "name_localizations": command.get("name_localizations"),
        "description": command.get("description", ""),
        "description_localizations": command.get("description_localizations"),
        "options": list(command.get("options") or []),
        "default_member_permissions": command.get("default_member_permissions"),
        "dm_permission": command.get("dm_permission", True),
        "contexts": command.get("contexts"),
        "integration_types": command.get("integration_types", [0]),
        "nsfw": command.get("nsfw", False),
    }
    if guild_id is not None:
        data["guild_id"] = sid(guild_id)
    return data


def interaction(
    interaction_id: int,
    *,
    type: int,
    token: str,
    application_id: int,
    data: JSON | None,
    channel: JSON,
    guild_id: int | None,
    invoker: JSON,
    invoker_member: JSON | None,
    app_permissions: int,
    message_data: JSON | None = None,
    locale: str = "en-US",
) -> JSON:
    """An INTERACTION_CREATE payload.

    ``invoker_member`` must already carry its ``permissions`` string; it is used in guilds,
    ``invoker`` (a user object) in DMs.
    """
    payload: JSON = {
        "id": sid(interaction_id),
        "application_id": sid(application_id),
        "type": type,
        "token": token,
        "version": 1,
        "channel": channel,
        "channel_id": channel["id"],
        "app_permissions": str(app_permissions),
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": 10 * 1024 * 1024,
    }
    if data is not None:
        payload["data"] = data
    if guild_id is not None:
        payload["guild_id"] = sid(guild_id)
        payload["guild"] = {"id": sid(guild_id), "locale": "en-US", "features": []}
        payload["guild_locale"] = "en-US"
        payload["member"] = invoker_member
        payload["authorizing_integration_owners"] = {"0": sid(guild_id)}
        payload["context"] = 0
    else:
        payload["user"] = invoker
        payload["authorizing_integration_owners"] = {"1": invoker["id"]}
        payload["context"] = 1
    if message_data is not None:
        payload["message"] = message_data
    return payload


def _subcommand_path(options: Sequence[Mapping[str, Any]]) -> list[str]:
    """The subcommand group and subcommand an interaction's options name, outermost first."""
    for option in options:
        if option.get("type") in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP):
            return [option["name"], *_subcommand_path(option.get("options") or [])]
    return []


def interaction_metadata(interaction_payload: Mapping[str, Any], invoker: JSON) -> JSON:
    """The ``interaction_metadata`` attached to messages that answer an interaction. Its ``name`` is the command as
    used, with its subcommand group and subcommand ("moodring retention"), as Discord's message ``interaction`` has it.
    """
    meta: JSON = {
        "id": interaction_payload["id"],
        "type": interaction_payload["type"],
        "user": invoker,
        "authorizing_integration_owners": interaction_payload.get("authorizing_integration_owners", {}),
    }
    data = interaction_payload.get("data") or {}
    if "name" in data:
        meta["name"] = " ".join([data["name"], *_subcommand_path(data.get("options") or [])])
        meta["command_type"] = data.get("type", COMMAND_CHAT_INPUT)
    if "message" in interaction_payload:
        meta["interacted_message_id"] = interaction_payload["message"]["id"]
    return meta


# --- permissions -----------------------------------------------------------------------------


def compute_base_permissions(guild_data: Mapping[str, Any], member_data: Mapping[str, Any]) -> int:
    """Guild-level permissions of a member, following Discord's documented algorithm."""
    user_id = member_data["user"]["id"]
    if guild_data["owner_id"] == user_id:
        return PERM_ALL
    roles = {r["id"]: int(r["permissions"]) for r in guild_data["roles"]}
    perms = roles.get(guild_data["id"], 0)
    for role_id in member_data["roles"]:
        perms |= roles.get(role_id, 0)
    if perms & PERM_ADMINISTRATOR:
        return PERM_ALL
    return perms


def compute_channel_permissions(
    guild_data: Mapping[str, Any], channel_data: Mapping[str, Any], member_data: Mapping[str, Any]
) -> int:
    """Channel-level permissions: base permissions with the channel's overwrites applied."""
    perms = compute_base_permissions(guild_data, member_data)
    if perms & PERM_ADMINISTRATOR or perms == PERM_ALL:
        return PERM_ALL
    overwrites = {o["id"]: o for o in channel_data.get("permission_overwrites", [])}
    everyone = overwrites.get(guild_data["id"])
    if everyone is not None:
        perms &= ~int(everyone["deny"])
        perms |= int(everyone["allow"])
    allow = deny = 0
    for role_id in member_data["roles"]:
        ow = overwrites.get(role_id)
        if ow is not None and ow["type"] == OVERWRITE_ROLE:
            allow |= int(ow["allow"])
            deny |= int(ow["deny"])
    perms = (perms & ~deny) | allow
    own = overwrites.get(member_data["user"]["id"])
    if own is not None and own["type"] == OVERWRITE_MEMBER:
        perms = (perms & ~int(own["deny"])) | int(own["allow"])
    if not perms & PERM_VIEW_CHANNEL:
        return 0
    return perms


# --- errors ----------------------------------------------------------------------------------

#: Discord's JSON error codes used by the stand-in.
ERROR_MESSAGES: dict[int, str] = {
    0: "404: Not Found",
    10003: "Unknown Channel",
    10004: "Unknown Guild",
    10007: "Unknown Member",
    10008: "Unknown Message",
    10013: "Unknown User",
    10014: "Unknown Emoji",
    10015: "Unknown Webhook",
    10062: "Unknown interaction",
    40060: "Interaction has already been acknowledged.",
    50001: "Missing Access",
    50006: "Cannot send an empty message",
    50013: "Missing Permissions",
    50035: "Invalid Form Body",
}


def error(code: int, message: str | None = None, *, errors: JSON | None = None) -> JSON:
    """A Discord JSON error body."""
    body: JSON = {"message": message or ERROR_MESSAGES.get(code, "Unknown error"), "code": code}
    if errors is not None:
        body["errors"] = errors
    return body


def default_error_body(status: int) -> JSON:
    """The body Discord sends for a bare HTTP status (used by fault injection)."""
    if status == 400:
        return error(50035)
    if status == 401:
        return {"message": "401: Unauthorized", "code": 0}
    if status == 403:
        return error(50013)
    if status == 404:
        return error(0)
    if status >= 500:
        return {"message": f"{status}: Internal Server Error", "code": 0}
    return {"message": f"{status}: Error", "code": 0}
