"""Schema migrations: numbered ``.sql`` scripts, one folder per engine, and the one runner both engines use.

``bot/store/migrations/<engine>/NNNN_what.sql`` upgrades a database from schema version NNNN - 1 to NNNN. Both
folders hold the same numbers (each script in its engine's SQL), and the tables they create are declared in
bot/store/schema.py. Append only: never edit a script that has shipped; add each new one to both folders, with the
same number, and its columns to the declaration.

``migrate`` applies the missing scripts in order, each in its own transaction together with its version bump. The
version is read inside that transaction (under the engine's write lock), so of several processes that open one
database at once exactly one applies each script and the others find nothing left to do. An engine supplies only
where its version lives, its transaction and its lock (``MigrationTarget``): SQLite keeps the version in
``PRAGMA user_version``, PostgreSQL in the one row of ``moodring_schema``, under an advisory lock.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Sequence
from importlib import resources

from bot.store.errors import PermanentStoreError

__all__ = ["MigrationTarget", "load_scripts", "migrate"]

log = logging.getLogger(__name__)


def load_scripts(engine: str) -> list[str]:
    """The migration scripts of ``engine`` (the folder's name), in order: the script of version N is item N - 1.

    Raises ``RuntimeError`` unless the files are numbered 1, 2, 3 ... without a gap (a packaging mistake).
    """
    folder = resources.files("bot.store").joinpath("migrations", engine)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    numbers = [int(f.name.split("_", 1)[0]) for f in files]
    if not files or numbers != list(range(1, len(files) + 1)):
        raise RuntimeError(f"the {engine} migrations are not numbered 1 to {len(files)}: {[f.name for f in files]}")
    return [f.read_text(encoding="utf-8") for f in files]


class MigrationTarget(abc.ABC):
    """One open database, as the runner sees it. ``name`` names it in messages (never with a password)."""

    #: What to use instead of a database that is too new: "database file", "database".
    noun: str = "database"

    def __init__(self, name: str) -> None:
        self.name = name

    def session(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held around the whole run: where the version lives is made ready, and a lock taken if the engine needs
        one beyond its transactions'. None by default."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One migration step: committed at the end of the block, rolled back on any error or cancellation. It holds
        the engine's write lock from the start, so that the version read inside it is still true at its commit."""

    @abc.abstractmethod
    async def version(self) -> int:
        """The schema version (0 for an empty database), inside ``transaction``."""

    @abc.abstractmethod
    async def set_version(self, version: int) -> None: ...

    @abc.abstractmethod
    async def run(self, script: str) -> None:
        """Run one migration script inside ``transaction``."""

    @abc.abstractmethod
    async def up_to_date(self, version: int) -> None:
        """Called inside the last transaction when nothing is left to apply."""


async def migrate(target: MigrationTarget, scripts: Sequence[str]) -> int:
    """Bring ``target`` to version ``len(scripts)``; the number of scripts this call applied.

    Raises ``PermanentStoreError`` for a database whose schema is newer than ``scripts`` (nothing is changed), and
    whatever the engine raises when a script fails (that script's transaction is rolled back whole; the earlier
    ones stay committed).
    """
    latest = len(scripts)
    applied = 0
    async with target.session():
        while True:
            async with target.transaction():
                version = await target.version()
                if version > latest:
                    raise PermanentStoreError(
                        f"{target.name} has schema version {version}, newer than this bot supports ({latest}); "
                        f"upgrade the bot or use another {target.noun}"
                    )
                if version == latest:
                    await target.up_to_date(latest)
                    return applied
                await target.run(scripts[version])
                await target.set_version(version + 1)
            applied += 1
            log.info("migrated %s to schema version %d", target.name, version + 1)
