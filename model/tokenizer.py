"""The classifier's tokenizer: the model's `tokenizer.json`, read by the `tokenizers` library.

It is the file transformers' fast tokenizer reads (training writes it with `save_pretrained`), so the ids are the
same (tests/test_consistent_readings.py compares them), without importing transformers, which cost `moodring
classify` 1.7 s of its start-up (issue 26). Truncation and padding are set once, at load, so that one tokenizer
may be shared by threads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class FastTokenizer:
    """Token ids and attention masks for batches of texts, truncated to `max_length` and padded to the longest."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self._tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def load(cls, directory: str | Path, max_length: int) -> FastTokenizer:
        """Read `tokenizer.json`, with the pad token and the padding and truncation sides of `tokenizer_config.json`.

        Raises OSError, ValueError or KeyError for a missing or unreadable file or a pad token not in the vocabulary.
        """
        from tokenizers import Tokenizer

        directory = Path(directory)
        config = json.loads((directory / TOKENIZER_CONFIG_FILE).read_text(encoding="utf-8"))
        try:
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        except Exception as error:  # the Rust library raises its own exception type
            raise ValueError(f"{TOKENIZER_FILE}: {error}") from error
        pad = config["pad_token"]
        pad = pad["content"] if isinstance(pad, dict) else pad
        pad_id = tokenizer.token_to_id(pad)
        if pad_id is None:
            raise KeyError(f"the pad token {pad!r} is not in {TOKENIZER_FILE}")
        tokenizer.enable_truncation(max_length, direction=config.get("truncation_side", "right"))
        tokenizer.enable_padding(
            direction=config.get("padding_side", "right"),
            pad_id=pad_id,
            pad_type_id=config.get("pad_token_type_id", 0),
            pad_token=pad,
        )
        return cls(tokenizer, max_length)

    def __len__(self) -> int:
        """The vocabulary, added tokens included (what `len()` of a transformers tokenizer says)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def vocabulary(self) -> dict[str, int]:
        """Token -> id, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def special_ids(self) -> set[int]:
        """The ids of the special tokens: [PAD], [UNK], [CLS], [SEP], [MASK] for the MiniLM vocabulary."""
        return {token_id for token_id, token in self._tokenizer.get_added_tokens_decoder().items() if token.special}

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`input_ids` and `attention_mask`, int64 `[len(texts), longest]`, special tokens added."""
        encodings = self._tokenizer.encode_batch(list(texts))
        input_ids = np.asarray([encoding.ids for encoding in encodings], dtype=np.int64)
        attention_mask = np.asarray([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        return input_ids, attention_mask
