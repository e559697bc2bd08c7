"""The serving backends: their names, the file each one serves from, and the ONNX graph's input and output names.

Read by `EmotionClassifier.load` (model/classifier.py), written by the ONNX export (model/onnx_export.py), and
offered by `--backend` and MOODRING_BACKEND. No imports: the CLI and the bot's settings read it cheaply.
"""

from __future__ import annotations

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_BACKEND = "onnx-int8"
FILE_OF_BACKEND = {"onnx": ONNX_FILE, INT8_BACKEND: INT8_FILE}
#: What `EmotionClassifier.load(backend=...)`, `--backend` and MOODRING_BACKEND accept; "auto" picks one.
BACKENDS = ("torch", *FILE_OF_BACKEND)
BACKEND_CHOICES = ("auto", *BACKENDS)
#: What "auto" serves when the model has its file: fp32, whose scores for a text do not depend on its batch.
#: Dynamic int8 ("onnx-int8") scales activations per call over the whole batch, so it is an explicit opt-in.
AUTO_ONNX_BACKEND = "onnx"
#: The ONNX graphs' inputs (int64, [batch, sequence]) and output (float32 sigmoid scores, [batch, num_labels]).
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "scores"
