"""Training losses for multi-label emotions: plain BCE, or the asymmetric loss for the rare labels."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al., ICCV 2021), averaged over every (text, label) cell like `BCEWithLogitsLoss`.

    Each text has about one positive label among 28, so plain BCE is dominated by easy negatives. ASL focuses
    the negatives (`(p_m)^gamma_negative` with `p_m = max(p - margin, 0)`) and leaves the positives as BCE
    (`gamma_positive = 0`): negatives scored under `margin` cost nothing, confident ones little. The defaults
    are the paper's multi-label settings.
    """

    def __init__(self, gamma_negative: float = 4.0, gamma_positive: float = 0.0, margin: float = 0.05) -> None:
        super().__init__()
        self.gamma_negative = gamma_negative
        self.gamma_positive = gamma_positive
        self.margin = margin

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probabilities = torch.sigmoid(logits)
        positive = functional.logsigmoid(logits) * (1 - probabilities).pow(self.gamma_positive)
        shifted = (probabilities - self.margin).clamp(min=0)
        negative = torch.log((1 - shifted).clamp(min=1e-8)) * shifted.pow(self.gamma_negative)
        return -(targets * positive + (1 - targets) * negative).mean()


def make_loss(name: str) -> nn.Module:
    """The loss `TrainArgs.loss` names."""
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "asl":
        return AsymmetricLoss()
    raise ValueError(f"unknown loss {name!r}: expected bce or asl")
