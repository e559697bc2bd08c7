"""The offline `minilm` backbone: BERT weights mapped into SqueezeBERT compute the same thing."""

from __future__ import annotations

import pytest
import torch
from transformers import BertModel, SqueezeBertModel

from training.backbones import (
    BackboneError,
    bert_to_squeezebert_state_dict,
    load_backbone,
    minilm_directory,
    squeezebert_config_from_bert,
)

LABELS = [f"label{i}" for i in range(28)]
SENTENCES = [
    "I can't believe you remembered my birthday!",
    "ugh.",
    "This is the worst customer service I have ever had, and I've been waiting for three hours.",
]


def test_minilm_squeezebert_matches_source_bert_with_padding() -> None:
    backbone = load_backbone("minilm", LABELS)
    assert backbone.kind == "bert->squeezebert"
    config = backbone.network.config
    assert all(getattr(config, f"{name}_groups") == 1 for name in ("q", "k", "v", "post_attention", "intermediate"))
    bert = BertModel.from_pretrained(minilm_directory()).eval()
    squeeze = backbone.network.transformer.eval()
    batch = backbone.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    with torch.no_grad():
        expected = bert(**batch).last_hidden_state
        actual = squeeze(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    assert torch.allclose(actual[real], expected[real], atol=1e-4)
    assert (expected[real].abs().mean() > 0.1).item()  # not trivially zero


def test_mapping_covers_every_squeezebert_parameter() -> None:
    bert = BertModel.from_pretrained(minilm_directory())
    mapped = bert_to_squeezebert_state_dict(bert.state_dict())
    target = SqueezeBertModel(squeezebert_config_from_bert(bert.config))
    expected_keys = {k for k in target.state_dict() if not k.endswith("position_ids")}
    assert set(mapped) == expected_keys
    for key, tensor in mapped.items():
        assert tensor.shape == target.state_dict()[key].shape, key
    query = mapped["encoder.layers.0.attention.query.weight"]
    assert query.shape == (384, 384, 1)
    assert torch.equal(query[:, :, 0], bert.state_dict()["encoder.layer.0.attention.self.query.weight"])


def test_unreachable_backbone_names_the_offline_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast: no hub here anyway
    with pytest.raises(BackboneError, match="--backbone minilm"):
        load_backbone("squeezebert/squeezebert-uncased", LABELS)


def test_local_squeezebert_directory_loads(tiny_backbone_dir) -> None:
    backbone = load_backbone(str(tiny_backbone_dir), LABELS)
    assert backbone.kind == "squeezebert"
    assert backbone.network.config.num_labels == 28
    assert backbone.network.config.id2label[27] == "label27"
