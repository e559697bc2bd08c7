"""Anyone's labelled text for `moodring evaluate --data FILE --label-map MAP`: a TSV or CSV file, and a map from its
labels onto GoEmotions labels or onto the Ekman groups.

The data file is read by its name's extension: `.tsv` tab-separated, `.csv` comma-separated, both UTF-8 and quoted
the way Python's `csv` module (and spreadsheets) quote: a field holding the delimiter, a quote or a line break is
in double quotes. Its first row is a header naming the columns; the text column (`text` by default) and the label
column (`labels`, else `label`, by default) are chosen by name, any other columns are ignored. A row may carry
several labels, split by a separator (`,` by default); blank lines are skipped.

The map is a small file, by its extension:

- `.json`: one key naming the level, `goemotions` or `ekman`, whose value maps each data set label to one target
  or a list of them: `{"goemotions": {"happy": ["joy"], "lol": "amusement"}}` or `{"ekman": {"mad": "anger"}}`;
- `.tsv`: a header row whose second column names the level, then one data set label and its targets (separated
  by commas) per row: `label<TAB>ekman`, `mad<TAB>anger`, `bittersweet<TAB>joy,sadness`.

A row carries every target its labels map to. At the `ekman` level the model's labels are collapsed into groups
(`mad -> anger` is met by a predicted anger, annoyance or disapproval), so that is the map for a data set whose
labels are broader than GoEmotions'. Every problem is a `LabelledDataError` naming the file and, where there is
one, the line. Standard library only, so that `moodring`'s argument parser can show these defaults without torch.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TEXT_COLUMN = "text"
#: The label column when none is named: the first of these the header has.
LABEL_COLUMNS = ("labels", "label")
LABEL_SEPARATOR = ","
DELIMITERS = {".tsv": "\t", ".csv": ","}
#: A map's level -> what its targets are, as a report says it.
LEVELS = {"goemotions": "GoEmotions labels", "ekman": "Ekman groups"}


class LabelledDataError(ValueError):
    """The data file or the label map is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class LabelMap:
    """Data set label -> its targets (GoEmotions labels at the `goemotions` level, Ekman groups at `ekman`)."""

    level: str
    targets: dict[str, tuple[str, ...]]
    source: Path

    def covered(self, names: Sequence[str]) -> list[str]:
        """The targets the map reaches, in the order of `names` (the model's labels, or its Ekman groups)."""
        reached = {target for targets in self.targets.values() for target in targets}
        return [name for name in names if name in reached]


@dataclass(frozen=True)
class LabelledRows:
    """The rows of a data file: each text, its data set labels, and the line it ends on."""

    texts: list[str]
    labels: list[tuple[str, ...]]
    lines: list[int]
    source: Path


def read_label_map(path: str | Path, targets_by_level: dict[str, Sequence[str]]) -> LabelMap:
    """The map in `path` (JSON or TSV, as the module says), its targets checked against `targets_by_level`
    (`goemotions` -> the model's labels, `ekman` -> its Ekman groups)."""
    path = _existing(path)
    if path.suffix.lower() == ".json":
        level, entries = _map_entries_from_json(path)
    elif path.suffix.lower() == ".tsv":
        level, entries = _map_entries_from_tsv(path)
    else:
        raise LabelledDataError(f"{path}: a label map is .json or .tsv")
    allowed, kind = targets_by_level[level], LEVELS[level][:-1]
    article = "an" if kind[0] in "AEIOU" else "a"
    targets: dict[str, tuple[str, ...]] = {}
    for where, label, values in entries:
        if label in targets:
            raise LabelledDataError(f"{where}: {label!r} is mapped twice")
        if not values:
            raise LabelledDataError(f"{where}: {label!r} maps to nothing; give it a target or drop its rows")
        for value in values:
            if value not in allowed:
                raise LabelledDataError(
                    f"{where}: {label!r} maps to {value!r}, which is not {article} {kind} "
                    f"(choose from {', '.join(allowed)})"
                )
        targets[label] = tuple(dict.fromkeys(values))
    if not targets:
        raise LabelledDataError(f"{path}: the map has no labels")
    return LabelMap(level, targets, path)


def _map_entries_from_json(path: Path) -> tuple[str, list[tuple[str, str, list[str]]]]:
    try:
        loaded = json.loads(_read_utf8(path))
    except json.JSONDecodeError as error:
        raise LabelledDataError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    if not isinstance(loaded, dict) or len(loaded) != 1 or next(iter(loaded)) not in LEVELS:
        raise LabelledDataError(f'{path}: expected one key, "goemotions" or "ekman", holding the map')
    level, mapping = next(iter(loaded.items()))
    if not isinstance(mapping, dict):
        raise LabelledDataError(f"{path}: {level!r} must hold an object: data set label -> target or list of targets")
    entries = []
    for label, values in mapping.items():
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise LabelledDataError(f"{path}: {label!r} must map to a target or a list of targets (strings)")
        entries.append((str(path), label, values))
    return level, entries


def _map_entries_from_tsv(path: Path) -> tuple[str, list[tuple[str, str, list[str]]]]:
    reader = csv.reader(io.StringIO(_read_utf8(path), newline=""), delimiter="\t")
    header = next(reader, None)
    if header is None or len(header) != 2 or header[1].strip() not in LEVELS:
        raise LabelledDataError(
            f'{path}:1: the header\'s second column names the level, "goemotions" or "ekman" (e.g. label<TAB>ekman)'
        )
    entries = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not row:
            continue
        if len(row) != 2:
            raise LabelledDataError(
                f"{where}: expected 2 tab-separated columns (data set label, targets), got {len(row)}"
            )
        entries.append((where, row[0].strip(), _split(row[1], ",")))
    return header[1].strip(), entries


def read_labelled_rows(
    path: str | Path,
    label_map: LabelMap,
    text_column: str = TEXT_COLUMN,
    label_column: str | None = None,
    separator: str = LABEL_SEPARATOR,
) -> LabelledRows:
    """Every row of the data file `path`, each of its labels checked against `label_map`.

    `label_column` None: the first of `LABEL_COLUMNS` in the header.
    """
    path = _existing(path)
    delimiter = DELIMITERS.get(path.suffix.lower())
    if delimiter is None:
        raise LabelledDataError(f"{path}: name it .tsv (tab-separated) or .csv (comma-separated), with a header row")
    reader = csv.reader(io.StringIO(_read_utf8(path), newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise LabelledDataError(f"{path}: empty file; expected a header row naming the text and label columns")
    columns = [name.strip() for name in header]
    label_column = label_column or next((name for name in LABEL_COLUMNS if name in columns), LABEL_COLUMNS[0])
    for name, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if name not in columns:
            raise LabelledDataError(
                f"{path}:1: no column {name!r} (columns: {', '.join(columns)}); choose one with {flag}"
            )
    text_at, labels_at = columns.index(text_column), columns.index(label_column)
    texts, labels, lines = [], [], []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not row:
            continue
        if len(row) != len(columns):
            raise LabelledDataError(f"{where}: expected {len(columns)} columns, got {len(row)}")
        text = row[text_at]
        if not text.strip():
            raise LabelledDataError(f"{where}: empty text")
        row_labels = _split(row[labels_at], separator)
        if not row_labels:
            raise LabelledDataError(f"{where}: no label in column {label_column!r}")
        for label in row_labels:
            if label not in label_map.targets:
                raise LabelledDataError(f"{where}: label {label!r} is not in {label_map.source}; add it to the map")
        texts.append(text)
        labels.append(tuple(dict.fromkeys(row_labels)))
        lines.append(reader.line_num)
    if not texts:
        raise LabelledDataError(f"{path}: no rows after the header")
    return LabelledRows(texts, labels, lines, path)


def _read_utf8(path: Path) -> str:
    """The file as text, less a leading byte-order mark (spreadsheets write one); not UTF-8 is an error naming the
    line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LabelledDataError(f"{path}:{line}: not valid UTF-8; save the file as UTF-8") from None


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise LabelledDataError(f"{path}: no such file")
    return path


def _split(field_text: str, separator: str) -> list[str]:
    """The non-empty, stripped parts of a field."""
    return [part.strip() for part in field_text.split(separator) if part.strip()]
