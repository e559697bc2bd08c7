"""Corrections counted by members (issue 21), through the real export path on both engines: a text's label counts
only when at least two distinct members chose it, one member backs at most `member_rows` rows and one server gives
at most its share, all the rows a member decides fall on one side of the train / community-dev split, and the
retention prune takes a correction out of the count."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bot.config import BotConfig, ConfigError, counting_rules_setting
from bot.learning.community_data import CountingRules, ExportPlan, export_database, export_store, plan_store, split_of
from bot.store import Correction, open_store
from bot.store.member_key import member_hash
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


def texts(prefix: str, count: int) -> list[str]:
    return [f"{prefix} {i}" for i in range(count)]


async def seed(database: str, guild: int, rows: list[tuple[str, list[int]]], at: float = T0) -> None:
    """Each (text, members): every one of those members corrects the text to excitement in `guild`, at `at` + i."""
    async with await open_store(database, member_key=MEMBER_KEY) as store:
        await store.set_corrections_enabled(guild, True)
        for i, (text, members) in enumerate(rows):
            for member in members:
                stored = await store.add_correction(
                    correction(text, guild=guild, at=at + i), message_key=f"m{guild}-{text}", member_id=member
                )
                assert stored == "stored"


async def plan_of(database: str, model_dir: Path, rules: CountingRules) -> ExportPlan:
    async with await open_store(database, member_key=MEMBER_KEY) as store:
        plan = await plan_store(store, model_dir, rules)
    assert plan is not None
    return plan


async def test_one_member_backs_at_most_member_rows_rows(store_database: str, model_dir: Path) -> None:
    """A member who corrects 6 texts, each with another member: only their newest 3 count (member_rows = 3), and
    the other 3 texts are left with one member each."""
    rows = [(text, [7, 100 + i]) for i, text in enumerate(texts("mine", 6))]
    await seed(store_database, 1, rows)
    plan = await plan_of(store_database, model_dir, CountingRules(member_rows=3, server_share=1.0))
    assert sorted(row.text for row in plan.rows) == ["mine 3", "mine 4", "mine 5"]  # the newest
    assert (plan.dropped, plan.capped) == (3, 0)
    with_seven = [row for row in plan.rows if member_hash(MEMBER_KEY, 7) in row.members]
    assert len(with_seven) == 3 and max(plan.largest_shares(1)) == 1.0


async def test_one_server_gives_at_most_its_share_of_the_rows(store_database: str, model_dir: Path) -> None:
    """30 rows from one server and 10 from another, share 0.5: the first keeps its newest 10, half of the 20."""
    pairs = iter(range(1000, 2000))
    await seed(store_database, 1, [(text, [next(pairs), next(pairs)]) for text in texts("big", 30)])
    await seed(store_database, 2, [(text, [next(pairs), next(pairs)]) for text in texts("small", 10)])
    plan = await plan_of(store_database, model_dir, CountingRules(member_rows=3, server_share=0.5))
    assert plan.rows_per_server() == {1: 10, 2: 10} and plan.capped == 20
    assert {row.text for row in plan.rows if row.guild_id == 1} == {f"big {i}" for i in range(20, 30)}

    # Below `member_rows` rows a server is not capped by its share: a bot in one server still learns.
    alone = await plan_of(store_database, model_dir, CountingRules(member_rows=40, server_share=0.5))
    assert alone.rows_per_server() == {1: 30, 2: 10} and alone.capped == 0


async def test_a_members_rows_fall_on_one_side_of_the_split(
    store_database: str, model_dir: Path, tmp_path: Path
) -> None:
    """Each row is decided by the smallest hash among the members backing it, and goes where that member goes: every
    member's decided rows on one side; a group that backs the same texts together lands on one side whole."""
    rows = [(text, [i // 3, 500 + i]) for i, text in enumerate(texts("pair", 90))]  # 30 members, 3 texts each
    rows += [(text, list(range(900, 910))) for text in texts("group", 4)]  # 10 members x the same 4 texts
    await seed(store_database, 1, rows)
    rules = CountingRules(member_rows=1_000, server_share=1.0)
    plan = await plan_of(store_database, model_dir, rules)
    sides: dict[str, set[str]] = {}
    for row in plan.rows:
        assert row.members[0] == min(row.members) and row.split == split_of(row.members[0])
        sides.setdefault(row.members[0], set()).add(row.split)
    assert all(len(side) == 1 for side in sides.values()) and {"train", "dev"} <= set().union(*sides.values())
    assert len({row.split for row in plan.rows if row.text.startswith("group")}) == 1

    async with await open_store(store_database, member_key=MEMBER_KEY) as store:
        summary = await export_store(store, tmp_path / "export", model_dir, rules)
    assert summary == plan.summary()
    dev = (tmp_path / "export" / "dev.tsv").read_text(encoding="utf-8")
    assert {line.split("\t")[0] for line in dev.splitlines()} == {row.text for row in plan.rows if row.split == "dev"}


async def test_corrections_older_than_the_retention_count_for_no_member(store_database: str, model_dir: Path) -> None:
    now = T0 + 100 * 86400
    await seed(store_database, 1, [("old news", [7, 8])], at=now - 95 * 86400)
    await seed(store_database, 1, [("fresh news", [7, 8])], at=now - 86400)
    async with await open_store(store_database, member_key=MEMBER_KEY) as store:
        assert await store.prune(now) == 2
        assert len(await store.corrections(1)) == 4  # the corrections stay until an admin deletes them
        assert {c.correction.text for c in await store.counted_corrections()} == {"fresh news"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MOODRING_CORRECTIONS_MEMBER_ROWS", "0"),
        ("MOODRING_CORRECTIONS_SERVER_SHARE", "0"),
        ("MOODRING_CORRECTIONS_SERVER_SHARE", "1.5"),
        ("MOODRING_CORRECTIONS_SERVER_SHARE", "half"),
    ],
)
def test_the_caps_are_settings_with_bounds(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        BotConfig.from_env({"DISCORD_TOKEN": "x", name: value})


def test_the_caps_can_be_set() -> None:
    environment = {"MOODRING_CORRECTIONS_MEMBER_ROWS": "5", "MOODRING_CORRECTIONS_SERVER_SHARE": "0.25"}
    config = BotConfig.from_env({"DISCORD_TOKEN": "x", **environment})
    assert (
        config.counting_rules == CountingRules(member_rows=5, server_share=0.25) == counting_rules_setting(environment)
    )
    assert BotConfig.from_env({"DISCORD_TOKEN": "x"}).counting_rules == RULES
