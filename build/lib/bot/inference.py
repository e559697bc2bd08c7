"""Model inference off the event loop.

One worker thread owns the model. Requests wait in a bounded asyncio queue; a batcher task takes up
to `max_batch` texts, or whatever arrived within `max_wait` of the first, and runs them as one
`predict` call in the worker thread. A full queue raises `InferenceBusy` at once instead of growing.
The model can be swapped while serving: the batch in flight finishes on the old one.

Nothing waits forever: every `classify` gives up after its timeout, an error in one batch fails only that
batch's callers (the batcher logs it, backs off and goes on), and a batcher task that ends anyway (cancelled,
or killed by a BaseException) is restarted by its done-callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.backoff import Backoff
from model import EmotionClassifier, Prediction
from model.threads import resolve_threads

if TYPE_CHECKING:
    from bot.config import BotConfig

log = logging.getLogger(__name__)

# Seconds a caller waits for its reading unless it asks for less (on_message does not): far beyond a full
# queue's worth of batches, so only a stuck model call or a dead worker thread ever reaches it (tests shorten
# `InferenceService.timeout`).
DEFAULT_TIMEOUT = 10.0
#: After a failed batch or a dead batcher: wait RETRY_INTERVAL, doubling up to RETRY_CAP intervals (2 s).
RETRY_INTERVAL = 0.05
RETRY_CAP = 40


class InferenceBusy(RuntimeError):
    """The queue is full; ask again in a moment."""


class NoModel(RuntimeError):
    """No model is loaded (none trained yet, or the first training is still running)."""


class InferenceFailed(RuntimeError):
    """The model (or the batcher) failed on this request's batch; it has been logged, and later requests are served."""


@dataclass
class _Request:
    text: str
    top_k: int | None
    future: asyncio.Future


class InferenceService:
    """The bot's reader (see the module docstring). It defines no settings of its own: BotConfig holds their
    defaults, and `from_config` passes them."""

    def __init__(self, *, max_batch: int, max_wait: float, queue_size: int, backend: str, threads: int | None) -> None:
        self.backend = backend
        self.threads = threads  # None: MOODRING_THREADS, else OMP_NUM_THREADS, else the usable cores
        self._reserved_cores = 0  # taken by a running retrain child
        self.max_batch = max_batch
        self.max_wait = max_wait  # seconds
        self.timeout = DEFAULT_TIMEOUT
        self.classifier: EmotionClassifier | None = None
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=queue_size)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moodring-model")
        self._batcher: asyncio.Task | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._backoff = Backoff("a batch of readings", log, cap=RETRY_CAP)  # after a failed batch
        self._restart_backoff = Backoff("the inference batcher", log, cap=RETRY_CAP)  # after the batcher task ended
        self._closing = False
        self._in_flight: list[_Request] = []
        self.batches = 0
        self.served = 0  # readings handed to a caller
        self.rejected = 0
        self.timed_out = 0
        self.restarts = 0

    @classmethod
    def from_config(cls, config: BotConfig) -> InferenceService:
        """The service the bot's settings describe: their batch, wait, queue, backend and threads."""
        return cls(
            max_batch=config.batch_size,
            max_wait=config.batch_wait_ms / 1000,
            queue_size=config.queue_size,
            backend=config.backend,
            threads=config.threads,
        )

    @property
    def ready(self) -> bool:
        return self.classifier is not None

    def start(self) -> None:
        if self._batcher is None and not self._closing:
            self._start_batcher()

    def _start_batcher(self) -> None:
        self._restart = None
        self._batcher = asyncio.create_task(self._run(), name="moodring-inference-batcher")
        self._batcher.add_done_callback(self._batcher_ended)

    def _batcher_ended(self, task: asyncio.Task) -> None:
        """Supervision: a batcher that ends while the service is open is restarted (after a back-off when it
        keeps dying), and the batch it held fails at once instead of waiting out its callers' timeouts."""
        if self._closing or task is not self._batcher:
            return
        error = asyncio.CancelledError("cancelled") if task.cancelled() else task.exception()
        self._fail_in_flight("the reading was interrupted; please try again")
        self.restarts += 1
        delay = RETRY_INTERVAL * self._restart_backoff.failed(error, "; restarting it")
        self._restart = asyncio.get_running_loop().call_later(delay, self._start_batcher)

    def open_model(self, path: str | Path) -> EmotionClassifier:
        """Load a model with this service's backend and threads (blocking: call it off the event loop)."""
        return EmotionClassifier.load(path, backend=self.backend, threads=self.serving_threads)

    @property
    def serving_threads(self) -> int:
        """`threads` (default: the usable cores) less the cores a running retrain takes, and at least one."""
        return max(1, resolve_threads(self.threads) - self._reserved_cores)

    async def reserve_cores(self, cores: int) -> None:
        """Leave `cores` to another process (a retrain child) until called again with 0.

        The new count is applied in the worker thread, between two batches: threads that outnumber the free
        cores make every batch wait for the busy ones (OpenMP and ONNX Runtime split each batch evenly).
        """
        self._reserved_cores = max(0, cores)
        classifier = self.classifier
        if classifier is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, classifier.set_threads, self.serving_threads)
        except Exception as error:  # the model keeps serving with the threads it has
            log.warning("could not run the model on %d threads: %s", self.serving_threads, error)

    async def load(self, path: str | Path) -> EmotionClassifier:
        """Load a model in the worker thread (never on the event loop) and serve it."""
        classifier = await asyncio.get_running_loop().run_in_executor(self._worker, self.open_model, path)
        self.swap(classifier)
        return classifier

    def swap(self, classifier: EmotionClassifier) -> None:
        """Serve `classifier` from the next batch on; the batch in flight keeps the old one."""
        self.classifier = classifier

    async def classify(self, text: str, top_k: int | None = 5, timeout: float | None = None) -> Prediction:
        """The model's reading of `text`, with its `top_k` emotions (all of them for None).

        Raises `NoModel`, `InferenceBusy` (queue full), `InferenceFailed` (its batch failed) or `TimeoutError`
        (no reading within `timeout` seconds, the service's `timeout` by default; the request is then dropped).
        """
        if self.classifier is None:
            raise NoModel("no model loaded")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Request(text, top_k, future))
        except asyncio.QueueFull:
            self.rejected += 1
            raise InferenceBusy("the emotion model is busy") from None
        try:
            return await asyncio.wait_for(future, self.timeout if timeout is None else timeout)
        except TimeoutError:
            self.timed_out += 1
            raise

    async def _run(self) -> None:
        """Serve batches until cancelled; an error in one iteration costs that batch only."""
        while True:
            try:
                await self._serve_next_batch()
            except Exception as error:
                self._fail_in_flight("the emotion model failed on this text")
                await asyncio.sleep(RETRY_INTERVAL * self._backoff.failed(error, "; its callers were told"))
            else:
                self._backoff.succeeded()
                self._restart_backoff.succeeded()

    async def _serve_next_batch(self) -> None:
        batch = [await self._queue.get()]
        self._in_flight = batch  # from here on, a dead batcher's callers are failed by its done-callback
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                break
        batch = [request for request in batch if not request.future.done()]  # drop callers that gave up
        if not batch:
            return
        self._in_flight = batch
        classifier = self.classifier  # never None once a request is queued: `classify` checks, nothing unloads
        wanted = [request.top_k for request in batch]
        top_k = None if None in wanted else max(wanted)
        predictions = await asyncio.get_running_loop().run_in_executor(
            self._worker, classifier.predict, [r.text for r in batch], top_k
        )
        answers = [
            replace(prediction, top=prediction.top if request.top_k is None else prediction.top[: request.top_k])
            for request, prediction in zip(batch, predictions, strict=True)
        ]
        self.batches += 1
        for request, answer in zip(batch, answers, strict=True):
            if not request.future.done():
                request.future.set_result(answer)
                self.served += 1
        self._in_flight = []

    def _fail_in_flight(self, reason: str) -> None:
        for request in self._in_flight:
            if not request.future.done():
                request.future.set_exception(InferenceFailed(reason))
        self._in_flight = []

    async def close(self) -> None:
        """Stop taking work, fail whatever is still queued, and release the worker thread."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
        if self._batcher is not None and not self._batcher.done():  # a dead one was already reported
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
        self._batcher = None
        waiting = list(self._in_flight)
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for request in waiting:
            if not request.future.done():
                request.future.set_exception(NoModel("the bot is shutting down"))
        self._in_flight = []
        # Never wait on the event loop: a batch still running in the thread finishes there and is dropped.
        self._worker.shutdown(wait=False, cancel_futures=True)
