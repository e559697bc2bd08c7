"""The inference service: micro-batching in one worker thread, a bounded queue, model swaps."""

from __future__ import annotations

import asyncio
import threading

import pytest
from bot_defaults import inference_service

from bot.inference import InferenceBusy, InferenceFailed, InferenceService, NoModel
from model import EmotionClassifier


@pytest.fixture(scope="module")
def classifier(tiny_model_dir) -> EmotionClassifier:
    return EmotionClassifier.load(tiny_model_dir)


async def test_the_service_takes_every_setting_from_botconfig() -> None:
    """BotConfig is the one home of the batch, wait, queue, backend and threads defaults: the service has none."""
    service = inference_service(batch_size=3, batch_wait_ms=25.0, queue_size=7, backend="torch", threads=2)
    try:
        assert (service.max_batch, service.max_wait, service.backend, service.threads) == (3, 0.025, "torch", 2)
        assert service._queue.maxsize == 7
    finally:
        await service.close()
    with pytest.raises(TypeError, match="max_batch"):
        InferenceService()  # type: ignore[call-arg]


async def test_no_model_is_a_clear_error() -> None:
    service = inference_service()
    service.start()
    with pytest.raises(NoModel):
        await service.classify("hello")
    await service.close()


async def test_requests_are_micro_batched_off_the_loop(classifier: EmotionClassifier) -> None:
    service = inference_service(batch_size=8, batch_wait_ms=50.0)
    service.swap(classifier)
    threads: set[str] = set()
    original = classifier.predict

    def predict(texts, top_k):
        threads.add(threading.current_thread().name)
        return original(texts, top_k)

    classifier.predict = predict
    try:
        service.start()
        results = await asyncio.gather(*(service.classify(f"message number {i}", top_k=3) for i in range(20)))
    finally:
        del classifier.predict
        await service.close()
    assert [r.text for r in results] == [f"message number {i}" for i in range(20)]
    assert all(len(r.top) == 3 for r in results)
    assert service.served == 20 and service.batches <= 4  # 20 requests in batches of up to 8
    assert threads and all(name.startswith("moodring-model") for name in threads)


async def test_full_queue_answers_busy_instead_of_growing(classifier: EmotionClassifier) -> None:
    service = inference_service(queue_size=4)
    service.swap(classifier)  # not started: nothing drains the queue
    waiting = [asyncio.ensure_future(service.classify(f"text {i}")) for i in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(InferenceBusy):
        await service.classify("one too many")
    assert service.rejected == 1
    await service.close()
    for future in waiting:
        with pytest.raises(NoModel, match="shutting down"):
            await future


async def test_swap_serves_the_new_model(classifier: EmotionClassifier, tiny_model_dir) -> None:
    service = inference_service()
    service.start()
    service.swap(classifier)
    first = await service.classify("swap me")
    replacement = await service.load(tiny_model_dir)
    assert service.classifier is replacement and replacement is not classifier
    second = await service.classify("swap me")
    assert [s.label for s in first.top] == [s.label for s in second.top]
    await service.close()


# ----------------------------------------------------------------------------------------------- faults


class BatcherKilled(BaseException):
    """Not an `Exception`: nothing in the batcher catches it, so it ends the task (like a cancel would)."""


def faulty(classifier: EmotionClassifier, fault, calls: set[int]):
    """`classifier.predict`, but calls numbered in `calls` (from 1) run `fault(texts, top_k)` instead."""
    original = classifier.predict
    count = 0

    def predict(texts, top_k):
        nonlocal count
        count += 1
        return fault(texts, top_k) if count in calls else original(texts, top_k)

    return predict


async def test_the_batcher_survives_an_error_outside_the_model_call(classifier: EmotionClassifier) -> None:
    """A model that answers one prediction short breaks the batcher's own bookkeeping (not `predict`, whose
    errors were always caught): that batch's callers get an error, and the next batch is served."""
    service = inference_service(batch_size=1, batch_wait_ms=0.0)
    service.swap(classifier)
    classifier.predict = faulty(classifier, lambda texts, top_k: [], {1})
    service.start()
    try:
        with pytest.raises(InferenceFailed):
            await asyncio.wait_for(service.classify("the broken one"), 5)
        answer = await asyncio.wait_for(service.classify("the next one"), 5)
    finally:
        del classifier.predict
        await service.close()
    assert answer.text == "the next one"
    assert service.served == 1


async def test_a_cancelled_batcher_is_restarted(classifier: EmotionClassifier) -> None:
    service = inference_service()
    service.swap(classifier)
    service.start()
    try:
        first = service._batcher
        first.cancel()  # the fault: something cancels the task
        answer = await asyncio.wait_for(service.classify("still there?"), 5)
        assert service._batcher is not first and not service._batcher.done()
        assert service.restarts == 1
    finally:
        await service.close()
    assert answer.text == "still there?"


async def test_a_batcher_killed_mid_burst_fails_its_batch_and_serves_the_rest(classifier: EmotionClassifier) -> None:
    """The second batch raises a BaseException, which ends the batcher task: its callers get an error at once,
    the batcher is restarted, every later request is answered, and no caller waits forever."""

    def kill(texts, top_k):
        raise BatcherKilled

    service = inference_service(batch_size=4, batch_wait_ms=10.0)
    service.swap(classifier)
    classifier.predict = faulty(classifier, kill, {2})
    service.start()
    try:
        calls = [asyncio.ensure_future(service.classify(f"message {i}")) for i in range(40)]
        _, pending = await asyncio.wait(calls, timeout=10)
    finally:
        del classifier.predict
        await service.close()
    assert not pending, f"{len(pending)} callers still waiting"
    failed = [call for call in calls if call.exception() is not None]
    assert all(isinstance(call.exception(), InferenceFailed) for call in failed)
    assert 1 <= len(failed) <= 4  # the killed batch only
    assert calls[-1].exception() is None and calls[-1].result().text == "message 39"
    assert service.served == 40 - len(failed)
    assert service.restarts == 1


@pytest.mark.timing
async def test_classify_gives_up_after_its_timeout(classifier: EmotionClassifier) -> None:
    """A model call that hangs (a stuck worker thread) never leaves a caller waiting past the timeout."""
    release = threading.Event()
    service = inference_service(batch_size=1, batch_wait_ms=0.0)
    service.timeout = 0.3
    service.swap(classifier)
    original = classifier.predict
    classifier.predict = faulty(classifier, lambda texts, top_k: release.wait(30) and original(texts, top_k), {1})
    service.start()
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(service.classify("stuck"), 5)
        assert asyncio.get_running_loop().time() - started < 2
        with pytest.raises(TimeoutError):
            await service.classify("behind the stuck one", timeout=0.1)
        release.set()
        answer = await asyncio.wait_for(service.classify("after"), 5)
    finally:
        release.set()
        del classifier.predict
        await service.close()
    assert answer.text == "after"
    assert service.timed_out == 2


async def test_the_service_loads_models_through_its_configured_backend_and_threads(
    onnx_model_dir, tiny_model_dir
) -> None:
    """MOODRING_BACKEND and MOODRING_THREADS reach the classifier the bot serves, for every load."""
    service = inference_service(backend="onnx-int8", threads=1)
    service.start()
    try:
        served = await service.load(onnx_model_dir)
        assert (served.backend, served.threads) == ("onnx-int8", 1)
        assert (await service.classify("thank you so much!")).top
        torch_service = inference_service(backend="torch", threads=1)
        assert (await torch_service.load(onnx_model_dir)).backend == "torch"
        await torch_service.close()
        # `auto` serves fp32 ONNX where the model has it, torch where it doesn't (the tiny model has no ONNX files).
        auto = inference_service(backend="auto", threads=1)
        assert (await auto.load(onnx_model_dir)).backend == "onnx"
        assert (await auto.load(tiny_model_dir)).backend == "torch"
        await auto.close()
    finally:
        await service.close()


async def test_the_worker_gives_up_the_cores_a_retrain_takes_and_gets_them_back(onnx_model_dir, tiny_model_dir) -> None:
    """While a retrain child runs, the served model uses the cores that are left (at least one), then all again."""
    for directory in (onnx_model_dir, tiny_model_dir):  # fp32 ONNX and torch
        service = inference_service(backend="auto", threads=2)
        service.start()
        try:
            served = await service.load(directory)
            assert served.threads == 2
            await service.reserve_cores(1)
            assert service.classifier.threads == 1
            assert (await service.classify("thank you so much!")).top  # still serving, on the one core left
            await service.reserve_cores(5)
            assert service.classifier.threads == 1  # never below one
            await service.reserve_cores(0)
            assert service.classifier.threads == 2
            await service.reserve_cores(1)
            assert (await service.load(directory)).threads == 1  # a model swapped in mid-retrain keeps the limit
        finally:
            await service.close()
