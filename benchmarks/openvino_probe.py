"""OpenVINO against ONNX Runtime on moodring's exported graphs: single-text p50 and batch-32 texts/s, 2 threads.

OpenVINO is not a moodring dependency; this probe decided that it should not become one. Run it in a venv of its own:

    python3.11 -m venv /tmp/ovenv && /tmp/ovenv/bin/pip install openvino onnxruntime==1.32.0 tokenizers numpy
    /tmp/ovenv/bin/python benchmarks/openvino_probe.py MODEL_DIR GOEMOTIONS_DIR

It reads `model.onnx` and `model.int8.onnx` from MODEL_DIR and times the same 1,280 dev texts on each runtime:
200 single texts (p50), then length-sorted batches of 32 (texts/s). Nothing else may run on the machine.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
from tokenizers import Tokenizer

Inputs = tuple[np.ndarray, np.ndarray]


def pad(rows: list[list[int]]) -> Inputs:
    ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def measure(run: Callable[[np.ndarray, np.ndarray], object], singles: list[Inputs], batches: list[Inputs]) -> dict:
    for inputs in singles[:10]:
        run(*inputs)
    latencies = []
    for inputs in singles:
        started = time.perf_counter()
        run(*inputs)
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for inputs in batches:
        run(*inputs)
    texts = sum(len(ids) for ids, _ in batches)
    return {
        "single_p50_ms": round(statistics.median(latencies), 2),
        "batch32_texts_per_s": round(texts / (time.perf_counter() - started), 1),
    }


def main() -> None:
    model_dir, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(64)
    with (data_dir / "dev.tsv").open(encoding="utf-8", newline="") as handle:
        texts = [row[0] for row in csv.reader(handle, delimiter="\t")][:1280]
    encoded = [e.ids for e in tokenizer.encode_batch(texts)]
    by_length = sorted(encoded, key=len)
    batches = [pad(by_length[k : k + 32]) for k in range(0, len(by_length), 32)]
    singles = [pad([row]) for row in encoded[:200]]

    results = {}
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    core = ov.Core()
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(model_dir / name), options, providers=["CPUExecutionProvider"])
        results[f"onnxruntime {name}"] = measure(
            lambda i, m, s=session: s.run(None, {"input_ids": i, "attention_mask": m}), singles, batches
        )
        for hint in ("LATENCY", "THROUGHPUT"):
            compiled = core.compile_model(
                str(model_dir / name), "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": 2}
            )
            request = compiled.create_infer_request()
            results[f"openvino {name} {hint}"] = measure(
                lambda i, m, r=request: r.infer({"input_ids": i, "attention_mask": m}), singles, batches
            )
    ids, mask = batches[5]
    reference = ort.InferenceSession(str(model_dir / "model.onnx"), options).run(
        None, {"input_ids": ids, "attention_mask": mask}
    )[0]
    openvino = next(iter(core.compile_model(str(model_dir / "model.onnx"), "CPU").create_infer_request().infer(
        {"input_ids": ids, "attention_mask": mask}
    ).values()))  # fmt: skip
    results["max_score_difference_openvino_vs_onnxruntime_fp32"] = float(np.abs(reference - openvino).max())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
