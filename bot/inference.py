"""Model inference off the event loop.

One worker thread owns the model. Requests wait in a bounded asyncio queue; a batcher task takes up
to `max_batch` texts, or whatever arrived within `max_wait` of the first, and runs them as one
`predict` call in the worker thread. A full queue raises `InferenceBusy` at once instead of growing.
The model can be swapped while serving: the batch in flight finishes on the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from model import EmotionClassifier, Prediction

log = logging.getLogger(__name__)


class InferenceBusy(RuntimeError):
    """The queue is full; ask again in a moment."""


class NoModel(RuntimeError):
    """No model is loaded (none trained yet, or the first training is still running)."""


@dataclass
class _Request:
    text: str
    top_k: int | None
    future: asyncio.Future


class InferenceService:
    def __init__(self, max_batch: int = 16, max_wait: float = 0.01, queue_size: int = 256) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.classifier: EmotionClassifier | None = None
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=queue_size)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moodring-model")
        self._batcher: asyncio.Task | None = None
        self._in_flight: list[_Request] = []
        self.batches = 0
        self.served = 0
        self.rejected = 0

    @property
    def ready(self) -> bool:
        return self.classifier is not None

    def start(self) -> None:
        if self._batcher is None:
            self._batcher = asyncio.create_task(self._run(), name="moodring-inference-batcher")

    async def load(self, path: str | Path) -> EmotionClassifier:
        """Load a model in the worker thread (never on the event loop) and serve it."""
        classifier = await asyncio.get_running_loop().run_in_executor(self._worker, EmotionClassifier.load, path)
        self.swap(classifier)
        return classifier

    def swap(self, classifier: EmotionClassifier) -> None:
        """Serve `classifier` from the next batch on; the batch in flight keeps the old one."""
        self.classifier = classifier

    async def classify(self, text: str, top_k: int | None = 5) -> Prediction:
        """The model's reading of `text`, with its `top_k` emotions (all of them for None)."""
        if self.classifier is None:
            raise NoModel("no model loaded")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Request(text, top_k, future))
        except asyncio.QueueFull:
            self.rejected += 1
            raise InferenceBusy("the emotion model is busy") from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            batch = [request for request in batch if not request.future.done()]  # drop cancelled callers
            if not batch:
                continue
            self._in_flight = batch
            classifier = self.classifier
            wanted = [request.top_k for request in batch]
            top_k = None if None in wanted else max(wanted)
            try:
                if classifier is None:
                    raise NoModel("no model loaded")
                predictions = await loop.run_in_executor(
                    self._worker, classifier.predict, [r.text for r in batch], top_k
                )
            except Exception as error:  # one bad batch fails its callers, not the service
                log.exception("inference failed for a batch of %d", len(batch))
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            self.batches += 1
            self.served += len(batch)
            for request, prediction in zip(batch, predictions, strict=True):
                if not request.future.done():
                    top = prediction.top if request.top_k is None else prediction.top[: request.top_k]
                    request.future.set_result(replace(prediction, top=top))
            self._in_flight = []

    async def close(self) -> None:
        """Stop taking work, fail whatever is still queued, and release the worker thread."""
        if self._batcher is not None:
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
