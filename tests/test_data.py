"""The GoEmotions loader: the real files, and every malformed-input error naming file and line."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from training import data as data_module
from training.data import DataError, LengthGroupedSampler, PadCollator, load_goemotions, resolve_data_dir

LABELS = ["joy", "anger", "neutral"]


def write_dataset(directory: Path, rows: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "emotions.txt").write_text("\n".join(LABELS))
    (directory / "ekman_mapping.json").write_text(json.dumps({"joy": ["joy"], "anger": ["anger"]}))
    (directory / "sentiment_mapping.json").write_text(json.dumps({"positive": ["joy"], "negative": ["anger"]}))
    default = 'So happy!\t0\tid1\n"He said ""no"" twice"\t1,2\tid2\n'
    for split in ("train", "dev", "test"):
        (directory / f"{split}.tsv").write_text((rows or {}).get(split, default), encoding="utf-8")
    return directory


def test_real_goemotions_splits_and_labels(goemotions_dir: Path) -> None:
    data = load_goemotions(goemotions_dir)
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 43410, "dev": 5426, "test": 5427}
    assert len(data.labels) == 28 and data.labels[0] == "admiration" and data.labels[27] == "neutral"
    assert set(data.ekman_mapping) == {"anger", "disgust", "fear", "joy", "sadness", "surprise"}
    assert sum(len(ids) > 1 for ids in data.splits["dev"]["labels"]) == 878  # multi-label rows, per the README
    assert len(data.checksums["train.tsv"]) == 64


def test_only_requested_splits_are_read(goemotions_dir: Path) -> None:
    data = load_goemotions(goemotions_dir, splits=("dev",))
    assert list(data.splits) == ["dev"]
    assert "test.tsv" not in data.checksums


def test_quoted_fields_and_multi_labels(tmp_path: Path) -> None:
    data = load_goemotions(write_dataset(tmp_path / "ge"))
    train = data.splits["train"]
    assert train[1]["text"] == 'He said "no" twice'
    assert train[1]["labels"] == [1, 2]
    assert data.labels == LABELS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ok\t0\tid1\nno labels column\n", "train.tsv:2: expected 3 tab-separated columns"),
        ("ok\t0\tid1\nbad\t3\tid2\n", "train.tsv:2: label id 3 outside 0..2"),
        ("ok\t0\tid1\nbad\t-1\tid2\n", "train.tsv:2: label id -1 outside 0..2"),
        ("ok\t0\tid1\nbad\tjoy\tid2\n", "train.tsv:2: label ids must be comma-separated integers"),
        ("ok\t0\tid1\n   \t0\tid2\n", "train.tsv:2: empty text"),
        ("", "train.tsv: no rows"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    directory = write_dataset(tmp_path / "ge", {"train": content})
    with pytest.raises(DataError, match=message):
        load_goemotions(directory)


def test_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    content = '"two\nlines"\t0\tid1\nbad\t9\tid2\n'
    with pytest.raises(DataError, match=r"train.tsv:3: label id 9"):
        load_goemotions(write_dataset(tmp_path / "ge", {"train": content}))


@pytest.mark.parametrize("missing", ["dev.tsv", "emotions.txt", "ekman_mapping.json"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    directory = write_dataset(tmp_path / "ge")
    (directory / missing).unlink()
    with pytest.raises(DataError, match=rf"{missing}: file not found"):
        load_goemotions(directory)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (
            "train.tsv",
            b"ok\t0\tid1\ncaf\xc3\xa9 \xff\t0\tid2\n",
            r"train\.tsv:2: not valid UTF-8 \(byte 0xff at column 6\)",
        ),
        (
            "train.tsv",
            b'"two\nlines"\t0\tid1\n\x80\t0\tid2\n',
            r"train\.tsv:3: not valid UTF-8 \(byte 0x80 at column 1\)",
        ),
        ("dev.tsv", b"ok\t0\tid1\r\nok\t0\tid2\r\n\xc3(\t1\tid3\r\n", r"dev\.tsv:3: not valid UTF-8 \(byte 0xc3"),
        ("emotions.txt", b"joy\nanger\nneu\xe9tral\n", r"emotions\.txt:3: not valid UTF-8 \(byte 0xe9"),
        (
            "sentiment_mapping.json",
            b'{"positive": ["joy"],\n "\xfe": []}',
            r"sentiment_mapping\.json:2: not valid UTF-8",
        ),
    ],
)
def test_bad_byte_names_file_and_line(tmp_path: Path, file: str, content: bytes, message: str) -> None:
    directory = write_dataset(tmp_path / "ge")
    (directory / file).write_bytes(content)
    with pytest.raises(DataError, match=message + r".*save it as UTF-8"):
        load_goemotions(directory)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        load_goemotions(tmp_path / "nowhere")


def test_bad_mapping(tmp_path: Path) -> None:
    directory = write_dataset(tmp_path / "ge")
    (directory / "ekman_mapping.json").write_text('{"joy": ["glee"]}')
    with pytest.raises(DataError, match=r"ekman_mapping\.json: group 'joy' names unknown label 'glee'"):
        load_goemotions(directory)
    (directory / "ekman_mapping.json").write_text('{"joy": [\n')
    with pytest.raises(DataError, match=r"ekman_mapping.json:\d+: invalid JSON"):
        load_goemotions(directory)


def test_hub_failure_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach huggingface.co")

    monkeypatch.setattr(data_module.datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match="GOEMOTIONS_DIR"):
        load_goemotions(None)


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOEMOTIONS_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("GOEMOTIONS_DIR")
    monkeypatch.setattr(data_module, "CHECKOUT_DATA_DIR", tmp_path / "not-there")
    assert resolve_data_dir(None) is None


def test_without_a_setting_a_checkout_finds_the_shared_copy(
    monkeypatch: pytest.MonkeyPatch, goemotions_dir: Path
) -> None:
    """After `. .venv/bin/activate`, outside make: the checkout's ../shared/data/goemotions, when it is there."""
    monkeypatch.delenv("GOEMOTIONS_DIR", raising=False)
    monkeypatch.setattr(data_module, "CHECKOUT_DATA_DIR", goemotions_dir)
    assert resolve_data_dir(None) == goemotions_dir
    assert data_module.CHECKOUT_DATA_DIR.name == "goemotions"


def test_an_unreachable_hub_fails_at_once_without_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port on this machine that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)

    def retrying(*args, **kwargs):
        raise AssertionError("the hub was tried although it cannot be reached")

    monkeypatch.setattr(data_module.datasets, "load_dataset", retrying)
    with pytest.raises(DataError, match=r"cannot reach the Hugging Face hub .*GOEMOTIONS_DIR"):
        load_goemotions(None)


def test_copied_real_directory_loads_with_checksums(tmp_path: Path, goemotions_dir: Path) -> None:
    copy = shutil.copytree(goemotions_dir, tmp_path / "copy")
    (copy / "dev.tsv").write_text("changed\t0\tx\n")
    data = load_goemotions(copy, splits=("dev",))
    original = load_goemotions(goemotions_dir, splits=("dev",))
    assert data.checksums["dev.tsv"] != original.checksums["dev.tsv"]
    assert data.checksums["emotions.txt"] == original.checksums["emotions.txt"]


def test_length_grouped_sampler_is_a_seeded_permutation() -> None:
    lengths = [(i * 37) % 61 + 1 for i in range(1000)]
    first = list(LengthGroupedSampler(lengths, batch_size=10, seed=3))
    assert sorted(first) == list(range(1000))
    assert first == list(LengthGroupedSampler(lengths, batch_size=10, seed=3))
    sampler = LengthGroupedSampler(lengths, batch_size=10, seed=3)
    assert list(sampler) != list(sampler)  # a new order each epoch
    batches = [first[i : i + 10] for i in range(0, 1000, 10)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # neighbours have similar lengths (random batches would spread ~55)


def test_pad_collator() -> None:
    batch = PadCollator(pad_token_id=0)(
        [{"input_ids": [101, 7, 102], "targets": [1.0, 0.0]}, {"input_ids": [101, 102], "targets": [0.0, 1.0]}]
    )
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["targets"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
