"""Where an exported model lives, and replacing its directory so that a complete model is always there.

`default_model_dir` and `require_model_directory` name and check the model directory without importing torch, so a
command can say at once that there is no model.

Beside a target directory `<name>`, this module's own siblings are `.<name>.<kind>-<pid>`: `staging` (being
written), `incoming` (complete, about to become the target) and `retired` (the target it replaces).
`replace_directory` swaps with two renames; `recover_directory` repairs what a crash between them leaves.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from model.metadata import METADATA_FILE

#: Where `moodring train` writes the model and the bot and `moodring classify` read it, relative to the working
#: directory, unless MOODRING_MODEL_DIR (or --model) says otherwise. Here, not in model/classifier.py, so that
#: `moodring sandbox` can name it without importing torch.
DEFAULT_MODEL_DIR = Path("models/moodring-goemotions")

log = logging.getLogger(__name__)


class ModelError(Exception):
    """An exported model is missing or unusable; the message says what to do."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No exported model where one was expected; the message says how to make one."""


def default_model_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`MOODRING_MODEL_DIR` in `environ` (default: the process's environment) if set, else `models/moodring-goemotions`.

    The one reader of MOODRING_MODEL_DIR: the bot's settings (bot/config.py) and every command's `--model` default.
    """
    environ = os.environ if environ is None else environ
    return Path(environ.get("MOODRING_MODEL_DIR") or DEFAULT_MODEL_DIR)


def require_model_directory(path: str | Path | None = None) -> Path:
    """The model directory (`path`, else `default_model_dir()`); ModelNotFoundError, naming it, without a model."""
    directory = Path(path) if path is not None else default_model_dir()
    if directory.is_file():
        raise ModelNotFoundError(
            f"{directory} is a file, not a model directory: point --model / MOODRING_MODEL_DIR at the directory "
            "`moodring train` exported."
        )
    if not (directory / METADATA_FILE).is_file():
        raise ModelNotFoundError(
            f"No trained moodring model in {directory} (no {METADATA_FILE}). "
            "Train one with `moodring train`, or point --model / MOODRING_MODEL_DIR at an exported model directory."
        )
    return directory


SIBLING_KINDS = ("staging", "incoming", "retired")


def sibling_directory(target: Path, kind: str, pid: int | None = None) -> Path:
    """Where this process (or `pid`) keeps its `kind` copy of `target` (a kind in `SIBLING_KINDS`)."""
    target = Path(target)
    return target.parent / f".{target.name}.{kind}-{pid or os.getpid()}"


def staging_directory(target: Path) -> Path:
    """Where to write a new version of `target` before `replace_directory(staging, target)` moves it in."""
    return sibling_directory(target, "staging")


def replace_directory(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing what is there.

    `new` is first moved beside `target` (a copy when it is on another file system), so that the swap
    itself is two renames on one file system; if the second fails, or Ctrl-C arrives between them, the
    old directory is put back. Only a crash between them (SIGKILL, power loss) leaves `target` missing,
    with the old directory in `.<name>.retired-<pid>`: `recover_directory` puts it back.
    """
    new, target = Path(new), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming, retired = sibling_directory(target, "incoming"), sibling_directory(target, "retired")
    for leftover in (incoming, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.move(new, incoming)
    had_target = target.exists()
    if had_target:
        os.replace(target, retired)
    try:
        os.replace(incoming, target)
    except BaseException:
        if had_target:
            os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def recover_directory(target: Path) -> bool:
    """Repair what a crash in `replace_directory` (or in writing a staging copy) left beside `target`.

    If `target` is missing, the newest retired copy goes back in its place: the replacement never
    finished, so the directory it was replacing is the one known to be complete. Then the siblings of
    processes that are gone (and of this one) are deleted; a replace still running in another process
    is left alone. Call it at start-up, before this process replaces `target` itself. Returns True if
    `target` was restored. Blocking file work: run it off the event loop.
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.({'|'.join(SIBLING_KINDS)})-(\d+)")
    try:
        entries = list(target.parent.iterdir())
    except FileNotFoundError:
        return False
    stale: list[tuple[str, Path]] = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and (int(match[2]) == os.getpid() or not _process_exists(int(match[2]))):
            stale.append((match[1], entry))
    restored = False
    retired = sorted((path for kind, path in stale if kind == "retired"), key=lambda p: p.stat().st_mtime)
    if retired and not target.exists():
        os.replace(retired[-1], target)
        log.warning("%s was missing after an interrupted replace: restored it from %s", target, retired[-1].name)
        stale.remove(("retired", retired[-1]))
        restored = True
    for _, path in stale:
        log.info("removing %s, left by an interrupted replace", path)
        shutil.rmtree(path, ignore_errors=True)
    return restored


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
