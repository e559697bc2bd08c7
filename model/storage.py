"""Replacing a model directory on disk so that a complete model is always there, or back there on failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_directory(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing what is there.

    `new` is first moved beside `target` (a copy when it is on another file system), so that the swap
    itself is two renames on one file system; if the second fails, the old directory is put back.
    """
    new, target = Path(new), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.parent / f".{target.name}.incoming-{os.getpid()}"
    retired = target.parent / f".{target.name}.retired-{os.getpid()}"
    for leftover in (incoming, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.move(new, incoming)
    had_target = target.exists()
    if had_target:
        os.replace(target, retired)
    try:
        os.replace(incoming, target)
    except OSError:
        if had_target:
            os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
