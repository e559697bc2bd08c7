"""ONNX export of the emotion network: `model.onnx` (fp32) and `model.int8.onnx` (dynamic int8).

SqueezeBERT computes every projection as a 1x1 `Conv1d` in [batch, channels, sequence] layout. Exported as is,
those become `Conv` nodes, and quantized `Conv` nodes run many times slower than fp32 on CPUs. So the export goes
through `LinearView`: the same function in [batch, sequence, channels] layout, where each 1x1 convolution is a
`Linear` (groups = 1, exported as `MatMul` + `Add`) or one batched `MatMul` over its groups (groups > 1). The int8
file then quantizes `MatMul`/`Gemm` only, with `onnxruntime.quantization.quantize_dynamic` (see `quantization_for`).

Both graphs take `input_ids` and `attention_mask` (int64, [batch, sequence], both axes dynamic) and return
`scores` (float32 sigmoid scores, [batch, num_labels]); the file and graph names are model/backends.py's.

torch, onnx and onnxruntime are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.backends import INPUT_NAMES, INT8_FILE, ONNX_FILE, OUTPUT_NAME
from model.training_contract import file_sha256

if TYPE_CHECKING:
    from model.network import SqueezeBertForEmotions

OPSET = 17  # the first with LayerNormalization
QUANTIZED_OPS = ("MatMul", "Gemm")
# Measured on a 1-epoch MiniLM (GoEmotions dev and test, 5.4k rows each; AVX2 without VNNI, one thread):
# - per_channel: one weight scale per output column. A per-tensor scale lost 0.007 test macro-F1 to fp32
#   (largest score shift 0.30); per column, 0.0001 (largest shift 0.20, mean 0.0017), at the same speed.
# - reduce_range: 7-bit weights, so AVX2's u8 x s8 pair sums (VPMADDUBSW, int16) cannot saturate. Per column it
#   cost nothing measurable; per tensor it doubled the score shift. u8 weights (no saturation either) ran ~20%
#   slower at batch 32, and static QDQ int8 calibrated on train texts shifted scores by up to 0.42.
PER_CHANNEL = {"per_channel": True, "reduce_range": True}
PER_TENSOR = {"per_channel": False, "reduce_range": False}


def export_onnx_files(network: SqueezeBertForEmotions, directory: str | Path) -> dict[str, dict[str, Any]]:
    """Write `model.onnx` and `model.int8.onnx` into `directory`; return each file's record for `moodring.json`.

    Each file is written under a temporary name and renamed into place, so a reader never sees half a file.
    """
    import onnx
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from model.linear_view import LinearView, SigmoidScores

    directory = Path(directory)
    view = SigmoidScores(LinearView(network)).eval()
    # Padding in the example, so the traced graph keeps the mask arithmetic for every batch.
    input_ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 0, 0]], dtype=torch.long)  # any ids: only shapes matter
    attention_mask = (input_ids != 0).long()
    fp32_tmp, int8_tmp = directory / f".{ONNX_FILE}.tmp", directory / f".{INT8_FILE}.tmp"
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                view,
                (input_ids, attention_mask),
                str(fp32_tmp),
                dynamo=False,  # the TorchScript exporter: no onnxscript dependency
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(fp32_tmp))
        settings = quantization_for(fp32_tmp)
        with _without_preprocessing_advice():
            quantize_dynamic(
                str(fp32_tmp),
                str(int8_tmp),
                op_types_to_quantize=list(QUANTIZED_OPS),
                weight_type=QuantType.QInt8,
                # Weights only: attention's activation x activation products stay fp32.
                extra_options={"MatMulConstBOnly": True},
                **settings,
            )
        os.replace(fp32_tmp, directory / ONNX_FILE)
        os.replace(int8_tmp, directory / INT8_FILE)
    finally:
        for leftover in (fp32_tmp, int8_tmp):
            leftover.unlink(missing_ok=True)
    common = {"opset": OPSET, "exporter": f"torch.onnx (TorchScript) {torch.__version__}"}
    return {
        ONNX_FILE: {
            "backend": "onnx",
            "sha256": file_sha256(directory / ONNX_FILE),
            "bytes": (directory / ONNX_FILE).stat().st_size,
            **common,
        },
        INT8_FILE: {
            "backend": "onnx-int8",
            "sha256": file_sha256(directory / INT8_FILE),
            "bytes": (directory / INT8_FILE).stat().st_size,
            "quantization": f"dynamic int8 (QInt8 weights, {_describe(settings)}) on {'/'.join(QUANTIZED_OPS)} only, "
            f"onnxruntime {onnxruntime.__version__}",
            **common,
        },
    }


def quantization_for(path: str | Path) -> dict[str, bool]:
    """`PER_CHANNEL` when every constant `MatMul` weight in the fp32 graph is 2-D (groups = 1, the served MiniLM),
    else `PER_TENSOR`: ORT's MatMulInteger takes per-column zero points for a 2-D weight only, and the quantizer
    writes them 1-D for the batched [groups, in, out] weights of grouped convolutions, which ORT then refuses."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ranks = {weight.name: len(weight.dims) for weight in graph.initializer}
    weights = [ranks[node.input[1]] for node in graph.node if node.op_type == "MatMul" and node.input[1] in ranks]
    return PER_CHANNEL if all(rank == 2 for rank in weights) else PER_TENSOR


def _describe(settings: dict[str, bool]) -> str:
    return "7-bit, per channel" if settings == PER_CHANNEL else "per tensor"


def graph_operators(path: str | Path) -> set[str]:
    """The operator types in an ONNX file's main graph."""
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


@contextlib.contextmanager
def _without_preprocessing_advice():
    """Drop quantize_dynamic's root-logger chatter: its advice to run `quant_pre_process` (its symbolic shape
    inference cannot follow this graph's dynamic reshapes, and the graph quantizes fully without it), and one
    "Quantization parameters for tensor ... not specified" line per activation (dynamic quantization computes
    them at run time), and one "Ignore MatMul due to non constant B" per attention product (kept fp32 on purpose)."""

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Please consider to run pre-processing")
            or (message.startswith("Quantization parameters for tensor") and message.endswith("not specified"))
            or message.startswith("Ignore MatMul due to non constant B")
        )

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
