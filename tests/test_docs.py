"""The documentation keeps up with the code: the README stays a front page with every page of docs/ behind it,
every relative link in them resolves (to a file, and to a heading where it names one), and `.env.example` lists
every public setting that the code reads, each with its default and a line of help."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from bot.config import BotConfig

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
#: The front page's budget: what moodring is, how to start, the commands, the headline figures, the map.
README_MAX_BYTES = 14_000
ENV_EXAMPLE = REPO / ".env.example"
#: The packages whose environment reads are the project's settings (tests/ and benchmarks/ read only their own).
CODE_PACKAGES = ("bot", "model", "training", "moodring", "sandbox")
SETTING_NAME = re.compile(r"MOODRING_[A-Z0-9_]+|DISCORD_TOKEN|GOEMOTIONS_DIR")
#: Variables the code reads that are no setting for a person: left out of `.env.example`, each with why.
INTERNAL = {
    # The pipe end a child (a training or scoring run, a cluster's or the sandbox's bot) inherits from its parent,
    # to notice that the parent died (model/parent_watch.py); the parent sets it for each child it starts.
    "MOODRING_PARENT_FD",
    # The test run's mark on every process it starts (tests/process_guard.py); `moodring sandbox` passes it on to
    # its bot so that the end-of-run check still sees that child.
    "MOODRING_TEST_RUN",
}
#: Settings whose value in `.env.example` is not the default, each with why.
NOT_THE_DEFAULT = {
    # Unset, the data comes from the hub; the example points at the project's copy, as the Makefile does.
    "GOEMOTIONS_DIR",
}


FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
#: `[text](target)` and `![alt](target)`; the target ends at the first space (a title may follow) or parenthesis.
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+[^)]*)?\)")
INLINE_CODE = re.compile(r"(`+).+?\1")


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a Markdown file outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text lowercased, punctuation dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path):
        if match := HEADING.match(line):
            anchor = github_anchor(match.group(1).replace("`", ""))
            found.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)
            seen[anchor] = seen.get(anchor, 0) + 1
    return found


def relative_links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of each link in `path` that points into the repository (not a URL, not mail)."""
    for number, line in prose_lines(path):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                yield number, target


def test_the_readme_is_a_front_page_with_the_docs_behind_it() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move the depth into docs/"
    linked = {(README.parent / target.split("#")[0]).resolve() for _, target in relative_links(README)}
    unlinked = [page.name for page in DOCS if page.resolve() not in linked]
    assert len(DOCS) >= 3 and not unlinked, f"docs/ pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for number, target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{page.name}:{number}: {target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{page.name}:{number}: {target}: no heading #{anchor} in {linked.name}")
    assert not broken, "\n".join(broken)


def names_in_code() -> set[str]:
    """Every string literal in the code whose whole value is a setting's name: the names given to `os.environ.get`,
    `env.get` and the settings' readers, and those set for child processes."""
    names: set[str] = set()
    for package in CODE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            names |= {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING_NAME.fullmatch(node.value)
            }
    return names


class RecordingEnvironment(Mapping[str, str]):
    """An empty environment that records each name looked up in it (`get`, `in` and `[]` all come here)."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def read_by_bot_config() -> set[str]:
    """The names `BotConfig.from_env` looks up, however it spells them."""
    environment = RecordingEnvironment()
    BotConfig.from_env(environment, require_token=False)
    return environment.asked


def example_settings() -> dict[str, tuple[str, str]]:
    """`.env.example`'s settings: name -> (value, the line above it)."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    settings: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            name, equals, value = line.partition("=")
            assert equals and SETTING_NAME.fullmatch(name), f".env.example:{number + 1}: not NAME=value: {line!r}"
            assert name not in settings, f".env.example:{number + 1}: {name} is listed twice"
            settings[name] = (value, lines[number - 1] if number else "")
    return settings


def test_env_example_lists_every_setting_the_code_reads() -> None:
    in_code = names_in_code()
    no_longer_read = sorted(INTERNAL - in_code)
    assert not no_longer_read, f"read nowhere in the code, so drop them from INTERNAL: {no_longer_read}"
    public = (in_code | read_by_bot_config()) - INTERNAL
    documented = set(example_settings())
    missing, stale = sorted(public - documented), sorted(documented - public)
    assert not missing, f"read by the code but missing from .env.example: {missing}"
    assert not stale, f"in .env.example but read nowhere in the code: {stale}"


def test_env_example_gives_each_setting_its_default_and_a_line_of_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOODRING_MODEL_DIR", raising=False)  # the model directory's default reads the environment
    defaults = BotConfig.from_env({}, require_token=False)
    read = read_by_bot_config()
    for name, (value, above) in example_settings().items():
        help_line = above.lstrip("#").strip()
        assert above.startswith("#") and help_line and not help_line.startswith("---"), f"{name}: no help above it"
        if name in read and name not in NOT_THE_DEFAULT:
            assert BotConfig.from_env({name: value}, require_token=False) == defaults, f"{name}={value} is no default"
