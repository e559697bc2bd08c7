"""Corrections counted by members (issue 21), through the real export path on both engines: a text's label counts
only when at least two distinct members chose it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.learning.community_data import CountingRules, export_database
from bot.store import Correction, open_store
from model import ModelMetadata
from training.data import load_goemotions

T0 = 1_700_000_000.0
MEMBER_KEY = bytes(range(32))
TEXT = "that new skin is so skibbly"
#: The caps as deployed: BotConfig's defaults.
RULES = CountingRules(BotConfig.corrections_member_rows, BotConfig.corrections_server_share)


def correction(text: str = TEXT, *labels: str, guild: int = 1, at: float = T0) -> Correction:
    return Correction(guild, 2, text, labels or ("excitement",), ("neutral",), "v1", at)


@pytest.fixture(scope="module")
def model_dir(goemotions_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with the label names a trained model records (GoEmotions' own), without training one."""
    data = load_goemotions(goemotions_dir, splits=("dev",))
    directory = tmp_path_factory.mktemp("labels")
    ModelMetadata(
        labels=data.labels,
        thresholds=[0.5] * len(data.labels),
        global_threshold=0.5,
        ekman_mapping=data.ekman_mapping,
        sentiment_mapping=data.sentiment_mapping,
        backbone="none",
        max_length=32,
    ).save(directory)
    return directory


async def test_one_member_correcting_a_text_again_and_again_makes_no_row(
    store_database: str, model_dir: Path, tmp_path: Path
) -> None:
    typed = f"t{hashlib.sha256(TEXT.encode()).hexdigest()}"  # `/emotion`'s key for a typed text
    async with await open_store(store_database, member_key=MEMBER_KEY) as store:
        await store.set_corrections_enabled(1, True)
        await store.set_corrections_enabled(3, True)
        # One member: the text posted in many messages, typed into `/emotion`, and in another server.
        for key in ("m1", "m2", "m3", typed):
            assert await store.add_correction(correction(), message_key=key, member_id=7) == "stored"
        assert await store.add_correction(correction(guild=3), message_key="m9", member_id=7) == "stored"
    alone = await export_database(store_database, tmp_path / "alone", model_dir, RULES)
    assert (alone.corrections, alone.rows) == (5, 0)

    async with await open_store(store_database, member_key=MEMBER_KEY) as store:
        assert await store.add_correction(correction(), message_key="m1", member_id=8) == "stored"  # a second member
    counted = await export_database(store_database, tmp_path / "counted", model_dir, RULES)
    assert (counted.corrections, counted.rows) == (6, 1)
