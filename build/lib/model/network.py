"""The emotion network: a SqueezeBERT encoder, masked mean pooling, dropout and a multi-label head.

It is a regular `transformers` model, so `save_pretrained` / `from_pretrained` write and read
safetensors weights plus `config.json` (which also carries the label names as `id2label`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SqueezeBertConfig, SqueezeBertModel, SqueezeBertPreTrainedModel


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors of each sequence, ignoring padding."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class SqueezeBertForEmotions(SqueezeBertPreTrainedModel):
    """SqueezeBERT with a mean-pooled multi-label classification head.

    Mean pooling rather than the [CLS]/pooler output: the offline MiniLM start was trained for
    mean-pooled sentence embeddings, and its pooler output barely varies between sentences.
    """

    def __init__(self, config: SqueezeBertConfig):
        super().__init__(config)
        self.transformer = SqueezeBertModel(config)
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> torch.Tensor:
        """Return one logit per label, shape `[batch, num_labels]`."""
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.classifier(self.dropout(masked_mean(hidden, attention_mask)))
