"""Retraining in a child process: progress, swap or keep by dev macro-F1, failures and cancellation."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from pathlib import Path

import pytest
from bot_defaults import BOT_DEFAULTS, RETRAIN_SETTINGS, inference_service
from bot_fixtures import wait_until
from process_guard import process_alive
from safetensors.torch import load_file, save_file

import bot.learning.retrain
from bot.config import split_retrain_args
from bot.learning.progress_text import format_status
from bot.learning.retrain import Retrainer, RetrainStatus, should_swap
from bot.learning.training_child import child_environment
from model import EmotionClassifier, ModelMetadata
from model.training_contract import ProgressReader, reusable_dev_f1

#: The gate's community-dev minimum, BotConfig's (the swap-rule tests below compare GoEmotions dev only).
MIN_ROWS = BOT_DEFAULTS.community_dev_min_rows
TINY_ARGS = "--epochs 1 --train-limit 64 --dev-limit 64 --max-length 16 --batch-size 16 --learning-rate 1e-3"
#: Training that runs until it is stopped (for tests that need a running child, not a result).
LONG_ARGS = "--epochs 1000 --patience 1000 --train-limit 256 --dev-limit 32 --max-length 16"


def test_swap_rule() -> None:
    assert should_swap(0.40, None, 0.005, min_community_rows=MIN_ROWS)  # no model yet: anything trained is better
    assert should_swap(0.50, 0.50, 0.005, min_community_rows=MIN_ROWS)
    assert should_swap(0.496, 0.50, 0.005, min_community_rows=MIN_ROWS)
    assert not should_swap(0.494, 0.50, 0.005, min_community_rows=MIN_ROWS)


@pytest.fixture
async def serving(tmp_path: Path, tiny_model_dir: Path, tiny_dev_report: dict):
    """An inference service serving a copy of the tiny model (with its dev report) from `tmp_path/model`."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    service = inference_service()
    service.start()
    await service.load(model_dir)
    yield service, model_dir
    await service.close()


def make_retrainer(service, model_dir: Path, tmp_path: Path, backbone: Path, data_dir: Path, **kwargs) -> Retrainer:
    options = RETRAIN_SETTINGS | {"extra_args": TINY_ARGS, "tolerance": 0.005, "progress_interval": 0.2} | kwargs
    return Retrainer(service, model_dir, tmp_path / "runs", backbone=str(backbone), data_dir=str(data_dir), **options)


async def test_candidate_is_swapped_in_while_serving_and_a_cancel_during_the_swap_waits_for_it(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, model_dir = serving
    old = service.classifier
    old_created = ModelMetadata.load(model_dir).created_at
    # A tolerance of 1.0 accepts any candidate, so this checks the swap itself, not which model is better.
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, tolerance=1.0)
    updates: list[RetrainStatus] = []
    served = 0
    in_swap, release_swap = threading.Event(), threading.Event()
    real_replace = bot.learning.retrain.replace_directory

    def held_replace(new: Path, target: Path) -> None:  # the swap's disk step, held until the cancel is in
        in_swap.set()
        release_swap.wait(60)
        real_replace(new, target)

    monkeypatch.setattr(bot.learning.retrain, "replace_directory", held_replace)

    async def report(status: RetrainStatus) -> None:
        updates.append(RetrainStatus(**vars(status)))

    async def keep_asking() -> None:  # requests keep succeeding all through the retrain and the swap
        nonlocal served
        while retrainer.running:
            await service.classify("still there?")
            served += 1
            await asyncio.sleep(0.05)

    assert await retrainer.start(report)
    assert not await retrainer.start(report)  # one retrain at a time
    asker = asyncio.create_task(keep_asking())
    await wait_until(in_swap.is_set, timeout=300, what="the swap")
    canceller = asyncio.create_task(retrainer.cancel())  # an owner's cancel, or the bot's shutdown (bot.close)
    asyncio.get_running_loop().call_soon(release_swap.set)  # runs after the canceller has cancelled the run
    answer = await canceller
    status = await retrainer.wait()
    await asker
    assert status.outcome == "swapped", status.detail
    assert status.candidate_f1 is not None and status.current_f1 is not None
    assert service.classifier is not old and served > 0
    # Disk and memory agree: what answers is the model now on disk, and it is not the old one.
    assert ModelMetadata.load(model_dir).created_at != old_created
    assert service.classifier.metadata == ModelMetadata.load(model_dir)
    on_disk = EmotionClassifier.load(model_dir)
    for text in ["I love this so much!", "This is awful and I am furious.", "ok"]:  # one at a time, as served
        answered = await service.classify(text, top_k=None)
        assert answered == on_disk.predict([text], top_k=None)[0] != old.predict([text], top_k=None)[0]
    phases = [u.phase for u in updates]
    assert "evaluating" in phases and phases[-1] == "swapped"
    assert "New model is now serving" in format_status(status)
    assert "keeps serving" not in format_status(status)
    assert answer is status  # what /moodring retrain-cancel shows


async def test_candidate_below_the_bar_is_rejected(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    service, model_dir = serving
    old = service.classifier
    before = (model_dir / "model.safetensors").read_bytes()
    # A tolerance of -1.0 demands a macro-F1 gain of a whole point, which no candidate can reach.
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, tolerance=-1.0)
    await retrainer.start()
    status = await asyncio.wait_for(retrainer.wait(), 300)
    assert status.outcome == "kept"
    assert service.classifier is old
    assert (model_dir / "model.safetensors").read_bytes() == before
    text = format_status(status)
    assert f"{status.candidate_f1:.3f}" in text and f"{status.current_f1:.3f}" in text


async def test_failed_training_keeps_the_current_model_and_posts_only_a_short_reason(
    serving, tmp_path: Path, tiny_backbone_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, model_dir = serving
    old = service.classifier
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, tmp_path / "no-such-data")
    await retrainer.start()
    with caplog.at_level(logging.WARNING, logger="bot.learning.training_child"):
        status = await asyncio.wait_for(retrainer.wait(), 120)
    assert status.outcome == "failed"
    assert service.classifier is old and (model_dir / "moodring.json").is_file()
    text = format_status(status)
    assert "current model keeps serving" in text and "exited with code 2" in text
    # The child's last line names host paths; it goes to the bot's log, never to Discord.
    assert "no such directory" not in text and str(tmp_path) not in text and "/" not in status.detail
    assert any("no such directory" in record.getMessage() for record in caplog.records)


async def test_cancel_stops_the_child_and_keeps_the_model(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    service, model_dir = serving
    old = service.classifier
    retrainer = make_retrainer(
        service,
        model_dir,
        tmp_path,
        tiny_backbone_dir,
        goemotions_dir,
        extra_args="--epochs 1000 --patience 1000 --train-limit 256 --dev-limit 32 --max-length 16",
    )
    seen_training = asyncio.Event()

    async def report(status: RetrainStatus) -> None:
        if status.phase == "training":
            seen_training.set()

    await retrainer.start(report)
    await asyncio.wait_for(seen_training.wait(), 120)
    child = retrainer.child_pid
    assert child is not None and process_alive(child)
    assert await retrainer.cancel()
    status = await retrainer.wait()
    assert status.outcome == "cancelled" and status.detail == "cancelled by an owner"
    assert not process_alive(child), f"training child {child} outlived the cancel"
    assert service.classifier is old and not retrainer.running
    assert not await retrainer.cancel()  # nothing left to cancel
    assert "keeps serving" in format_status(status)


@pytest.mark.timing
async def test_clean_up_after_a_retrain_does_not_block_the_event_loop(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    service, model_dir = serving
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, extra_args=LONG_ARGS)
    await retrainer.start()
    await wait_until(lambda: retrainer.child_pid is not None, timeout=60, what="the training child")
    # A candidate as heavy to delete as a real model directory, in many files.
    [run_dir] = (tmp_path / "runs").glob("retrain-*")
    await asyncio.to_thread(fill_with_files, run_dir / "model", directories=200, files_each=100)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop_probe = asyncio.Event()

    async def probe() -> None:
        while not stop_probe.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            lags.append(loop.time() - before - 0.005)

    prober = asyncio.create_task(probe())
    await retrainer.cancel()
    stop_probe.set()
    await prober
    status = await retrainer.wait()
    assert status.outcome == "cancelled"
    assert not (run_dir / "model").exists()  # cleaned up...
    assert len(lags) > 10 and max(lags) < 0.1, f"the event loop stalled for {max(lags):.3f} s"  # ...off the loop


def fill_with_files(root: Path, directories: int, files_each: int) -> None:
    for d in range(directories):
        folder = root / f"part-{d}"
        folder.mkdir(parents=True)
        for f in range(files_each):
            (folder / f"shard-{f}.bin").write_bytes(b"x" * 64)


async def test_a_stale_dev_report_is_not_reused(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path, tiny_dev_report: dict
) -> None:
    service, model_dir = serving
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, goemotions_dir)
    reused_log = tmp_path / "eval-reused.log"
    assert await retrainer._dev_scores(model_dir, reused_log, None) == (tiny_dev_report["macro_f1"], None)
    assert not reused_log.exists()  # the report beside the model matched its files: no child ran

    # Other weights copied over the model (say, by hand), with the old report left beside them; a report
    # claiming a far better score must not be believed either.
    weights = load_file(model_dir / "model.safetensors")
    save_file({k: t * 0.5 for k, t in weights.items()}, model_dir / "model.safetensors", metadata={"format": "pt"})
    stale = json.loads((model_dir / "eval-dev.json").read_text())
    stale["macro_f1"] = 0.99
    (model_dir / "eval-dev.json").write_text(json.dumps(stale))
    fresh_log = tmp_path / "eval-fresh.log"
    f1, _ = await retrainer._dev_scores(model_dir, fresh_log, None)
    assert fresh_log.exists() and f1 != 0.99  # evaluated again...
    assert f1 == json.loads((model_dir / "eval-dev.json").read_text())["macro_f1"]  # ...and the new report kept
    assert reusable_dev_f1(model_dir / "eval-dev.json", str(goemotions_dir)) == f1


def test_a_dev_report_is_reused_only_for_the_same_data(
    tmp_path: Path, tiny_model_dir: Path, tiny_dev_report: dict, goemotions_dir: Path
) -> None:
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    data_dir = tmp_path / "data"  # a writable copy of what evaluation reads
    shutil.copytree(goemotions_dir, data_dir, ignore=shutil.ignore_patterns("train.tsv"), copy_function=shutil.copyfile)
    report = json.loads((model_dir / "eval-dev.json").read_text())
    report["data_dir"] = str(data_dir)  # as if it had been evaluated on this copy, which is identical
    (model_dir / "eval-dev.json").write_text(json.dumps(report))
    assert reusable_dev_f1(model_dir / "eval-dev.json", str(data_dir)) == tiny_dev_report["macro_f1"]
    assert reusable_dev_f1(model_dir / "eval-dev.json", str(goemotions_dir)) is None  # another directory
    assert reusable_dev_f1(model_dir / "eval-dev.json", None) is None  # data from the hub: cannot be checked
    assert reusable_dev_f1(model_dir / "eval-dev.json", str(data_dir), "torch") == tiny_dev_report["macro_f1"]
    assert reusable_dev_f1(model_dir / "eval-dev.json", str(data_dir), "onnx-int8") is None  # another backend
    with (data_dir / "dev.tsv").open("a", encoding="utf-8") as dev:
        dev.write("one more row\t27\tzzzzzzz\n")
    assert reusable_dev_f1(model_dir / "eval-dev.json", str(data_dir)) is None  # the dev split changed


def test_training_progress_and_dev_reports_are_read_as_they_are_written(
    tiny_model_dir: Path, tiny_dev_report: dict, goemotions_dir: Path
) -> None:
    """The files `moodring train` and `moodring evaluate` write, read by the bot's side of the contract."""
    status = RetrainStatus()
    # The session's tiny model was trained with work_dir=<its parent>/run: this is its real progress.jsonl.
    status.follow(ProgressReader(tiny_model_dir.parent / "run" / "progress.jsonl").read())
    history = ModelMetadata.load(tiny_model_dir).dev_metrics["history"]
    assert status.phase == "training" and (status.epoch, status.epochs) == (1, 1)
    assert status.total_steps > 0 and status.step == status.total_steps and status.percent == 100
    assert status.dev_f1 == [epoch["macro_f1"] for epoch in history]
    # eval-dev.json as `moodring evaluate --split dev` wrote it beside the model: read, trusted, gated.
    f1 = reusable_dev_f1(tiny_model_dir / "eval-dev.json", str(goemotions_dir))
    assert f1 == tiny_dev_report["macro_f1"]
    assert should_swap(f1, f1, tolerance=0.0, min_community_rows=MIN_ROWS)
    assert not should_swap(f1 - 0.01, f1, tolerance=0.005, min_community_rows=MIN_ROWS)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ("--out /srv/elsewhere", "--out"),
        ("--epochs 2 --out=/srv/elsewhere", "--out"),
        ("--ou /srv/elsewhere", "--out"),
        ("--work-dir /tmp/w", "--work-dir"),
        ("--work-dir=/tmp/w --epochs 2", "--work-dir"),
        ("--work-d /tmp/w", "--work-dir"),
        ("--wo /tmp/w", "--work-dir"),
    ],
)
def test_retrain_args_may_not_choose_where_the_candidate_goes(args: str, flag: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=flag):
        split_retrain_args(args)
    with pytest.raises(ValueError, match=flag):
        Retrainer(
            inference_service(),
            tmp_path / "model",
            tmp_path / "runs",
            backbone="minilm",
            data_dir=None,
            **RETRAIN_SETTINGS | {"extra_args": args},
        )


def test_retrain_args_that_only_tune_training_are_accepted() -> None:
    assert split_retrain_args("") == []
    args = "--epochs 3 --workers 2 --weight-decay 0.1 --warmup-ratio 0.05 --data-dir '/srv/go emotions'"
    assert split_retrain_args(args) == [
        "--epochs", "3", "--workers", "2", "--weight-decay", "0.1", "--warmup-ratio", "0.05",
        "--data-dir", "/srv/go emotions",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="quotation"):
        split_retrain_args("--backbone 'unclosed")


def test_children_run_with_passive_openmp_threads_and_leave_the_bot_a_core() -> None:
    env = child_environment(cores=2)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # OpenMP threads sleep instead of spinning against the bot's
    assert env["MOODRING_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    assert child_environment(cores=8)["MOODRING_THREADS"] == "7"
    assert child_environment(cores=1)["MOODRING_THREADS"] == "1"
    assert env["DISCORD_TOKEN"] == ""
