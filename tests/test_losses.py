"""Losses and label statistics against hand computations; the model head's bias init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emitlab.members.transformer.losses import (
    AsymmetricLoss,
    FocalLoss,
    WeightedBCELoss,
    bernoulli_symmetric_kl,
    build_loss,
    pos_weights,
    prior_log_odds,
)

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


def _asl_reference(z: np.ndarray, y: np.ndarray, gamma_neg: float, gamma_pos: float, clip: float,
                   w: np.ndarray | None = None) -> float:
    """Ridnik et al. (2021), eq. 1-4, written out in float64."""
    p = 1 / (1 + np.exp(-z))
    p_m = np.maximum(p - clip, 0.0)
    pos = y * (1 - p) ** gamma_pos * np.log(p) * (1.0 if w is None else w)
    neg = (1 - y) * p_m ** gamma_neg * np.log(1 - p_m)
    return float(-(pos + neg).mean())


@pytest.mark.parametrize("gamma_neg,gamma_pos,clip,weighted", [
    (4.0, 0.0, 0.05, False), (4.0, 1.0, 0.05, True), (2.0, 0.0, 0.0, False), (0.5, 0.5, 0.2, False),
    (0.0, 0.0, 0.3, True)])
def test_asl_against_reference(gamma_neg, gamma_pos, clip, weighted):
    rng = np.random.default_rng(int(gamma_neg * 10 + gamma_pos * 100 + clip * 1000))
    z = rng.normal(0, 3, size=(16, 5))
    y = (rng.random((16, 5)) < 0.3).astype(int)
    w = rng.uniform(0.5, 3.0, size=5) if weighted else None
    loss = AsymmetricLoss(gamma_neg, gamma_pos, clip, w)(torch.tensor(z, dtype=torch.float32), torch.as_tensor(y))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_asl_reference(z, y, gamma_neg, gamma_pos, clip, w), rel=1e-5)


def test_asl_without_focusing_or_clip_is_bce():
    logits = torch.randn(6, 4) * 3
    targets = (torch.rand(6, 4) > 0.6).float()
    w = np.array([1.0, 2.0, 0.5, 3.0])
    assert AsymmetricLoss(0.0, 0.0, 0.0)(logits, targets).item() == pytest.approx(
        WeightedBCELoss()(logits, targets).item(), rel=1e-6)
    assert AsymmetricLoss(0.0, 0.0, 0.0, w)(logits, targets).item() == pytest.approx(
        WeightedBCELoss(w)(logits, targets).item(), rel=1e-6)
    assert isinstance(build_loss("asl", Y, "none"), AsymmetricLoss)
    with pytest.raises(ValueError):
        build_loss("bogus", Y)
    with pytest.raises(ValueError):
        AsymmetricLoss(clip=1.0)


def test_asl_half_precision_and_extreme_logits():
    """bf16 logits give a float32 loss; saturated logits and fractional gammas keep finite gradients
    (the clipped negatives' weight is 0 with a zero, not NaN, gradient)."""
    loss = AsymmetricLoss(4.0, 0.0, 0.05)(torch.randn(4, 2, dtype=torch.bfloat16), torch.as_tensor(Y))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    logits = torch.tensor([[40.0, -40.0, 0.0, -2.0], [-40.0, 40.0, 3.0, -6.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    for gamma_neg, gamma_pos, clip in [(0.5, 0.5, 0.05), (4.0, 0.0, 0.05), (0.3, 0.7, 0.0)]:
        logits.grad = None
        out = AsymmetricLoss(gamma_neg, gamma_pos, clip)(logits, targets)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    # the official implementation's clip: a negative with p <= clip adds nothing
    assert AsymmetricLoss(4.0, 0.0, 0.05)(torch.tensor([[-4.0]]), torch.tensor([[0.0]])).item() == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_asl_on_the_logits_device():
    loss = AsymmetricLoss(4.0, 0.0, 0.05, np.array([1.0, 2.0]))
    out = loss(torch.randn(4, 2, device="cuda", dtype=torch.float16), torch.as_tensor(Y))  # targets on the CPU
    assert out.device.type == "cuda" and out.dtype == torch.float32


def test_bernoulli_symmetric_kl_by_hand():
    za, zb = torch.randn(5, 3) * 2, torch.randn(5, 3) * 2
    pa, pb = torch.sigmoid(za.double()), torch.sigmoid(zb.double())

    def kl(p, q):
        return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))

    expected = (0.5 * (kl(pa, pb) + kl(pb, pa))).mean().item()
    assert bernoulli_symmetric_kl(za, zb).item() == pytest.approx(expected, rel=1e-5)
    assert bernoulli_symmetric_kl(zb, za).item() == pytest.approx(expected, rel=1e-5)
    assert bernoulli_symmetric_kl(za, za).item() == 0.0
    assert bernoulli_symmetric_kl(torch.tensor([[80.0]]), torch.tensor([[-80.0]])).item() > 0  # finite when saturated


def test_bias_init_equals_log_odds(tmp_path):
    from transformers import BertConfig, BertModel

    from emitlab.members.transformer.model import EmotionModel, build_model
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
