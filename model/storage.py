"""Replacing a model directory on disk without a moment where no complete model is there to load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_directory(new: Path, target: Path) -> None:
    """Move `new` to `target`; an existing `target` is moved aside first and deleted last."""
    new, target = Path(new), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    retired = target.parent / f".{target.name}.retired-{os.getpid()}"
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        os.replace(target, retired)
    os.replace(new, target)
    shutil.rmtree(retired, ignore_errors=True)
