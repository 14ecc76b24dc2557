"""Losses and label statistics against hand computations; the model head's bias init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emitlab.models.losses import FocalLoss, WeightedBCELoss, build_loss, pos_weights, prior_log_odds

Y = np.array([[1, 0], [0, 0], [0, 1], [0, 0]])  # prevalence 0.25 and 0.25


def test_prior_log_odds_and_pos_weights():
    assert prior_log_odds(Y) == pytest.approx([math.log(0.25 / 0.75)] * 2)
    assert pos_weights(Y, "neg_pos") == pytest.approx([3.0, 3.0])
    assert pos_weights(Y, "sqrt") == pytest.approx([math.sqrt(3.0)] * 2)
    assert pos_weights(Y, "none") is None
    with pytest.raises(ValueError):
        pos_weights(Y, "bogus")


def _bce(x, t, w=1.0):
    p = 1 / (1 + math.exp(-x))
    return -(w * t * math.log(p) + (1 - t) * math.log(1 - p))


def test_weighted_bce_by_hand():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    targets = torch.tensor([[1, 0], [0, 1]])  # ints on purpose: the loss casts them
    w = [3.0, 0.5]
    expected = np.mean([_bce(2.0, 1, w[0]), _bce(-1.0, 0, w[1]), _bce(0.5, 0, w[0]), _bce(0.0, 1, w[1])])
    assert WeightedBCELoss(np.array(w))(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    plain = np.mean([_bce(2.0, 1), _bce(-1.0, 0), _bce(0.5, 0), _bce(0.0, 1)])
    assert WeightedBCELoss(None)(logits, targets).item() == pytest.approx(plain, rel=1e-6)


def _focal(x, t, gamma, alpha=None, w=1.0):
    p = 1 / (1 + math.exp(-x))
    pos = -w * (1 - p) ** gamma * math.log(p)
    neg = -(p ** gamma) * math.log(1 - p)
    if alpha is not None:
        pos, neg = alpha * pos, (1 - alpha) * neg
    return pos if t else neg


@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (1.0, 0.25), (0.0, None)])
def test_focal_by_hand(gamma, alpha):
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = np.mean([_focal(2.0, 1, gamma, alpha), _focal(-1.0, 0, gamma, alpha),
                        _focal(0.5, 0, gamma, alpha), _focal(-3.0, 1, gamma, alpha)])
    assert FocalLoss(gamma, alpha)(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_focal_gamma_zero_is_bce():
    logits = torch.randn(5, 3)
    targets = (torch.rand(5, 3) > 0.5).float()
    assert FocalLoss(0.0)(logits, targets).item() == pytest.approx(WeightedBCELoss()(logits, targets).item(), rel=1e-5)


def test_half_precision_logits_are_handled():
    loss = build_loss("bce", Y, "neg_pos")
    logits = torch.randn(4, 2, dtype=torch.bfloat16)
    out = loss(logits, torch.as_tensor(Y))
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_bias_init_equals_log_odds(tmp_path):
    from transformers import BertConfig, BertModel

    from emitlab.models.transformer import EmotionModel, build_model
    from emitlab.settings import TrainConfig

    folder = tmp_path / "m"
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    model = build_model(folder, 2, TrainConfig(), Y)
    assert isinstance(model, EmotionModel)
    assert model.classifier.bias.detach().numpy() == pytest.approx(prior_log_odds(Y), rel=1e-6)
    assert not model.encoder.get_input_embeddings().weight.requires_grad
    # with the bias at the log-odds and a zero weight, the model predicts each label's prevalence
    with torch.no_grad():
        model.classifier.weight.zero_()
    model.eval()
    ids = torch.tensor([[1, 5, 7, 2]])
    probs = torch.sigmoid(model(input_ids=ids, attention_mask=torch.ones_like(ids))["logits"])
    assert probs.detach().numpy()[0] == pytest.approx([0.25, 0.25], rel=1e-5)
