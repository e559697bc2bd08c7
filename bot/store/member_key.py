"""The deployment key of member hashes: one secret, kept in a file outside the database (MOODRING_MEMBER_KEY_FILE).

A correction's member hash is ``HMAC-SHA256(key, "guild:message:member")``; the hash that counts its member
(``HMAC-SHA256(key, "member:member")``, the same for all of a member's corrections in every server: an export counts
members by it, bot/learning/community_data.py); and an opt-out's (``/privacy``, one per user across all servers)
``HMAC-SHA256(key, "opt-out:member")``. With the key outside the database,
whoever holds the database alone (a backup, a dump, a copy for analysis) cannot hash member ids against message ids
from a channel's history to find who corrected what. SQLite keeps its key in a file beside the database by default
and creates it on first run (mode 0600); PostgreSQL, where several processes (perhaps on several machines) share one
database, never creates one: the operator makes it once and gives every process the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from bot.store.errors import PermanentStoreError

__all__ = [
    "MEMBER_KEY_HOWTO",
    "MIN_KEY_BYTES",
    "create_member_key",
    "load_member_key",
    "member_digest",
    "member_hash",
    "member_key_beside",
    "opt_out_digest",
    "rehash",
]

#: A key shorter than this is refused (SHA-256's block is 64 bytes; 32 random bytes are its security).
MIN_KEY_BYTES = 32
#: How to make a key, for the messages that ask for one.
MEMBER_KEY_HOWTO = (
    "make one with `(umask 077; openssl rand -hex 32 > /etc/moodring/member.key)` and set "
    "MOODRING_MEMBER_KEY_FILE=/etc/moodring/member.key for every process that uses this database"
)


def member_key_beside(database: str | os.PathLike[str]) -> Path:
    """Where a SQLite database keeps its key unless MOODRING_MEMBER_KEY_FILE names another file: beside it."""
    return Path(f"{os.fspath(database)}.member-key")


def member_digest(key: bytes, guild_id: int, message_key: str, member_id: int) -> str:
    """The keyed hash that stands for "this member corrected this message"."""
    message = f"{int(guild_id)}:{message_key}:{int(member_id)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def opt_out_digest(key: bytes, member_id: int) -> str:
    """The keyed hash that stands for "this member opted out" (the same in every server)."""
    return hmac.new(key, f"opt-out:{int(member_id)}".encode(), hashlib.sha256).hexdigest()


def member_hash(key: bytes, member_id: int) -> str:
    """The keyed hash that stands for "this member" in every correction they make, in every server."""
    return hmac.new(key, f"member:{int(member_id)}".encode(), hashlib.sha256).hexdigest()


def rehash(key: bytes, old_hash: str) -> str:
    """A hash made with the database's old salt, keyed: what an existing row's hash becomes once the salt is gone."""
    return hmac.new(key, old_hash.encode(), hashlib.sha256).hexdigest()


def create_member_key(path: Path) -> None:
    """Write a new random key to `path` with mode 0600, unless a file is there already (another process of the same
    database may have made it at the same moment: the file appears whole or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)  # never replaces a key that is there
    finally:
        partial.unlink(missing_ok=True)


def load_member_key(path: Path, *, create: bool) -> bytes:
    """The key in `path` (its bytes, without the line end); made first when missing and `create` (SQLite).

    Raises ``PermanentStoreError`` with one line saying how to make one when it is missing (PostgreSQL), unreadable
    or too short.
    """
    try:
        if create and not path.exists():
            create_member_key(path)
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise PermanentStoreError(f"no member key at {path}: {MEMBER_KEY_HOWTO}") from None
    except OSError as error:
        raise PermanentStoreError(f"cannot read the member key {path} ({error.strerror}): {MEMBER_KEY_HOWTO}") from None
    if len(key) < MIN_KEY_BYTES:
        raise PermanentStoreError(
            f"the member key {path} is too short ({len(key)} bytes, at least {MIN_KEY_BYTES}): {MEMBER_KEY_HOWTO}"
        )
    return key
