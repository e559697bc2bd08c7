"""The retrain gate with community corrections: the rule itself (every branch), what the progress message shows,
and a retrain that exports the corrections from a real database, trains with them in a child process and scores
both models on GoEmotions dev and community dev; then the planted-pattern test on a tiny model."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from test_retrain import TINY_ARGS, make_retrainer, serving  # noqa: F401 (`serving` is a fixture)

from bot.learning.community_data import CountingRules, export_store
from bot.learning.progress_text import format_status
from bot.learning.retrain import RetrainStatus, should_swap
from bot.store import Correction, Store, open_store
from model import EmotionClassifier
from model.text_preparation import clean_markup
from model.training_contract import ProgressReader

GATE = {"tolerance": 0.005, "min_community_rows": 50}
#: Caps that keep all the planted rows of one server (the caps are tested in tests/test_corrections_counting.py).
NO_CAPS = CountingRules(member_rows=1_000, server_share=1.0)


def test_the_gate_swaps_only_when_both_dev_sets_agree() -> None:
    # No model serving yet: anything trained is better than nothing, whatever community dev says.
    assert should_swap(0.30, None, **GATE, candidate_community=0.1, current_community=None, community_rows=80)
    # GoEmotions dev worse by more than the tolerance: kept, however much better on community dev.
    assert not should_swap(0.494, 0.50, **GATE, candidate_community=0.9, current_community=0.1, community_rows=80)
    # GoEmotions dev within the tolerance and enough community rows: community dev decides.
    assert not should_swap(0.496, 0.50, **GATE, candidate_community=0.39, current_community=0.40, community_rows=80)
    assert should_swap(0.496, 0.50, **GATE, candidate_community=0.40, current_community=0.40, community_rows=80)
    assert should_swap(0.50, 0.50, **GATE, candidate_community=0.60, current_community=0.40, community_rows=50)
    assert not should_swap(0.50, 0.50, **GATE, candidate_community=0.30, current_community=0.40, community_rows=50)
    # Fewer than N community rows say too little: GoEmotions dev alone decides.
    assert should_swap(0.50, 0.50, **GATE, candidate_community=0.10, current_community=0.40, community_rows=49)
    assert not should_swap(0.40, 0.50, **GATE, candidate_community=0.90, current_community=0.40, community_rows=49)
    # No corrections at all: the rule from before community dev.
    assert should_swap(0.496, 0.50, **GATE) and not should_swap(0.494, 0.50, **GATE)


def test_the_progress_message_shows_both_numbers_for_both_models(tmp_path: Path) -> None:
    progress = tmp_path / "progress.jsonl"
    progress.write_text(
        '{"event": "dev", "epoch": 1, "macro_f1": 0.41, "community_dev_rows": 60, "community_dev_micro_f1": 0.25}\n'
        '{"event": "dev", "epoch": 2, "macro_f1": 0.42, "community_dev_rows": 60, "community_dev_micro_f1": 0.35}\n'
    )
    status = RetrainStatus(community_rows=60)
    status.follow(ProgressReader(progress).read())
    assert status.dev_f1 == [0.41, 0.42] and status.community_f1 == [0.25, 0.35]
    assert "Community dev micro-F1 by epoch (60 rows): 0.250, 0.350" in format_status(status)

    status.outcome, status.candidate_f1, status.current_f1 = "kept", 0.42, 0.43
    status.candidate_community_f1, status.current_community_f1 = 0.35, 0.50
    text = format_status(status)
    assert "new dev macro-F1 0.420 vs current 0.430" in text
    assert "Community dev micro-F1 (60 rows): new 0.350 vs current 0.500" in text
    status.outcome = "swapped"
    assert "Community dev micro-F1 (60 rows): new 0.350 vs current 0.500" in format_status(status)


# ----------------------------------------------------------------------------------------------- through a child

SUBJECTS = ["the raid", "that new skin", "this patch", "the finale", "your build", "the trailer", "my deck", "the map"]
ENDINGS = ["today", "honestly", "right now", "lol", "fr", "this week", "again", "tbh", "!!", "ngl"]
HELD_OUT = ["that song is so skibbly", "skibbly vibes all night", "the stream was skibbly", "we are so skibbly"]


def planted(count: int, guild: int) -> list[Correction]:
    """`count` different sentences with the made-up word "skibbly", each corrected to excitement."""
    texts = [f"{s} is so skibbly {e}" for e in ENDINGS for s in SUBJECTS][:count]
    return [Correction(guild, 2, clean_markup(t), ("excitement",), ("neutral",), "v0", 1_700_000_000.0) for t in texts]


async def seeded_store(path: Path, corrections: list[Correction]) -> Store:
    store = await open_store(path, member_key=bytes(range(32)))  # any deployment key (bot/store/member_key.py)
    await store.set_corrections_enabled(1, True)
    for i, correction in enumerate(corrections):
        for member in (1000 + i, 2000 + i):  # a label counts only when two members chose it
            assert await store.add_correction(correction, message_key=f"m{i}", member_id=member) == "stored"
    return store


async def test_a_retrain_exports_the_corrections_and_scores_both_models_on_community_dev(
    serving,  # noqa: F811
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
) -> None:
    service, model_dir = serving
    store = await seeded_store(tmp_path / "bot.db", planted(40, guild=1))
    try:
        retrainer = make_retrainer(
            service,
            model_dir,
            tmp_path,
            tiny_backbone_dir,
            goemotions_dir,
            tolerance=1.0,
            export_corrections=lambda out: export_store(store, out, model_dir, NO_CAPS),
            community_min_rows=1,
        )
        await retrainer.start()
        status = await asyncio.wait_for(retrainer.wait(), 600)
    finally:
        await store.close()
    assert status.outcome in ("swapped", "kept"), status.detail
    assert status.community_rows > 0 and len(status.community_f1) == 1  # one epoch, reported beside dev
    assert status.candidate_community_f1 is not None and status.current_community_f1 is not None
    assert status.candidate_f1 is not None and status.current_f1 is not None
    text = format_status(status)
    assert f"new {status.candidate_community_f1:.3f} vs current {status.current_community_f1:.3f}" in text
    run_dir = next((tmp_path / "runs").iterdir())
    assert not (run_dir / "corrections").exists()  # the corrected text stays in the database only


async def test_a_failed_export_fails_the_run_and_the_current_model_keeps_serving(
    serving,  # noqa: F811
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
) -> None:
    service, model_dir = serving
    old = service.classifier

    async def broken(out: Path):
        raise sqlite3.OperationalError("disk I/O error")

    retrainer = make_retrainer(
        service, model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, export_corrections=broken
    )
    await retrainer.start()
    status = await asyncio.wait_for(retrainer.wait(), 60)
    assert status.outcome == "failed" and "corrections failed" in status.detail and "disk" not in status.detail
    assert service.classifier is old
    assert not (next((tmp_path / "runs").iterdir()) / "train.log").exists()  # no training was started


async def test_planted_corrections_teach_a_new_word(
    serving,  # noqa: F811
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
) -> None:
    """40 corrections label a made-up word as excitement; the swapped-in model ranks excitement first on held-out
    sentences with that word, which the model serving before did not."""
    service, model_dir = serving
    before = EmotionClassifier.load(model_dir).predict([clean_markup(t) for t in HELD_OUT], top_k=None)
    assert not all(highest_score(p) == "excitement" for p in before)
    store = await seeded_store(tmp_path / "bot.db", planted(40, guild=1))
    try:
        retrainer = make_retrainer(
            service,
            model_dir,
            tmp_path,
            tiny_backbone_dir,
            goemotions_dir,
            tolerance=1.0,  # the tiny model's GoEmotions figures are noise; community dev must still not drop
            extra_args=TINY_ARGS.replace("--epochs 1", "--epochs 3") + " --extra-weight 4",
            export_corrections=lambda out: export_store(store, out, model_dir, NO_CAPS),
            community_min_rows=1,
        )
        await retrainer.start()
        status = await asyncio.wait_for(retrainer.wait(), 600)
    finally:
        await store.close()
    assert status.outcome == "swapped", format_status(status)
    assert status.candidate_community_f1 >= status.current_community_f1
    after = [await service.classify(clean_markup(t), top_k=None) for t in HELD_OUT]
    assert all(highest_score(p) == "excitement" for p in after), [p.top for p in after]


def highest_score(prediction) -> str:
    """The label the model scores highest (what it learned), whatever the display order (marked labels first)."""
    return max(prediction.top, key=lambda item: item.score).label
