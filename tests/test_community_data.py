"""Community corrections as training data: votes counted by members, the deterministic split, the export command,
and the corrections read back by training/data.py (errors naming file and line), mixed into training and reported
as "community dev" after each epoch and by `moodring evaluate --extra-data`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.learning.community_data import CountingRules, plan_export, split_of, write_dataset
from bot.store import Correction, MemberCorrection, open_store
from model import ModelMetadata
from training.config import TrainArgs
from training.data import DataError, load_extra_data, load_goemotions, mix_in

REPO = Path(__file__).resolve().parents[1]
#: The caps as deployed: BotConfig's defaults.
RULES = CountingRules(BotConfig.corrections_member_rows, BotConfig.corrections_server_share)
#: Caps that leave these tests' rows alone (one server, more rows than a server may give; the caps are tested in
#: tests/test_corrections_counting.py).
NO_CAPS = CountingRules(member_rows=1_000, server_share=1.0)


def correction(text: str, *labels: str, guild: int = 1) -> Correction:
    return Correction(guild, 2, text, labels, ("neutral",), "v1", 1_700_000_000.0)


def vote(member: str, text: str, *labels: str) -> MemberCorrection:
    return MemberCorrection(member, correction(text, *labels))


def by_two(corrections: list[Correction]) -> list[MemberCorrection]:
    """Each correction made by two members of its own (a label counts only when two chose it); the deciding member
    of its text's row is `a:<text>`."""
    return [MemberCorrection(f"{member}:{c.text}", c) for c in corrections for member in ("a", "b")]


@pytest.fixture(scope="module")
def metadata(goemotions_dir: Path) -> ModelMetadata:
    """Label names and groups as a trained model records them (GoEmotions' own files), without training one."""
    data = load_goemotions(goemotions_dir, splits=("dev",))
    return ModelMetadata(
        labels=data.labels,
        thresholds=[0.5] * len(data.labels),
        global_threshold=0.5,
        ekman_mapping=data.ekman_mapping,
        sentiment_mapping=data.sentiment_mapping,
        backbone="none",
        max_length=32,
    )


def test_a_label_needs_two_members_and_a_majority_of_that_texts_members(metadata: ModelMetadata) -> None:
    corrections = [
        vote("a", "alone", "joy", "love"),  # one member, however often: not enough (issue 21)
        vote("a", "alone", "joy", "love"),
        vote("a", "agreed", "excitement"),
        vote("b", "agreed", "excitement", "joy"),
        vote("c", "agreed", "anger"),  # the odd one out
        vote("a", "split", "joy"),
        vote("b", "split", "sadness"),  # one each of two: no majority, left out
        vote("a", "changed", "anger"),
        vote("b", "changed", "fear"),
        vote("a", "changed", "fear"),  # a member's latest correction of a text is their vote
    ]
    plan = plan_export(corrections, metadata, RULES)
    labels = {row.text: [metadata.labels[i] for i in row.label_ids] for row in plan.rows}
    assert labels == {"agreed": ["excitement"], "changed": ["fear"]}
    assert (plan.corrections, plan.dropped, plan.capped) == (10, 2, 0)


def test_the_split_depends_on_the_text_only() -> None:
    texts = [f"message number {i}" for i in range(400)]
    splits = [split_of(text) for text in texts]
    assert splits == [split_of(text) for text in texts]
    assert 0.1 < splits.count("dev") / len(texts) < 0.3  # about 20 %


def test_the_export_reads_back_through_the_goemotions_loader(tmp_path: Path, metadata: ModelMetadata) -> None:
    tricky = 'tabs\tand "quotes"\nand a new line'
    texts = [f"so skibbly {i}" for i in range(30)] + [tricky]
    corrections = by_two([correction(text, "excitement") for text in texts])
    summary = write_dataset(corrections, tmp_path / "out", metadata, NO_CAPS)
    assert (summary.corrections, summary.rows, summary.dropped) == (62, 31, 0)  # two members each
    again = write_dataset(corrections, tmp_path / "again", metadata, NO_CAPS)
    for name in ("train.tsv", "dev.tsv", "emotions.txt", "ekman_mapping.json", "sentiment_mapping.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again == summary

    extra = load_extra_data(tmp_path / "out", metadata.labels)
    assert extra.train is not None and extra.dev is not None
    assert len(extra.train) == summary.train_rows and len(extra.dev) == summary.dev_rows
    rows = {row["text"]: row["labels"] for split in (extra.train, extra.dev) for row in split}
    assert rows[tricky] == [metadata.labels.index("excitement")] and set(rows) == set(texts)
    assert {split_of(f"a:{text}") for text in extra.dev["text"]} == {"dev"}  # by the deciding member


def test_loader_errors_name_the_file_and_line(tmp_path: Path, metadata: ModelMetadata) -> None:
    write_dataset(by_two([correction(f"text {i}", "joy") for i in range(20)]), tmp_path, metadata, NO_CAPS)
    train_tsv = tmp_path / "train.tsv"
    lines = train_tsv.read_text(encoding="utf-8").splitlines()
    lines[1] = "a text\t99\tbad-row"
    train_tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:2: label id 99"):
        load_extra_data(tmp_path, metadata.labels)
    with pytest.raises(DataError, match="differ"):
        load_extra_data(tmp_path, list(reversed(metadata.labels)))
    with pytest.raises(DataError, match="no such directory"):
        load_extra_data(tmp_path / "missing", metadata.labels)


def test_an_empty_split_is_allowed_and_mixing_oversamples(tmp_path: Path, metadata: ModelMetadata, goemotions_dir):
    write_dataset(by_two([correction("only one", "joy")]), tmp_path, metadata, NO_CAPS)
    extra = load_extra_data(tmp_path, metadata.labels)
    assert (extra.train is None) != (extra.dev is None)  # one row, one split
    base = load_goemotions(goemotions_dir, splits=("dev",)).splits["dev"].select(range(10))
    if extra.train is not None:
        assert len(mix_in(base, extra.train, 3)) == 13
    assert len(mix_in(base, None, 3)) == 10


def test_export_command_reads_the_bots_database(tmp_path: Path, metadata: ModelMetadata) -> None:
    database = tmp_path / "bot.db"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    metadata.save(model_dir)

    async def seed() -> None:
        async with await open_store(database, member_key=bytes(range(32))) as store:
            await store.set_corrections_enabled(1, True)
            for i in range(12):
                for member in (7, 8):  # a label counts only when two members chose it
                    text = correction(f"skibbly {i}", "excitement")
                    await store.add_correction(text, message_key=f"m{i}", member_id=member)

    asyncio.run(seed())
    out = tmp_path / "export"
    command = [sys.executable, "-m", "moodring", "corrections", "export", "--database", str(database)]
    result = subprocess.run(
        [*command, "--out", str(out), "--model", str(model_dir)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Exported 24 corrections" in result.stdout
    exported = load_extra_data(out, metadata.labels)
    assert sum(len(split) for split in (exported.train, exported.dev) if split is not None) == 12
    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "nope.db"), "--out", str(out), "--model", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "no such database file" in missing.stderr and "Traceback" not in missing.stderr


def test_training_mixes_the_corrections_in_and_reports_community_dev(
    tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path, metadata: ModelMetadata
) -> None:
    from training.evaluate import evaluate, format_report
    from training.train import train

    texts = [f"the raid was so skibbly {i}" for i in range(40)]
    write_dataset(by_two([correction(text, "excitement") for text in texts]), tmp_path / "extra", metadata, NO_CAPS)
    extra = load_extra_data(tmp_path / "extra", metadata.labels)
    out = train(
        TrainArgs(
            data_dir=str(goemotions_dir),
            backbone=str(tiny_backbone_dir),
            out=str(tmp_path / "model"),
            work_dir=str(tmp_path / "run"),
            epochs=1,
            batch_size=16,
            learning_rate=1e-3,
            max_length=24,
            train_limit=64,
            dev_limit=64,
            onnx=False,
            extra_data=str(tmp_path / "extra"),
            extra_weight=2,
        )
    )
    events = [json.loads(line) for line in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()]
    (dev,) = [e for e in events if e["event"] == "dev"]
    assert dev["community_dev_rows"] == len(extra.dev) and 0 <= dev["community_dev_micro_f1"] <= 1
    assert "macro_f1" in dev  # GoEmotions dev, beside it
    steps = [e for e in events if e["event"] == "step"]
    assert steps[-1]["total_steps"] == -(-(64 + 2 * len(extra.train)) // 16)  # the corrections were mixed in
    meta = ModelMetadata.load(out)
    assert meta.training_args["extra_weight"] == 2 and "extra/train.tsv" in meta.data_checksums

    report = evaluate(out, split="dev", data_dir=goemotions_dir, extra_data=tmp_path / "extra")
    assert report["community_dev"]["rows"] == len(extra.dev)
    assert 0 <= report["community_dev"]["micro_f1"] <= 1
    assert "community dev" in format_report(report)
