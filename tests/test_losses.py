"""The training losses: ASL reduces to BCE without focusing, and focusing leaves easy negatives nearly free."""

import pytest
import torch
from torch import nn

from training.losses import AsymmetricLoss, make_loss


def test_asl_without_focusing_or_margin_is_bce():
    logits, targets = torch.randn(8, 28), (torch.rand(8, 28) < 0.1).float()
    plain = AsymmetricLoss(gamma_negative=0.0, gamma_positive=0.0, margin=0.0)
    assert plain(logits, targets).item() == pytest.approx(nn.BCEWithLogitsLoss()(logits, targets).item(), rel=1e-5)


def test_asl_ignores_negatives_under_the_margin_and_keeps_positives():
    targets = torch.tensor([[1.0, 0.0]])
    easy_negative = torch.tensor([[5.0, -5.0]])  # sigmoid(-5) = 0.0067 < margin 0.05
    assert AsymmetricLoss()(easy_negative, targets).item() == pytest.approx(
        nn.functional.softplus(torch.tensor(-5.0)).item() / 2, rel=1e-5
    )
    confident_wrong = torch.tensor([[5.0, 3.0]])
    assert AsymmetricLoss()(confident_wrong, targets) > AsymmetricLoss()(easy_negative, targets)


def test_asl_gradients_are_finite_at_extreme_logits():
    logits = torch.tensor([[60.0, -60.0, 0.0]], requires_grad=True)
    AsymmetricLoss()(logits, torch.tensor([[0.0, 1.0, 1.0]])).backward()
    assert torch.isfinite(logits.grad).all()


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="bce or asl"):
        make_loss("hinge")
