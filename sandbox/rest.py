"""The REST half of the stand-in: route handlers that behave like Discord's API v10."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import payloads as p
from .gateway import Gateway
from .payloads import JSON
from .records import NONCES_KEPT, RecentDict, RecordedFile, RecordedRequest, RouteTable
from .world import InteractionRecord, World

#: ``(status, body)``; a ``None`` body with status 204 means "no content".
Reply = tuple[int, Any]

_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")
_FILE_FIELD_RE = re.compile(r"files\[(\d+)\]")
_EDITABLE_FIELDS = ("content", "embeds", "components", "flags", "allowed_mentions")
#: How long a message nonce is enforced (``enforce_nonce``): Discord says "the past few minutes" without a number;
#: the stand-in states 5 minutes. A client that retries a send must do so well inside it.
NONCE_WINDOW_S = 300.0
#: Discord's limit on a nonce's length (an integer or a string of up to 25 characters).
NONCE_MAX_LENGTH = 25

# Interaction callback types.
CB_PONG = 1
CB_CHANNEL_MESSAGE = 4
CB_DEFERRED_CHANNEL_MESSAGE = 5
CB_DEFERRED_UPDATE_MESSAGE = 6
CB_UPDATE_MESSAGE = 7
CB_MODAL = 9


class ApiError(Exception):
    """Raised by handlers to answer with a Discord error body."""

    def __init__(self, status: int, code: int, message: str | None = None, *, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {code} {message or p.ERROR_MESSAGES.get(code, '')}")
        self.status = status
        self.body = p.error(code, message, errors=errors)


def _form_error(field: str, code: str, message: str) -> ApiError:
    return ApiError(400, 50035, errors={field: {"_errors": [{"code": code, "message": message}]}})


def _snowflake_param(req: RecordedRequest, name: str, unknown_code: int) -> int:
    value = req.params[name]
    if not value.isdigit():
        raise ApiError(404, unknown_code)
    return int(value)


class RestApi:
    """Route handlers over a :class:`World`; gateway side effects go through :class:`Gateway`."""

    def __init__(
        self,
        world: World,
        gateway: Gateway,
        *,
        base_url: Callable[[], str],
        gateway_url: Callable[[], str],
    ) -> None:
        self.world = world
        self.gateway = gateway
        self._base_url = base_url
        self._gateway_url = gateway_url
        self.clock: Callable[[], float] = time.monotonic  # for the nonce window
        #: (author id, nonce) -> (message id, when it was created): ``enforce_nonce``'s memory.
        self.nonces: RecentDict[tuple[int, str], tuple[int, float]] = RecentDict(NONCES_KEPT)
        self.routes = RouteTable()
        self._register()

    def _register(self) -> None:
        r = self.routes.add
        r("GET", "/users/@me", self.get_me)
        r("GET", "/users/{user_id}", self.get_user)
        r("POST", "/users/@me/channels", self.create_dm)
        r("GET", "/gateway", self.get_gateway, needs_auth=False)
        r("GET", "/gateway/bot", self.get_gateway_bot)
        r("GET", "/oauth2/applications/@me", self.get_application)
        r("GET", "/applications/@me", self.get_application)
        r("GET", "/applications/{application_id}/commands", self.get_commands)
        r("PUT", "/applications/{application_id}/commands", self.put_commands)
        r("POST", "/applications/{application_id}/commands", self.upsert_command)
        r("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self.get_commands)
        r("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self.put_commands)
        r("POST", "/applications/{application_id}/guilds/{guild_id}/commands", self.upsert_command)
        r("GET", "/channels/{channel_id}", self.get_channel)
        r("GET", "/channels/{channel_id}/messages", self.get_messages)
        r("POST", "/channels/{channel_id}/messages", self.create_message)
        r("POST", "/channels/{channel_id}/typing", self.trigger_typing)
        r("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message)
        r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.add_reaction)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.remove_reaction)
        r("GET", "/guilds/{guild_id}", self.get_guild)
        r("GET", "/guilds/{guild_id}/channels", self.get_guild_channels)
        r("GET", "/guilds/{guild_id}/roles", self.get_guild_roles)
        r("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member)
        hook = "/webhooks/{application_id}/{interaction_token}"
        r("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self.callback, needs_auth=False)
        r("POST", hook, self.create_followup, needs_auth=False)
        for method, handler in (("GET", self.get_hook_message), ("PATCH", self.edit_hook_message)):
            r(method, hook + "/messages/@original", handler, needs_auth=False)
            r(method, hook + "/messages/{message_id}", handler, needs_auth=False)
        r("DELETE", hook + "/messages/@original", self.delete_hook_message, needs_auth=False)
        r("DELETE", hook + "/messages/{message_id}", self.delete_hook_message, needs_auth=False)

    # --- helpers ------------------------------------------------------------------------

    def _channel(self, req: RecordedRequest) -> tuple[int, JSON]:
        channel_id = _snowflake_param(req, "channel_id", 10003)
        channel = self.world.channel(channel_id)
        if channel is None:
            raise ApiError(404, 10003)
        if not self.world.bot_permissions(channel_id) & p.PERM_VIEW_CHANNEL:
            raise ApiError(403, 50001)
        return channel_id, channel

    def _require(self, channel_id: int, *perms: int) -> None:
        have = self.world.bot_permissions(channel_id)
        if not have & p.PERM_VIEW_CHANNEL:
            raise ApiError(403, 50001)
        for perm in perms:
            if not have & perm:
                raise ApiError(403, 50013)

    def _message_in(self, channel_id: int, req: RecordedRequest) -> JSON:
        """A message through the channel routes, which cannot see ephemeral messages."""
        message_id = _snowflake_param(req, "message_id", 10008)
        data = self.world.messages.get(message_id)
        if data is None or data["channel_id"] != p.sid(channel_id) or int(data["flags"]) & p.MESSAGE_FLAG_EPHEMERAL:
            raise ApiError(404, 10008)
        return data

    def _guild(self, req: RecordedRequest) -> Any:
        guild_id = _snowflake_param(req, "guild_id", 10004)
        rec = self.world.guilds.get(guild_id)
        if rec is None:
            raise ApiError(404, 10004)
        return rec

    def _check_app(self, req: RecordedRequest, unknown_code: int) -> None:
        if req.params.get("application_id") != p.sid(self.world.application_id):
            raise ApiError(404 if unknown_code != 50001 else 403, unknown_code)

    def _bot_member_payload(self, guild_id: int | None) -> JSON | None:
        if guild_id is None:
            return None
        data = self.world.member(guild_id, self.world.bot_user_id)
        return p.member_without_user(data) if data else None

    async def _echo(self, event: str, data: JSON) -> None:
        """Dispatch a MESSAGE_* event about a bot action, the way Discord fans it out."""
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        await self.gateway.dispatch(event, data, guild_id=guild_id, require_session=False)

    # --- message construction -----------------------------------------------------------

    def _attachments(self, channel_id: int, body: JSON, files: Sequence[RecordedFile]) -> list[JSON]:
        """New attachments from the multipart files, plus the kept ones listed in ``attachments``."""
        by_index = {}
        for index, f in enumerate(files):
            m = _FILE_FIELD_RE.fullmatch(f.field)
            by_index[int(m.group(1)) if m else index] = f
        out: list[JSON] = []
        listed = body.get("attachments")
        if listed is None:
            listed = [{"id": i, "filename": f.filename} for i, f in sorted(by_index.items())]
        for entry in listed:
            att_id = int(entry["id"])
            if att_id in by_index:
                f = by_index[att_id]
                out.append(self._stored_attachment(channel_id, f.filename, f.data, f.content_type, entry))
            elif att_id in self.world.files:
                stored = self.world.files[att_id]
                url = f"{self._base_url()}/attachments/{channel_id}/{att_id}/{stored.filename}"
                out.append(
                    p.attachment(
                        att_id, stored.filename, size=len(stored.data), url=url, content_type=stored.content_type
                    )
                )
            else:
                raise _form_error("attachments", "ATTACHMENT_NOT_FOUND", f"Unknown attachment {att_id}")
        return out

    def _stored_attachment(
        self, channel_id: int, filename: str, data: bytes, content_type: str | None, entry: Mapping[str, Any]
    ) -> JSON:
        att_id = self.world.store_file(filename, data, content_type)
        url = f"{self._base_url()}/attachments/{channel_id}/{att_id}/{filename}"
        return p.attachment(
            att_id,
            entry.get("filename") or filename,
            size=len(data),
            url=url,
            content_type=content_type,
            description=entry.get("description"),
        )

    def _mentions(self, body: JSON, guild_id: int | None, reply_to: JSON | None) -> tuple[list[JSON], list[int], bool]:
        """``mentions``, ``mention_roles`` and ``mention_everyone`` as allowed by ``allowed_mentions``."""
        content = body.get("content") or ""
        allowed = body.get("allowed_mentions")
        parse = {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse", []))
        explicit_users = set() if allowed is None else {int(u) for u in allowed.get("users", [])}
        explicit_roles = set() if allowed is None else {int(r) for r in allowed.get("roles", [])}
        users: list[int] = []
        for uid in map(int, _MENTION_RE.findall(content)):
            if (uid in explicit_users or "users" in parse) and uid in self.world.users and uid not in users:
                users.append(uid)
        replied = allowed is None or allowed.get("replied_user", False)
        if reply_to is not None and replied:
            uid = int(reply_to["author"]["id"])
            if uid not in users and uid in self.world.users:
                users.append(uid)
        roles = [
            rid for rid in map(int, _ROLE_MENTION_RE.findall(content)) if rid in explicit_roles or "roles" in parse
        ]
        everyone = "everyone" in parse and ("@everyone" in content or "@here" in content)
        mentions = []
        for uid in users:
            data = self.world.user(uid)
            member = self.world.member(guild_id, uid) if guild_id is not None else None
            if member is not None:
                data["member"] = p.member_without_user(member)
            mentions.append(data)
        return mentions, roles, everyone

    def _validate_content(self, body: JSON, *, has_files: bool, editing: bool = False) -> None:
        content = body.get("content")
        if content is not None and len(content) > 2000:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if not editing and not (
            content or embeds or has_files or body.get("sticker_ids") or body.get("components") or body.get("poll")
        ):
            raise ApiError(400, 50006)

    def _new_bot_message(
        self,
        channel_id: int,
        body: JSON,
        files: Sequence[RecordedFile],
        *,
        interaction: InteractionRecord | None = None,
    ) -> JSON:
        """Build and store a message authored by the bot (or its interaction webhook)."""
        world = self.world
        rec = world.guild_of_channel(channel_id)
        guild_id = rec.id if rec else None
        reply_to: JSON | None = None
        reference = body.get("message_reference")
        msg_type = p.MESSAGE_DEFAULT
        if reference is not None and interaction is None:
            ref_id = int(reference.get("message_id", 0))
            reply_to = world.messages.get(ref_id)
            if reply_to is None and reference.get("fail_if_not_exists", True):
                raise _form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            reference = {
                "type": reference.get("type", 0),
                "message_id": p.sid(ref_id),
                "channel_id": p.sid(reference.get("channel_id") or channel_id),
                **({"guild_id": p.sid(guild_id)} if guild_id else {}),
            }
            if reference["type"] == 0:
                msg_type = p.MESSAGE_REPLY
            else:
                reply_to = None
        elif reference is not None:
            reference = None
        self._validate_content(body, has_files=bool(files) or bool(body.get("attachments")))
        attachments = self._attachments(channel_id, body, files)
        mentions, roles, everyone = self._mentions(body, guild_id, reply_to)
        flags = int(body.get("flags") or 0) & ~p.MESSAGE_FLAG_EPHEMERAL
        webhook_id = None
        application_id = None
        metadata = None
        if interaction is not None:
            webhook_id = application_id = world.application_id
            flags |= int(body.get("flags") or 0) & p.MESSAGE_FLAG_EPHEMERAL
            invoker = world.user(interaction.invoker_id)
            metadata = p.interaction_metadata(interaction.payload, invoker)
            command_type = (interaction.payload.get("data") or {}).get("type", p.COMMAND_CHAT_INPUT)
            if interaction.type == p.INTERACTION_APPLICATION_COMMAND:
                msg_type = (
                    p.MESSAGE_CHAT_INPUT_COMMAND
                    if command_type == p.COMMAND_CHAT_INPUT
                    else p.MESSAGE_CONTEXT_MENU_COMMAND
                )
        stickers = [{"id": p.sid(s), "name": "sticker", "format_type": 1} for s in body.get("sticker_ids") or []]
        data = p.message(
            p.snowflake(),
            channel_id,
            world.user(world.bot_user_id),
            body.get("content") or "",
            guild_id=guild_id,
            member_data=self._bot_member_payload(guild_id),
            mentions=mentions,
            mention_roles=roles,
            mention_everyone=everyone,
            embeds=[{"type": "rich", **e} for e in body.get("embeds") or []],
            attachments=attachments,
            components=body.get("components") or [],
            sticker_items=stickers,
            message_reference=reference,
            referenced_message=copy.deepcopy(reply_to) if reply_to else None,
            include_referenced=msg_type == p.MESSAGE_REPLY,
            webhook_id=webhook_id,
            application_id=application_id,
            interaction_metadata=metadata,
            type=msg_type,
            flags=flags,
            tts=bool(body.get("tts", False)),
            nonce=body.get("nonce"),
        )
        if data.get("referenced_message"):
            data["referenced_message"].pop("member", None)
        if "allowed_mentions" in body:
            data["_allowed_mentions"] = body["allowed_mentions"]
        world.store_message(data)
        return data

    def _public(self, data: JSON) -> JSON:
        """A stored message in REST shape."""
        out = self.world.message_for_rest(int(data["id"]))
        assert out is not None
        out.pop("_allowed_mentions", None)
        return out

    def _gateway_copy(self, data: JSON) -> JSON:
        out = copy.deepcopy(data)
        out.pop("_allowed_mentions", None)
        out["reactions"] = self.world.reactions_of(int(data["id"]))
        return out

    async def _created(self, data: JSON) -> None:
        if not int(data["flags"]) & p.MESSAGE_FLAG_EPHEMERAL:
            await self._echo("MESSAGE_CREATE", self._gateway_copy(data))

    async def _apply_edit(self, data: JSON, body: JSON, files: Sequence[RecordedFile]) -> JSON:
        """PATCH semantics: only the fields present in ``body`` change."""
        channel_id = int(data["channel_id"])
        self._validate_content(body, has_files=bool(files), editing=True)
        for key in _EDITABLE_FIELDS:
            if key not in body:
                continue
            value = body[key]
            if key == "embeds":
                data["embeds"] = [{"type": "rich", **e} for e in value or []]
            elif key == "flags":
                keep = int(data["flags"]) & (p.MESSAGE_FLAG_EPHEMERAL)
                data["flags"] = (int(value or 0) & ~p.MESSAGE_FLAG_EPHEMERAL) | keep
            elif key == "allowed_mentions":
                data["_allowed_mentions"] = value
            else:
                data[key] = value if value is not None else ([] if key == "components" else "")
        if "attachments" in body or files:
            data["attachments"] = self._attachments(channel_id, body, files)
        if "content" in body:
            guild_id = int(data["guild_id"]) if data.get("guild_id") else None
            mentions, roles, everyone = self._mentions(
                {"content": data["content"], "allowed_mentions": data.get("_allowed_mentions")}, guild_id, None
            )
            data.update(mentions=mentions, mention_roles=[p.sid(r) for r in roles], mention_everyone=everyone)
        data["flags"] = int(data["flags"]) & ~p.MESSAGE_FLAG_LOADING
        data["edited_timestamp"] = p.timestamp()
        if not int(data["flags"]) & p.MESSAGE_FLAG_EPHEMERAL:
            await self._echo("MESSAGE_UPDATE", self._gateway_copy(data))
        return self._public(data)

    async def _delete(self, data: JSON) -> None:
        mid = int(data["id"])
        self.world.messages.pop(mid, None)
        if not int(data["flags"]) & p.MESSAGE_FLAG_EPHEMERAL:
            event = {"id": data["id"], "channel_id": data["channel_id"]}
            if data.get("guild_id"):
                event["guild_id"] = data["guild_id"]
            await self._echo("MESSAGE_DELETE", event)

    # --- users, gateway, application ----------------------------------------------------

    async def get_me(self, req: RecordedRequest) -> Reply:
        """``GET /users/@me``."""
        return 200, copy.deepcopy(self.world.bot_user)

    async def get_user(self, req: RecordedRequest) -> Reply:
        """``GET /users/{user_id}``."""
        uid = _snowflake_param(req, "user_id", 10013)
        if uid not in self.world.users:
            raise ApiError(404, 10013)
        return 200, self.world.user(uid)

    async def create_dm(self, req: RecordedRequest) -> Reply:
        """``POST /users/@me/channels``."""
        uid = int((req.json or {}).get("recipient_id", 0))
        if uid not in self.world.users:
            raise _form_error("recipient_id", "USER_UNKNOWN", "Unknown user")
        return 200, copy.deepcopy(self.world.dm_channel_for(uid))

    async def get_gateway(self, req: RecordedRequest) -> Reply:
        """``GET /gateway``."""
        return 200, {"url": self._gateway_url()}

    async def get_gateway_bot(self, req: RecordedRequest) -> Reply:
        """``GET /gateway/bot``."""
        return 200, {
            "url": self._gateway_url(),
            "shards": self.gateway.shard_count,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000 - self.gateway.identify_count,
                "reset_after": 86_400_000,
                "max_concurrency": self.gateway.max_concurrency,
            },
        }

    async def get_application(self, req: RecordedRequest) -> Reply:
        """``GET /oauth2/applications/@me``."""
        return 200, self.world.application()

    # --- application commands -----------------------------------------------------------

    def _command_scope(self, req: RecordedRequest) -> int | None:
        self._check_app(req, 50001)
        if "guild_id" not in req.params:
            return None
        guild_id = int(req.params["guild_id"])
        if guild_id not in self.world.guilds:
            raise ApiError(403, 50001)
        return guild_id

    async def get_commands(self, req: RecordedRequest) -> Reply:
        """``GET .../commands``."""
        guild_id = self._command_scope(req)
        table = self.world.global_commands if guild_id is None else self.world.guild_commands.get(guild_id, {})
        return 200, [copy.deepcopy(c) for c in table.values()]

    async def put_commands(self, req: RecordedRequest) -> Reply:
        """``PUT .../commands``: bulk overwrite."""
        guild_id = self._command_scope(req)
        body = req.json
        if not isinstance(body, list):
            raise _form_error("_", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        for index, command in enumerate(body):
            name = command.get("name", "")
            if not (1 <= len(name) <= 32):
                raise _form_error(f"{index}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
            ctype = command.get("type", p.COMMAND_CHAT_INPUT)
            if ctype == p.COMMAND_CHAT_INPUT and (name != name.lower() or " " in name):
                raise _form_error(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        return 200, self.world.overwrite_commands(body, guild_id)

    async def upsert_command(self, req: RecordedRequest) -> Reply:
        """``POST .../commands``: create or replace one command by name."""
        guild_id = self._command_scope(req)
        body = dict(req.json or {})
        table = self.world.global_commands if guild_id is None else self.world.guild_commands.get(guild_id, {})
        others = [c for c in table.values() if (c["name"], c["type"]) != (body.get("name"), body.get("type", 1))]
        result = self.world.overwrite_commands([*others, body], guild_id)
        return 201, next(c for c in result if c["name"] == body.get("name"))

    # --- channels and messages ----------------------------------------------------------

    async def get_channel(self, req: RecordedRequest) -> Reply:
        """``GET /channels/{channel_id}``."""
        _, channel = self._channel(req)
        return 200, copy.deepcopy(channel)

    async def get_messages(self, req: RecordedRequest) -> Reply:
        """``GET /channels/{channel_id}/messages`` (newest first, like Discord)."""
        channel_id, _ = self._channel(req)
        if not self.world.bot_permissions(channel_id) & p.PERM_READ_MESSAGE_HISTORY:
            return 200, []
        limit = max(1, min(100, int(req.query.get("limit", 50))))
        messages = self.world.channel_messages(channel_id)
        if "before" in req.query:
            before = int(req.query["before"])
            messages = [m for m in messages if int(m["id"]) < before][:limit]
        elif "after" in req.query:
            after = int(req.query["after"])
            newer = [m for m in messages if int(m["id"]) > after]
            messages = newer[-limit:]
        elif "around" in req.query:
            around = int(req.query["around"])
            older = [m for m in messages if int(m["id"]) <= around][: (limit + 1) // 2]
            newer = [m for m in messages if int(m["id"]) > around][-(limit // 2) :] if limit // 2 else []
            messages = newer + older
        else:
            messages = messages[:limit]
        for m in messages:
            m.pop("_allowed_mentions", None)
        return 200, messages

    async def create_message(self, req: RecordedRequest) -> Reply:
        """``POST /channels/{channel_id}/messages`` (JSON or multipart with files).

        With ``nonce`` and ``enforce_nonce``, as Discord documents it: if the same author created a message with the
        same nonce within ``NONCE_WINDOW_S``, that message is returned (200) and none is created.
        """
        channel_id, _ = self._channel(req)
        body = req.json if isinstance(req.json, dict) else {}
        self._require(channel_id, p.PERM_SEND_MESSAGES)
        if req.files:
            self._require(channel_id, p.PERM_ATTACH_FILES)
        nonce = body.get("nonce")
        if nonce is not None and len(str(nonce)) > NONCE_MAX_LENGTH:
            raise ApiError(400, 50035, "Invalid Form Body")
        key = (self.world.bot_user_id, str(nonce))
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self.nonces.get(key)
            if earlier is not None and self.clock() - earlier[1] < NONCE_WINDOW_S and earlier[0] in self.world.messages:
                return 200, self._public(self.world.messages[earlier[0]])
        data = self._new_bot_message(channel_id, body, req.files)
        if nonce is not None:
            self.nonces[key] = (int(data["id"]), self.clock())
        await self._created(data)
        return 200, self._public(data)

    async def trigger_typing(self, req: RecordedRequest) -> Reply:
        """``POST /channels/{channel_id}/typing``."""
        channel_id, _ = self._channel(req)
        self._require(channel_id, p.PERM_SEND_MESSAGES)
        return 204, None

    async def get_message(self, req: RecordedRequest) -> Reply:
        """``GET /channels/{channel_id}/messages/{message_id}``."""
        channel_id, _ = self._channel(req)
        self._require(channel_id, p.PERM_READ_MESSAGE_HISTORY)
        data = self._message_in(channel_id, req)
        return 200, self._public(data)

    async def edit_message(self, req: RecordedRequest) -> Reply:
        """``PATCH /channels/{channel_id}/messages/{message_id}``."""
        channel_id, _ = self._channel(req)
        data = self._message_in(channel_id, req)
        body = req.json if isinstance(req.json, dict) else {}
        if data["author"]["id"] != p.sid(self.world.bot_user_id):
            if set(body) - {"flags"}:
                raise ApiError(403, 50005, "Cannot edit a message authored by another user")
            self._require(channel_id, p.PERM_MANAGE_MESSAGES)
        return 200, await self._apply_edit(data, body, req.files)

    async def delete_message(self, req: RecordedRequest) -> Reply:
        """``DELETE /channels/{channel_id}/messages/{message_id}``."""
        channel_id, _ = self._channel(req)
        data = self._message_in(channel_id, req)
        if data["author"]["id"] != p.sid(self.world.bot_user_id):
            self._require(channel_id, p.PERM_MANAGE_MESSAGES)
        await self._delete(data)
        return 204, None

    async def _reaction_event(self, event: str, data: JSON, emoji: str) -> None:
        payload: JSON = {
            "user_id": p.sid(self.world.bot_user_id),
            "channel_id": data["channel_id"],
            "message_id": data["id"],
            "emoji": p.reaction_emoji(emoji),
            "burst": False,
            "type": 0,
        }
        if data.get("guild_id"):
            payload["guild_id"] = data["guild_id"]
        if event == "MESSAGE_REACTION_ADD":
            payload["message_author_id"] = data["author"]["id"]
            payload["burst_colors"] = []
            member = self._bot_member_payload(int(data["guild_id"])) if data.get("guild_id") else None
            if member is not None:
                member["user"] = self.world.user(self.world.bot_user_id)
                payload["member"] = member
        await self._echo(event, payload)

    async def add_reaction(self, req: RecordedRequest) -> Reply:
        """``PUT .../reactions/{emoji}/@me``."""
        channel_id, _ = self._channel(req)
        data = self._message_in(channel_id, req)
        emoji = req.params["emoji"]
        if not emoji or emoji.isspace():
            raise ApiError(400, 10014)
        first = not self.world.reactors.get((int(data["id"]), emoji))
        self._require(channel_id, p.PERM_READ_MESSAGE_HISTORY, *((p.PERM_ADD_REACTIONS,) if first else ()))
        if self.world.add_reaction(int(data["id"]), emoji, self.world.bot_user_id):
            await self._reaction_event("MESSAGE_REACTION_ADD", data, emoji)
        return 204, None

    async def remove_reaction(self, req: RecordedRequest) -> Reply:
        """``DELETE .../reactions/{emoji}/@me``."""
        channel_id, _ = self._channel(req)
        data = self._message_in(channel_id, req)
        emoji = req.params["emoji"]
        if self.world.remove_reaction(int(data["id"]), emoji, self.world.bot_user_id):
            await self._reaction_event("MESSAGE_REACTION_REMOVE", data, emoji)
        return 204, None

    # --- guilds -------------------------------------------------------------------------

    async def get_guild(self, req: RecordedRequest) -> Reply:
        """``GET /guilds/{guild_id}``."""
        rec = self._guild(req)
        data = p.rest_guild(rec.payload())
        if req.query.get("with_counts") in ("true", "1", "True"):
            data["approximate_member_count"] = len(rec.members)
            data["approximate_presence_count"] = 0
        return 200, data

    async def get_guild_channels(self, req: RecordedRequest) -> Reply:
        """``GET /guilds/{guild_id}/channels``."""
        rec = self._guild(req)
        return 200, [copy.deepcopy(c) for c in rec.channels.values()]

    async def get_guild_roles(self, req: RecordedRequest) -> Reply:
        """``GET /guilds/{guild_id}/roles``."""
        rec = self._guild(req)
        return 200, [copy.deepcopy(r) for r in rec.roles.values()]

    async def get_member(self, req: RecordedRequest) -> Reply:
        """``GET /guilds/{guild_id}/members/{user_id}``."""
        rec = self._guild(req)
        uid = _snowflake_param(req, "user_id", 10007)
        if uid not in rec.members:
            raise ApiError(404, 10007)
        return 200, copy.deepcopy(rec.members[uid])

    # --- interactions -------------------------------------------------------------------

    def _interaction(self, req: RecordedRequest) -> InteractionRecord:
        rec = self.world.interactions.get(req.params["interaction_token"])
        if rec is None:
            raise ApiError(404, 10015 if "application_id" in req.params else 10062)
        if "interaction_id" in req.params and req.params["interaction_id"] != p.sid(rec.id):
            raise ApiError(404, 10062)
        if "application_id" in req.params:
            self._check_app(req, 10015)
        return rec

    async def callback(self, req: RecordedRequest) -> Reply:
        """``POST /interactions/{id}/{token}/callback``: the initial response."""
        rec = self._interaction(req)
        if rec.response_type is not None:
            raise ApiError(400, 40060)
        body = req.json if isinstance(req.json, dict) else {}
        cb_type = body.get("type")
        data = body.get("data") or {}
        allowed = {
            p.INTERACTION_APPLICATION_COMMAND: {CB_CHANNEL_MESSAGE, CB_DEFERRED_CHANNEL_MESSAGE, CB_MODAL},
            p.INTERACTION_MESSAGE_COMPONENT: {
                CB_CHANNEL_MESSAGE,
                CB_DEFERRED_CHANNEL_MESSAGE,
                CB_DEFERRED_UPDATE_MESSAGE,
                CB_UPDATE_MESSAGE,
                CB_MODAL,
            },
        }[rec.type]
        if cb_type not in allowed:
            raise _form_error("type", "INTERACTION_CALLBACK_TYPE_INVALID", "Invalid interaction callback type")
        message: JSON | None = None
        if cb_type == CB_CHANNEL_MESSAGE:
            message = self._new_bot_message(rec.channel_id, data, req.files, interaction=rec)
            await self._created(message)
            rec.original_message_id = int(message["id"])
        elif cb_type == CB_DEFERRED_CHANNEL_MESSAGE:
            message = self._deferred_placeholder(rec, data)
            await self._created(message)
            rec.original_message_id = int(message["id"])
        elif cb_type in (CB_UPDATE_MESSAGE, CB_DEFERRED_UPDATE_MESSAGE):
            target = self.world.messages.get(rec.message_id or 0)
            if target is None:
                raise ApiError(404, 10008)
            if cb_type == CB_UPDATE_MESSAGE:
                await self._apply_edit(target, data, req.files)
            rec.original_message_id = int(target["id"])
            message = target
        rec.response_type = cb_type
        if req.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        info: JSON = {
            "id": p.sid(rec.id),
            "type": rec.type,
            "response_message_loading": cb_type == CB_DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(message and int(message["flags"]) & p.MESSAGE_FLAG_EPHEMERAL),
        }
        resource: JSON = {"type": cb_type}
        if message is not None:
            info["response_message_id"] = message["id"]
            resource["message"] = self._public(message)
        return 200, {"interaction": info, "resource": resource}

    def _deferred_placeholder(self, rec: InteractionRecord, data: JSON) -> JSON:
        # Discord creates the "<bot> is thinking..." message without the usual content checks.
        flags = p.MESSAGE_FLAG_LOADING | (int(data.get("flags") or 0) & p.MESSAGE_FLAG_EPHEMERAL)
        world = self.world
        guild = world.guild_of_channel(rec.channel_id)
        command_type = (rec.payload.get("data") or {}).get("type", p.COMMAND_CHAT_INPUT)
        msg_type = p.MESSAGE_DEFAULT
        if rec.type == p.INTERACTION_APPLICATION_COMMAND:
            msg_type = (
                p.MESSAGE_CHAT_INPUT_COMMAND if command_type == p.COMMAND_CHAT_INPUT else p.MESSAGE_CONTEXT_MENU_COMMAND
            )
        msg = p.message(
            p.snowflake(),
            rec.channel_id,
            world.user(world.bot_user_id),
            "",
            guild_id=guild.id if guild else None,
            member_data=self._bot_member_payload(guild.id if guild else None),
            webhook_id=world.application_id,
            application_id=world.application_id,
            interaction_metadata=p.interaction_metadata(rec.payload, world.user(rec.invoker_id)),
            type=msg_type,
            flags=flags,
        )
        return world.store_message(msg)

    def _hook_target(self, rec: InteractionRecord, req: RecordedRequest) -> JSON:
        if "message_id" in req.params:
            mid = _snowflake_param(req, "message_id", 10008)
            if mid != rec.original_message_id and mid not in rec.followup_ids:
                raise ApiError(404, 10008)
        else:
            if rec.original_message_id is None:
                raise ApiError(404, 10008)
            mid = rec.original_message_id
        data = self.world.messages.get(mid)
        if data is None:
            raise ApiError(404, 10008)
        return data

    async def get_hook_message(self, req: RecordedRequest) -> Reply:
        """``GET /webhooks/{app}/{token}/messages/@original`` (or a follow-up id)."""
        rec = self._interaction(req)
        return 200, self._public(self._hook_target(rec, req))

    async def edit_hook_message(self, req: RecordedRequest) -> Reply:
        """``PATCH /webhooks/{app}/{token}/messages/@original`` (or a follow-up id)."""
        rec = self._interaction(req)
        data = self._hook_target(rec, req)
        body = req.json if isinstance(req.json, dict) else {}
        return 200, await self._apply_edit(data, body, req.files)

    async def delete_hook_message(self, req: RecordedRequest) -> Reply:
        """``DELETE /webhooks/{app}/{token}/messages/@original`` (or a follow-up id)."""
        rec = self._interaction(req)
        data = self._hook_target(rec, req)
        await self._delete(data)
        return 204, None

    async def create_followup(self, req: RecordedRequest) -> Reply:
        """``POST /webhooks/{app}/{token}``: a follow-up message.

        Like Discord, the first follow-up after a deferred ("thinking") response replaces the
        loading message instead of creating a new one.
        """
        rec = self._interaction(req)
        if rec.response_type is None:
            raise ApiError(404, 10015)
        body = req.json if isinstance(req.json, dict) else {}
        original = self.world.messages.get(rec.original_message_id or 0)
        if original is not None and int(original["flags"]) & p.MESSAGE_FLAG_LOADING:
            self._validate_content(body, has_files=bool(req.files))
            edit = {k: v for k, v in body.items() if k != "flags"}
            edit.setdefault("content", "")
            out = await self._apply_edit(original, edit, req.files)
        else:
            data = self._new_bot_message(rec.channel_id, body, req.files, interaction=rec)
            rec.followup_ids.append(int(data["id"]))
            await self._created(data)
            out = self._public(data)
        if req.query.get("wait") in ("true", "True", "1"):
            return 200, out
        return 204, None
