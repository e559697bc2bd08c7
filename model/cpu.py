"""Which int8 kernel path this machine gives ONNX Runtime: the CPU features its int8 kernels choose by, and its version.

Dynamic int8 scores depend on that path: AVX2 without VNNI sums u8 x s8 pairs in int16 (VPMADDUBSW), AVX-512 VNNI,
AVX-VNNI and AMX take other instructions, and Arm has its own dot products. The same weights lost 0.011 test macro-F1
to fp32 on an AMD CPU without VNNI and 0.002 on an Intel one with VNNI and AMX (issue 23), so int8 thresholds tuned
on one path are checked before they are served on another (`EmotionClassifier.load`).

No heavy imports: onnxruntime is imported only by `int8_kernel_path`, which the int8 backend calls once it has it.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
#: The flags (x86 `flags`, Arm `Features` in /proc/cpuinfo) by which ONNX Runtime's MLAS picks its int8 kernels.
INT8_FEATURES = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "asimddp",
    "i8mm",
    "sve",
)


def read_cpuinfo() -> str:
    """The text of `CPUINFO`; empty where there is none (macOS, Windows), so every feature reads as absent."""
    try:
        return CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed in `cpuinfo` (the text of /proc/cpuinfo)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in {"flags", "Features"}:
            return set(value.split())
    return set()


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """What `lscpu` calls the model name (e.g. "AMD EPYC"), else the machine type."""
    for line in (read_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def int8_kernel_path(cpuinfo: str | None = None) -> dict[str, Any]:
    """This machine's int8 kernel path: `{"machine", "features", "onnxruntime"}`, `features` being the
    `INT8_FEATURES` it has, in that order. `cpuinfo`: /proc/cpuinfo's text (default: this machine's), so that a test
    can describe another CPU. Two machines with equal records run the same int8 kernels."""
    import onnxruntime

    flags = cpu_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
    return {
        "machine": platform.machine(),
        "features": [feature for feature in INT8_FEATURES if feature in flags],
        "onnxruntime": onnxruntime.__version__,
    }


def describe_kernel_path(record: dict[str, Any]) -> str:
    """One line for a log: "x86_64 avx2+avx512f, onnxruntime 1.32.0"."""
    features = "+".join(record.get("features", ())) or "no int8 features"
    return f"{record.get('machine')} {features}, onnxruntime {record.get('onnxruntime')}"
