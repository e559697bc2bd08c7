"""The inference service: micro-batching in one worker thread, a bounded queue, model swaps."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.inference import InferenceBusy, InferenceService, NoModel
from model import EmotionClassifier


@pytest.fixture(scope="module")
def classifier(tiny_model_dir) -> EmotionClassifier:
    return EmotionClassifier.load(tiny_model_dir)


async def test_no_model_is_a_clear_error() -> None:
    service = InferenceService()
    service.start()
    with pytest.raises(NoModel):
        await service.classify("hello")
    await service.close()


async def test_requests_are_micro_batched_off_the_loop(classifier: EmotionClassifier) -> None:
    service = InferenceService(max_batch=8, max_wait=0.05)
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
    service = InferenceService(queue_size=4)
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
    service = InferenceService()
    service.start()
    service.swap(classifier)
    first = await service.classify("swap me")
    replacement = await service.load(tiny_model_dir)
    assert service.classifier is replacement and replacement is not classifier
    second = await service.classify("swap me")
    assert [s.label for s in first.top] == [s.label for s in second.top]
    await service.close()
