"""Building and dispatching INTERACTION_CREATE: slash commands, context menus and component clicks.

Mixed into :class:`sandbox.server.DiscordStandIn`, which provides the world, the gateway, the recorded
requests and the reference helpers (``_user_id``, ``_member_of``, ``_resolve_channel``, ``_stored``,
``_attachment_payload``). Options are typed from the command the bot synced, as Discord does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import payloads as p
from .payloads import JSON
from .records import MessageRef, RecordedRequest, UserRef
from .world import InteractionRecord

if TYPE_CHECKING:
    from .gateway import Gateway
    from .world import World

CALLBACK_ROUTE = "/interactions/{interaction_id}/{interaction_token}/callback"


def _infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return p.OPTION_BOOLEAN
    if isinstance(value, int):
        return p.OPTION_INTEGER
    if isinstance(value, float):
        return p.OPTION_NUMBER
    if isinstance(value, tuple) and len(value) >= 2 and isinstance(value[1], bytes | bytearray):
        return p.OPTION_ATTACHMENT
    return p.OPTION_STRING


def find_component(components: Iterable[Mapping[str, Any]], custom_id: str) -> Mapping[str, Any] | None:
    """The component with ``custom_id`` anywhere in a message's component tree, or ``None``."""
    for comp in components:
        if comp.get("custom_id") == custom_id:
            return comp
        children: list[Mapping[str, Any]] = list(comp.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), Mapping):
                children.append(comp[key])
        found = find_component(children, custom_id)
        if found is not None:
            return found
    return None


class InteractionDispatch:
    """``dispatch_slash_command``, ``dispatch_context_menu``, ``dispatch_component`` and waiting for answers."""

    world: World
    gateway: Gateway

    async def _dispatch_interaction(
        self,
        itype: int,
        data: JSON,
        *,
        user: UserRef,
        channel_id: int,
        guild_id: int | None,
        member_permissions: int | None,
        message: JSON | None = None,
    ) -> JSON:
        world = self.world
        uid = self._user_id(user)
        channel = copy.deepcopy(world.channel(channel_id))
        assert channel is not None
        perms = member_permissions if member_permissions is not None else world.permissions(channel_id, uid)
        member: JSON | None = None
        if guild_id is not None:
            member = self._member_of(guild_id, uid)
            member["permissions"] = str(perms)
        channel["permissions"] = str(perms)
        app_permissions = world.bot_permissions(channel_id) if guild_id is not None else p.DEFAULT_BOT_PERMISSIONS
        token = world.new_interaction_token()
        iid = p.snowflake()
        payload = p.interaction(
            iid,
            type=itype,
            token=token,
            application_id=world.application_id,
            data=data,
            channel=channel,
            guild_id=guild_id,
            invoker=world.user(uid),
            invoker_member=member,
            app_permissions=app_permissions,
            message_data=message,
        )
        world.interactions[token] = InteractionRecord(
            id=iid,
            token=token,
            type=itype,
            payload=copy.deepcopy(payload),
            channel_id=channel_id,
            guild_id=guild_id,
            invoker_id=uid,
            message_id=int(message["id"]) if message else None,
        )
        await self.gateway.dispatch("INTERACTION_CREATE", payload, guild_id=guild_id)
        return payload

    def _command_data(self, name: str, ctype: int, guild_id: int | None) -> tuple[JSON, JSON | None]:
        """``data`` for a command interaction: id and scope from the last sync (the guild's own first)."""
        synced = self.world.find_command(name, ctype, guild_id)
        data: JSON = {"id": synced["id"] if synced else p.sid(p.snowflake()), "name": name, "type": ctype}
        if synced is not None and synced.get("guild_id"):
            data["guild_id"] = synced["guild_id"]
        return data, synced

    def _option(self, name: str, otype: int, value: Any, ctx: JSON) -> JSON:
        resolved: JSON = ctx["resolved"]
        guild_id: int | None = ctx["guild_id"]
        if otype == p.OPTION_STRING:
            out: Any = str(value)
        elif otype == p.OPTION_INTEGER:
            out = int(value)
        elif otype == p.OPTION_NUMBER:
            out = float(value)
        elif otype == p.OPTION_BOOLEAN:
            out = bool(value)
        elif otype == p.OPTION_ATTACHMENT:
            att = self._attachment_payload(ctx["channel_id"], value)
            resolved.setdefault("attachments", {})[att["id"]] = att
            out = att["id"]
        else:
            target = int(value["id"]) if isinstance(value, Mapping) else int(value)
            rec = self.world.guilds.get(guild_id) if guild_id is not None else None
            is_role = rec is not None and target in rec.roles
            if otype == p.OPTION_CHANNEL:
                channel = copy.deepcopy(self.world.channel(target))
                if channel is None:
                    raise ValueError(f"unknown channel {target}")
                channel["permissions"] = str(self.world.permissions(target, ctx["user_id"]))
                resolved.setdefault("channels", {})[p.sid(target)] = channel
            elif otype == p.OPTION_ROLE or (otype == p.OPTION_MENTIONABLE and is_role):
                assert rec is not None
                resolved.setdefault("roles", {})[p.sid(target)] = copy.deepcopy(rec.roles[target])
            else:
                uid = self._user_id(value if isinstance(value, Mapping) else target)
                resolved.setdefault("users", {})[p.sid(uid)] = self.world.user(uid)
                member = self.world.member(guild_id, uid) if guild_id is not None else None
                if member is not None:
                    partial = p.member_without_user(member)
                    partial["permissions"] = str(self.world.permissions(ctx["channel_id"], uid))
                    resolved.setdefault("members", {})[p.sid(uid)] = partial
            out = p.sid(target)
        return {"name": name, "type": otype, "value": out}

    def _options(
        self,
        path: list[str],
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        schema: list[JSON] | None,
        ctx: JSON,
    ) -> list[JSON]:
        if path:
            head, rest = path[0], path[1:]
            spec = next((o for o in schema or [] if o["name"] == head), None)
            otype = spec["type"] if spec else (p.OPTION_SUB_COMMAND_GROUP if rest else p.OPTION_SUB_COMMAND)
            inner = self._options(rest, options, spec.get("options") if spec else None, ctx)
            return [{"type": otype, "name": head, "options": inner}]
        if options is None:
            return []
        if not isinstance(options, Mapping):
            return [copy.deepcopy(dict(o)) for o in options]
        out = []
        for name, value in options.items():
            spec = next((o for o in schema or [] if o["name"] == name), None)
            otype = spec["type"] if spec else _infer_option_type(value)
            out.append(self._option(name, otype, value, ctx))
        return out

    async def dispatch_slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        user: UserRef = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
        member_permissions: int | None = None,
    ) -> JSON:
        """A user runs a slash command: INTERACTION_CREATE type 2. Returns the interaction payload.

        ``name`` may contain a subcommand path: ``"moodring channel enable"`` becomes a
        subcommand group + subcommand (types 2/1; the synced schema decides when known).
        ``options`` is either ``{name: value}`` (types come from the synced command, else from the
        Python type; users/channels/roles/attachments get ``resolved`` entries) or a list of raw
        option dicts. The command id and ``data.guild_id`` come from the last sync.
        ``member_permissions`` overrides the invoker's computed channel permissions.
        """
        channel_id, guild_id = self._resolve_channel(channel_id, guild_id)
        root, *path = name.split()
        data, synced = self._command_data(root, p.COMMAND_CHAT_INPUT, guild_id)
        ctx: JSON = {"resolved": {}, "guild_id": guild_id, "channel_id": channel_id, "user_id": self._user_id(user)}
        data["options"] = self._options(path, options, synced.get("options") if synced else None, ctx)
        if ctx["resolved"]:
            data["resolved"] = ctx["resolved"]
        return await self._dispatch_interaction(
            p.INTERACTION_APPLICATION_COMMAND,
            data,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=member_permissions,
        )

    async def dispatch_context_menu(
        self,
        name: str,
        target_message: MessageRef,
        *,
        user: UserRef = None,
        member_permissions: int | None = None,
    ) -> JSON:
        """A user runs a message context menu command: INTERACTION_CREATE type 2, data.type 3.

        The target message (id or payload) goes in ``data.resolved.messages`` with ``target_id``;
        the interaction happens in that message's channel.
        """
        target = self._stored(target_message)
        target.pop("member", None)
        channel_id, guild_id = self._resolve_channel(int(target["channel_id"]), None)
        data, _ = self._command_data(name, p.COMMAND_MESSAGE, guild_id)
        data.update(target_id=target["id"], resolved={"messages": {target["id"]: target}})
        return await self._dispatch_interaction(
            p.INTERACTION_APPLICATION_COMMAND,
            data,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=member_permissions,
        )

    async def dispatch_component(
        self, custom_id: str, message: MessageRef, *, values: Sequence[str] | None = None, user: UserRef = None
    ) -> JSON:
        """A user clicks a button (or picks select ``values``) on ``message``: INTERACTION_CREATE type 3.

        The component type is looked up in the message's components (a button if it is not there).
        """
        msg = self._stored(message)
        msg.pop("member", None)
        channel_id, guild_id = self._resolve_channel(int(msg["channel_id"]), None)
        found = find_component(msg.get("components") or [], custom_id)
        component_type = int(found["type"]) if found else p.COMPONENT_BUTTON
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None or component_type != p.COMPONENT_BUTTON:
            data["values"] = list(values or [])
        return await self._dispatch_interaction(
            p.INTERACTION_MESSAGE_COMPONENT,
            data,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=None,
            message=msg,
        )

    async def wait_for_interaction_response(
        self, interaction: Mapping[str, Any], *, timeout: float = 5.0
    ) -> RecordedRequest:
        """The callback request (``POST /interactions/{id}/{token}/callback``) answering ``interaction``."""
        iid = str(interaction["id"])
        return await self.wait_for_request(
            lambda r: r.route == CALLBACK_ROUTE and r.params.get("interaction_id") == iid, timeout=timeout
        )
