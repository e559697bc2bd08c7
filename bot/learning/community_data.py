"""Community corrections as a training set: `moodring corrections export` and `/moodring retrain` write them in
GoEmotions' layout, which `moodring train --extra-data DIR` and `moodring evaluate --extra-data DIR` read with the
same loader as GoEmotions (training/data.py).

Corrections are counted by members (issue 21), each known only by a keyed hash (bot/store/member_key.py), so one
member cannot poison the training data:

- **One vote per member and text**: a member's latest correction of a text, however many messages or `/emotion`
  answers it came from, in whichever servers.
- **Two members at least**: a label is kept only if at least two distinct members chose it *and* more than half of
  the text's voting members did; a text left without a label is left out (`dropped`).
- **Caps** (`CountingRules`, from BotConfig): texts are taken newest first (by their latest vote); once a member's
  votes back `member_rows` rows, their further votes are not counted. A row belongs to the server of its deciding
  member's vote (below), and no server keeps more rows than `server_share` of the export's rows, or `member_rows` if
  that is more (so that a bot in one server can still learn); a server over it keeps its newest rows. Rows left out
  by either cap are `capped`.
- **The split follows members**: each row's *deciding member* is, of the members whose votes back its labels, the
  one with the smallest hash. The row goes to `dev.tsv` or `train.tsv` by a hash of that member (`split_of`), so all
  the rows a member decides are on the same side, and a group that backs the same texts together lands on one side
  whole. (A row backed by several members follows one of them: a member's rows that someone else decides may land
  on the other side.)

Every export of the same corrections (and the same key) is byte for byte the same.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.store import MemberCorrection, Store, is_postgres_url, open_store
from model.metadata import ModelMetadata

log = logging.getLogger(__name__)

DEV_PERCENT = 20  # share of members (by the rows they decide) held out as "community dev"
LABELS_FILE = "emotions.txt"
MAPPING_FILES = {"ekman_mapping": "ekman_mapping.json", "sentiment_mapping": "sentiment_mapping.json"}
MIN_MEMBERS = 2  # distinct members who must have chosen a label for it to count


class ExportError(ValueError):
    """The corrections cannot be exported; the message says why and what to do."""


@dataclass(frozen=True)
class CountingRules:
    """The caps of an export (BotConfig's `corrections_member_rows` and `corrections_server_share`)."""

    member_rows: int  # rows one member's votes may back
    server_share: float  # share of the export's rows one server may give (at least `member_rows` rows)

    def __post_init__(self) -> None:
        if self.member_rows < 1 or not 0 < self.server_share <= 1:
            raise ValueError("member_rows must be at least 1 and server_share above 0 and at most 1")


@dataclass(frozen=True)
class ExportSummary:
    corrections: int  # counted: read from the database with their member's hash
    train_rows: int
    dev_rows: int
    dropped: int  # texts without a label chosen by two members and a majority (or only labels the model lacks)
    capped: int  # rows left out by the per-member or per-server cap

    @property
    def rows(self) -> int:
        return self.train_rows + self.dev_rows


@dataclass(frozen=True)
class ExportRow:
    text: str
    label_ids: tuple[int, ...]  # positions in the model's label list
    guild_id: int  # the server of the deciding member's vote
    split: str  # "train" or "dev", by the deciding member
    members: tuple[str, ...]  # hashes of the members whose votes back the labels; the deciding member first


@dataclass(frozen=True)
class ExportPlan:
    """What an export holds before it is written: its rows, what was left out, and the model whose labels the rows'
    ids name."""

    corrections: int
    rows: tuple[ExportRow, ...]
    dropped: int
    capped: int
    metadata: ModelMetadata

    def summary(self) -> ExportSummary:
        dev = sum(row.split == "dev" for row in self.rows)
        return ExportSummary(self.corrections, len(self.rows) - dev, dev, self.dropped, self.capped)

    def rows_per_server(self) -> Counter[int]:
        return Counter(row.guild_id for row in self.rows)

    def largest_shares(self, top: int) -> list[float]:
        """The shares of the rows that the `top` members backing most rows back, largest first (a row is backed by
        two members at least, so shares add up to more than 1)."""
        backed = Counter(member for row in self.rows for member in row.members)
        return [count / len(self.rows) for _, count in backed.most_common(top)]


def split_of(key: str, dev_percent: int = DEV_PERCENT) -> str:
    """ "dev" or "train", from a hash of `key` (a member's hash): the same key always lands in the same split."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % 100
    return "dev" if bucket < dev_percent else "train"


def plan_export(
    corrections: Sequence[MemberCorrection],
    metadata: ModelMetadata,
    rules: CountingRules,
    dev_percent: int = DEV_PERCENT,
) -> ExportPlan:
    """The rows that `corrections` (oldest first, as `Store.counted_corrections` returns them) make under the
    module's counting rules, for a model with `metadata`'s labels."""
    votes: dict[str, dict[str, tuple[int, MemberCorrection]]] = {}  # text -> member -> (position, latest vote)
    for position, vote in enumerate(corrections):
        votes.setdefault(vote.correction.text, {})[vote.member] = (position, vote)
    newest_first = sorted(votes, key=lambda text: max(p for p, _ in votes[text].values()), reverse=True)
    index = {label: i for i, label in enumerate(metadata.labels)}
    backed: Counter[str] = Counter()  # member -> rows their votes back so far
    candidates: list[ExportRow] = []
    dropped = 0
    for text in newest_first:
        counted = [v for member, (_, v) in sorted(votes[text].items()) if backed[member] < rules.member_rows]
        chosen = Counter(label for v in counted for label in set(v.correction.labels))
        kept = {
            label
            for label, members in chosen.items()
            if members >= MIN_MEMBERS and 2 * members > len(counted) and label in index
        }
        if not kept:
            dropped += 1
            continue
        backers = [v for v in counted if kept & set(v.correction.labels)]  # by hash: the deciding member first
        backed.update(v.member for v in backers)
        candidates.append(
            ExportRow(
                text=text,
                label_ids=tuple(sorted(index[label] for label in kept)),
                guild_id=backers[0].correction.guild_id,
                split=split_of(backers[0].member, dev_percent),
                members=tuple(v.member for v in backers),
            )
        )
    rows = _capped_per_server(candidates, rules)
    return ExportPlan(len(corrections), tuple(rows), dropped, len(candidates) - len(rows), metadata)


def _capped_per_server(rows: Sequence[ExportRow], rules: CountingRules) -> list[ExportRow]:
    """`rows` (newest first) less each server's rows beyond the largest cap `cap` for which every server keeping at
    most `cap` rows leaves none above `server_share` of what is kept, or `member_rows` if that is more."""
    per_server = Counter(row.guild_id for row in rows)

    def fits(cap: int) -> bool:
        kept = sum(min(count, cap) for count in per_server.values())
        return cap <= max(rules.server_share * kept, rules.member_rows)

    cap = next((c for c in range(max(per_server.values(), default=0), 0, -1) if fits(c)), 0)
    taken: Counter[int] = Counter()
    kept_rows = []
    for row in rows:
        if taken[row.guild_id] < cap:
            taken[row.guild_id] += 1
            kept_rows.append(row)
    return kept_rows


def write_plan(plan: ExportPlan, out: Path) -> ExportSummary:
    """Write `train.tsv`, `dev.tsv` (text, label ids, id), `emotions.txt` and the group mappings into `out`.

    Label ids are positions in the model's label list, as in GoEmotions. Blocking file work: run it off the loop.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        rows = [
            (row.text, ",".join(map(str, row.label_ids)), "community-" + _text_hash(row.text))
            for row in sorted(plan.rows, key=lambda row: row.text)
            if row.split == split
        ]
        _write_atomically(out / f"{split}.tsv", _tsv(rows))
    _write_atomically(out / LABELS_FILE, "".join(f"{label}\n" for label in plan.metadata.labels))
    for attribute, name in MAPPING_FILES.items():
        _write_atomically(out / name, json.dumps(getattr(plan.metadata, attribute), indent=2) + "\n")
    return plan.summary()


def write_dataset(
    corrections: Sequence[MemberCorrection],
    out: Path,
    metadata: ModelMetadata,
    rules: CountingRules,
    dev_percent: int = DEV_PERCENT,
) -> ExportSummary:
    """`plan_export` then `write_plan`: the counted rows of `corrections`, written into `out` (blocking)."""
    return write_plan(plan_export(corrections, metadata, rules, dev_percent), out)


async def plan_store(store: Store | None, model_dir: Path, rules: CountingRules) -> ExportPlan | None:
    """What an export of the corrections of the servers that collect them would hold now (for `/moodring retrain`
    to show before it trains); None when there are no corrections, or no model yet to name the labels (the first
    training has no corrections to learn from anyway)."""
    if store is None:
        return None
    corrections = await store.counted_corrections()
    if not corrections:
        return None
    try:
        metadata = await asyncio.to_thread(ModelMetadata.load, model_dir)
    except (OSError, ValueError) as error:
        log.warning(
            "not retraining with the %d corrections: no label names from %s (%s)", len(corrections), model_dir, error
        )
        return None
    return await asyncio.to_thread(plan_export, corrections, metadata, rules)


async def export_store(store: Store | None, out: Path, model_dir: Path, rules: CountingRules) -> ExportSummary | None:
    """The corrections of the servers that collect them, counted and written for `/moodring retrain`; None when
    they make no row (or as `plan_store` says), so that the retrain trains on GoEmotions alone."""
    plan = await plan_store(store, model_dir, rules)
    return None if plan is None or not plan.rows else await asyncio.to_thread(write_plan, plan, out)


async def export_database(database: Path | str, out: Path, model_dir: Path, rules: CountingRules) -> ExportSummary:
    """Export the corrections of the servers that collect them from a bot's database file or PostgreSQL URL (it may
    be shared with a running bot: no one-bot lock)."""
    if not is_postgres_url(database) and not Path(database).is_file():
        raise ExportError(f"{database}: no such database file (the bot's MOODRING_DATABASE)")
    try:
        metadata = await asyncio.to_thread(ModelMetadata.load, model_dir)
    except (OSError, ValueError) as error:
        raise ExportError(
            f"cannot read the label names from the model in {model_dir} ({error}); pass --model with a trained model"
        ) from None
    store = await open_store(database, exclusive=False)
    try:
        corrections = await store.counted_corrections()
    finally:
        await store.close()
    return await asyncio.to_thread(write_dataset, corrections, out, metadata, rules)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _tsv(rows: Sequence[tuple[str, str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")  # quotes a text holding a tab or a newline
    writer.writerows(rows)
    return buffer.getvalue()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
