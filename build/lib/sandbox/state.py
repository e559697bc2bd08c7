"""`moodring sandbox --state FILE`: the sandbox's world (server, members, messages, files, reactions, the commands the
bot registered) saved as JSON when the sandbox stops, and loaded when it starts.

Gateway sessions and interactions are not kept: the bot connects afresh, as after a restart on Discord. Attachment
URLs name the server's address, so they are re-pointed at the address the sandbox serves on now.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .payloads import JSON
from .world import GuildRecord, StoredFile

if TYPE_CHECKING:
    from .server import DiscordStandIn

VERSION = 1


class StateError(ValueError):
    """The state file cannot be read back; the message says why."""


def save(standin: DiscordStandIn, path: Path, cast: JSON) -> None:
    """Write the world to `path` (atomically: a crash mid-write leaves the previous file)."""
    world = standin.world
    data = {
        "version": VERSION,
        "base_url": standin.base_url,
        "cast": cast,
        "ids": {"guild": standin.guild_id, "channel": standin.channel_id, "user": standin.user_id},
        "bot_user_id": world.bot_user_id,
        "application_id": world.application_id,
        "owner_id": world.owner_id,
        "bot_user": world.bot_user,
        "users": world.users,
        "guilds": {
            gid: {
                "name": g.name,
                "owner_id": g.owner_id,
                "roles": g.roles,
                "channels": g.channels,
                "members": g.members,
                "joined_at": g.joined_at,
            }
            for gid, g in world.guilds.items()
        },
        "messages": world.messages,
        "files": {
            aid: {"filename": f.filename, "content_type": f.content_type, "data": base64.b64encode(f.data).decode()}
            for aid, f in world.files.items()
        },
        "reactors": [[mid, emoji, users] for (mid, emoji), users in world.reactors.items()],
        "global_commands": world.global_commands,
        "guild_commands": world.guild_commands,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


def load(standin: DiscordStandIn, path: Path, base_url: str) -> JSON:
    """Replace the (not yet started) stand-in's world with the one saved in `path`; returns the saved cast.

    `base_url` is where the sandbox will serve (attachment URLs are re-pointed there).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            raise StateError(f"{path} is not a moodring sandbox state file (version {data.get('version')!r})")
        _restore(standin, data, base_url)
    except (OSError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, StateError):
            raise
        raise StateError(f"cannot read the sandbox state in {path}: {error!r}") from None
    return data["cast"]


def _ints(table: dict[str, Any]) -> dict[int, Any]:
    return {int(key): value for key, value in table.items()}


def _restore(standin: DiscordStandIn, data: JSON, base_url: str) -> None:
    world = standin.world
    world.bot_user_id, world.application_id, world.owner_id = (
        int(data["bot_user_id"]),
        int(data["application_id"]),
        int(data["owner_id"]),
    )
    world.bot_user = data["bot_user"]
    world.users = _ints(data["users"])
    world.guilds = {
        int(gid): GuildRecord(
            id=int(gid),
            name=g["name"],
            owner_id=int(g["owner_id"]),
            roles=_ints(g["roles"]),
            channels=_ints(g["channels"]),
            members=_ints(g["members"]),
            joined_at=g["joined_at"],
        )
        for gid, g in data["guilds"].items()
    }
    old_base = data["base_url"]
    repointed = json.dumps(data["messages"]).replace(old_base + "/attachments/", base_url + "/attachments/")
    # Into the world's own (bounded) tables: a file saved with more keeps the newest.
    world.messages.update(_ints(json.loads(repointed)))
    world.files.update(
        (int(aid), StoredFile(f["filename"], base64.b64decode(f["data"]), f["content_type"]))
        for aid, f in data["files"].items()
    )
    world.reactors.update(((int(mid), emoji), [int(u) for u in users]) for mid, emoji, users in data["reactors"])
    world.global_commands = _ints(data["global_commands"])
    world.guild_commands = {int(gid): _ints(table) for gid, table in data["guild_commands"].items()}
    ids = data["ids"]
    standin.guild_id, standin.channel_id, standin.user_id = int(ids["guild"]), int(ids["channel"]), int(ids["user"])
