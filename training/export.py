"""Write a self-contained model directory: weights, config, tokenizer and `moodring.json`."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from model.metadata import ModelMetadata
from model.network import SqueezeBertForEmotions
from model.storage import replace_directory, staging_directory


def library_versions() -> dict[str, str]:
    import datasets
    import numpy
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tez": importlib.metadata.version("tez"),
        "datasets": datasets.__version__,
        "numpy": numpy.__version__,
    }


def git_commit() -> str | None:
    """The commit this code runs from, with `-dirty` if the tree has changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def export_model(network: SqueezeBertForEmotions, tokenizer, metadata: ModelMetadata, out: Path) -> Path:
    """Write the model to `out`, replacing what was there only once the new copy is complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_directory(out)
    shutil.rmtree(staging, ignore_errors=True)
    network.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    metadata.save(staging)
    replace_directory(staging, out)
    return out
