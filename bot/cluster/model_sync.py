"""One model across the processes of a cluster: PostgreSQL `LISTEN/NOTIFY` plus the shared model directory.

Only with PostgreSQL (with SQLite there is one process, and nothing here runs). The contract:

- **Announcing.** The process that swapped a new model in (a retrain: bot/learning/retrain.py) calls
  `announce(checksums)` once the model is in `model_dir`, with the SHA-256 of every model file (`model_checksums`)
  taken from the candidate *before* it replaced the directory: read after, they could be those of another process's
  swap that came in between, and this process would then take that model for its own and ignore its announcement.
  They go with `NOTIFY` on `CHANNEL`, over a connection of its own (`bot.store.postgres.notify`: the database's side,
  and its errors, stay in the store). It never raises: a failed announcement is one log line, and the other processes
  find the swap at their next ping (see below).
- **One retrain per cluster.** `retrain_lock` is the Retrainer's `cluster_lock`: a session advisory lock
  (`RETRAIN_LOCK`) on a connection of its own, held from `/moodring retrain` until the run has swapped and announced;
  a retrain asked for in another process meanwhile is refused. Should that connection drop mid-run, a second retrain
  can start; the checksums above still bring every process to the model swapped in last.
- **Receiving.** Every process listens on a dedicated connection, from `start` to `close` (with the bot). On an
  announcement from another process it loads the model in `model_dir` off the event loop, checks that the
  directory's checksums equal the announced ones before and after loading (so that it serves exactly the files the
  sender swapped in, not a copy still arriving or a later swap), and swaps it in. A process that can't (different
  files: another file system, an unsynchronised copy; a file that does not load) keeps serving the model it has and
  logs one line saying so. Announcements that arrive while a load runs are coalesced: the latest one is loaded next.
- **A dropped connection** (server restart, network) is reconnected with back-off (bot/backoff.py); a connection
  that is silently gone is found by a ping every `ping_interval`. An announcement sent while it was down is lost,
  and so is one that the swapping process failed to send: so after every (re)connect, and after every ping, the
  directory is compared with what this process last loaded or looked at, and loaded the same way if it changed (a
  missed swap is served within `ping_interval` and a load). For the same reason `start` reads the directory before
  the start-up load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bot.backoff import Backoff
from bot.inference import InferenceService
from bot.store import StoreError, redact_url
from bot.store.postgres import hold_locks, listen, notify
from model import EmotionClassifier
from model.metadata import METADATA_FILE
from model.training_contract import model_checksums

__all__ = ["CHANNEL", "ModelSync", "announcement", "read_checksums"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The PostgreSQL notification channel of model swaps.
CHANNEL = "moodring_model_swapped"
#: Seconds to connect, to ping and to send a notification before giving up on that try.
CONNECT_TIMEOUT = 10.0
#: Reconnect waits: `retry_interval` times 1, 2, 4 ... up to this many.
RETRY_CAP = 32
#: PostgreSQL's limit on a notification's payload, in bytes.
PAYLOAD_LIMIT = 7999
#: The two keys of the cluster's retrain lock ("rt", 0): two-key advisory locks, apart from the shards' ("sh", id).
RETRAIN_LOCK = (0x7274, 0)

Checksums = dict[str, str]


class ModelMismatch(Exception):
    """The model directory does not hold the files that were announced."""


def read_checksums(model_dir: Path) -> Checksums | None:
    """The model files' checksums in `model_dir`; None when it holds no model. Blocking: run it off the event loop."""
    if not (Path(model_dir) / METADATA_FILE).is_file():
        return None
    return model_checksums(model_dir)


def announcement(sender: str, checksums: Checksums) -> str:
    """The notification payload: who swapped (so that it ignores its own) and the checksums of the new model."""
    payload = json.dumps({"sender": sender, "checksums": checksums}, sort_keys=True)
    if len(payload.encode("utf-8")) > PAYLOAD_LIMIT:  # a model of thousands of files: not one moodring exports
        raise ValueError(f"the checksums of {len(checksums)} files exceed a notification's {PAYLOAD_LIMIT} bytes")
    return payload


def _differences(expected: Checksums, found: Checksums | None) -> str:
    """Which files differ, in a few words: 'model.safetensors differs, vocab.txt missing'."""
    if found is None:
        return "no model there"
    names = sorted(set(expected) | set(found))
    parts = [
        f"{name} {'missing' if name not in found else 'unexpected' if name not in expected else 'differs'}"
        for name in names
        if expected.get(name) != found.get(name)
    ]
    more = f" and {len(parts) - 3} more" if len(parts) > 3 else ""
    return ", ".join(parts[:3]) + more


class ModelSync:
    """Announces this process's model swaps to the cluster and loads the other processes' (see the module doc)."""

    def __init__(
        self,
        url: str,
        model_dir: Path,
        inference: InferenceService,
        *,
        retry_interval: float = 1.0,
        ping_interval: float = 30.0,
    ) -> None:
        self.url = url
        self.model_dir = Path(model_dir)
        self.inference = inference
        self.retry_interval = retry_interval
        self.ping_interval = ping_interval
        self.sender = uuid.uuid4().hex  # this process (this bot) among the cluster's
        self.seen: Checksums | None = None  # the directory as this process last loaded or looked at it
        self.serving: Checksums | None = None  # the model this process swapped in or loaded after an announcement
        self.listening = False  # LISTEN is active on a live connection
        self.connections = 0  # successful (re)connects, for tests and the log
        self.loaded = 0  # announced models now serving
        self.refused = 0  # announced models that could not be loaded
        self._backoff = Backoff(
            f"listening for model swaps on {redact_url(url)}",
            log,
            cap=RETRY_CAP,
            expected=(StoreError,),
        )
        self._listener: asyncio.Task | None = None
        self._loader: asyncio.Task | None = None
        self._wanted: Checksums | None = None  # the latest announcement not yet loaded
        self._catch_up = False  # compare the directory with `seen` when the loader runs next

    async def start(self, load_model: Callable[[], Awaitable[T]]) -> T:
        """Read the directory, run the start-up `load_model` (its result is returned), then listen.

        Reading first means that a swap announced while the model loads or the listener connects is not missed:
        the directory then differs from what was read, and the first connect's catch-up loads it.
        """
        self.seen = await asyncio.to_thread(self._read_quietly)
        loaded = await load_model()
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="moodring-model-sync")
        return loaded

    @property
    def settled(self) -> bool:
        """Listening, with no announcement or catch-up waiting or loading: this process serves what it will serve
        until the next announcement or reconnect. (A swap made before that may be read half-done by the catch-up,
        which then refuses it with one line and loads it when its announcement comes.)"""
        idle = self._loader is None or self._loader.done()
        return self.listening and idle and self._wanted is None and not self._catch_up

    async def close(self) -> None:
        """Stop listening and loading; a load running in its thread finishes there and is not served."""
        for task in (self._listener, self._loader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._loader = None
        self.listening = False

    # ------------------------------------------------------------------ announcing

    @contextlib.asynccontextmanager
    async def retrain_lock(self) -> AsyncIterator[bool]:
        """The cluster's retrain lock for the block: True when this process holds it, False when another does.
        Raises `StoreError` when the database can't be reached."""
        async with hold_locks(self.url, "moodring retrain lock", timeout=CONNECT_TIMEOUT) as holder:
            yield await holder.try_lock(*RETRAIN_LOCK)

    async def announce(self, checksums: Checksums) -> bool:
        """Tell the other processes that `model_dir` holds a new model, whose files have `checksums` (taken before
        it replaced the directory; call this after swapping it in). Never raises; returns whether the announcement
        was sent."""
        try:
            self.seen = self.serving = checksums
            await notify(self.url, CHANNEL, announcement(self.sender, checksums), timeout=CONNECT_TIMEOUT)
        except Exception as error:
            log.error(
                "could not tell the other processes about the new model (%s: %s); they find it in the shared "
                "directory at their next ping",
                type(error).__name__,
                error,
            )
            return False
        log.info("told the other processes to load the new model in %s", self.model_dir)
        return True

    # ------------------------------------------------------------------ listening

    async def _listen(self) -> None:
        """Keep a connection that LISTENs on `CHANNEL`; reconnect with back-off when it fails or is lost."""
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                wait = self._backoff.failed(error, "; swaps in other processes reach this one once it is back")
                await asyncio.sleep(self.retry_interval * wait)

    async def _listen_once(self) -> None:
        """One connection's life: connect, LISTEN, catch up, ping until it is lost; raises why it ended."""
        async with listen(self.url, CHANNEL, self._on_notification, timeout=CONNECT_TIMEOUT) as listener:
            self.listening = True
            try:
                self.connections += 1
                self._backoff.succeeded(" (announcements sent meanwhile: the directory is checked for a new model)")
                self._request(catch_up=True)
                await listener.until_lost(self.ping_interval, on_ping=lambda: self._request(catch_up=True))
            finally:
                self.listening = False

    def _on_notification(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            sender, checksums = message["sender"], message["checksums"]
            if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
                raise TypeError("checksums is not a mapping of file names to digests")
        except (ValueError, KeyError, TypeError) as error:
            log.warning("ignored a model-swap notification that is not one of ours (%s)", error)
            return
        if sender == self.sender:
            return
        self._request(checksums)

    def _request(self, checksums: Checksums | None = None, *, catch_up: bool = False) -> None:
        """Load the announced model (or, for a catch-up, whatever new is in the directory) in the loader task."""
        if checksums is not None:
            self._wanted = checksums
        self._catch_up = self._catch_up or catch_up
        if self._loader is None or self._loader.done():
            self._loader = asyncio.create_task(self._load_wanted(), name="moodring-model-sync-load")

    # ------------------------------------------------------------------ loading

    async def _load_wanted(self) -> None:
        while self._wanted is not None or self._catch_up:
            wanted, self._wanted = self._wanted, None
            catch_up, self._catch_up = self._catch_up, False
            try:
                if wanted is None and catch_up:
                    wanted = await asyncio.to_thread(self._read_quietly)
                    if wanted is None or wanted == self.seen:
                        continue
                    log.info("the model in %s changed without an announcement reaching this process", self.model_dir)
                if wanted == self.serving:  # announced again, or caught up on and then announced
                    continue
                classifier = await asyncio.to_thread(self._open_verified, wanted)
            except Exception as error:
                self.refused += 1
                reason = str(error) if isinstance(error, ModelMismatch) else f"{type(error).__name__}: {error}"
                log.error(
                    "could not load the new model another process swapped in (%s); still serving the model this "
                    "process had",
                    reason,
                )
                continue
            self.inference.swap(classifier)
            self.serving = wanted
            self.loaded += 1
            log.info("now serving the new model another process swapped in (from %s)", self.model_dir)

    def _open_verified(self, expected: Checksums) -> EmotionClassifier:
        """Load the model in `model_dir` if it is exactly the `expected` files, checked before and after loading.
        Blocking: runs in a thread."""
        before = self._read_quietly()
        self.seen = before
        if before != expected:
            differences = _differences(expected, before)
            raise ModelMismatch(f"its files in {self.model_dir} are not the ones announced: {differences}")
        classifier = self.inference.open_model(self.model_dir)
        after = self._read_quietly()
        if after != expected:
            self.seen = after
            differences = _differences(expected, after)
            raise ModelMismatch(f"its files in {self.model_dir} changed while loading: {differences}")
        return classifier

    def _read_quietly(self) -> Checksums | None:
        """`read_checksums`, with an unreadable directory read as holding no model."""
        try:
            return read_checksums(self.model_dir)
        except OSError:
            return None
