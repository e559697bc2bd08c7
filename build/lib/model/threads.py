"""How many intra-op threads inference uses, and applying that count to torch and to ONNX Runtime.

Why explicit: on shared cores, OpenMP and ONNX Runtime worker threads that spin-wait for each other make
inference many times slower (4,000 texts: 66.8 s with torch's default 2 threads against a busy process,
1.6 s with one). So the count is always chosen here, never left to the libraries' defaults, and ONNX
Runtime threads sleep instead of spinning when they run out of work.

No heavy imports at module level: `moodring --help` imports this module's callers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

THREADS_ENV = "MOODRING_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS and Windows
        return max(1, os.cpu_count() or 1)


def threads_setting(environ: Mapping[str, str] | None = None) -> int | None:
    """`MOODRING_THREADS` from `environ` (default: the process's environment), None when it is unset.

    The one reader of the variable (the bot's settings and `resolve_threads` both ask here). Raises ValueError,
    with a message naming it, for a count below 1 or a non-number.
    """
    return _count(os.environ if environ is None else environ, THREADS_ENV)


def resolve_threads(explicit: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The intra-op thread count: `explicit` if given, else `MOODRING_THREADS`, else `OMP_NUM_THREADS` (a
    count the user already chose for every OpenMP program), else `available_cores()`.

    Raises ValueError, with a message naming the setting, for a count below 1 or a non-number.
    """
    if explicit is not None:
        if explicit < 1:
            raise ValueError(f"threads must be at least 1, got {explicit}")
        return explicit
    environ = os.environ if environ is None else environ
    chosen = threads_setting(environ)
    if chosen is None:
        chosen = _count(environ, "OMP_NUM_THREADS")
    return chosen or available_cores()


def _count(environ: Mapping[str, str], name: str) -> int | None:
    """The thread count in variable `name`, None when it is unset; ValueError, naming it, when it is not one."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {raw!r}")
    return value


def apply_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads for the calling thread (OpenMP keeps the count per thread).

    Cheap when nothing changes, so callers may do it before every forward pass: that is what keeps
    a worker thread that was started before the count changed at the configured count.
    """
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def ort_session_options(threads: int) -> Any:
    """`onnxruntime.SessionOptions` for serving: `threads` intra-op, one inter-op, no spin-waiting, full graph
    optimisation, sequential execution (one request at a time per session: the caller batches)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: the graph-optimiser notices are noise to a user
    return options
