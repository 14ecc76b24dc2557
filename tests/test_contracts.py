"""The contract of every registered member and combiner, checked over the registries (as
scikit-learn's ``parametrize_with_checks`` does over its estimators): a new one registered in
:mod:`emitlab.registry` is checked here with no list to extend. The transformer runs as a tiny
local BERT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emitlab.members import FoldContext, load_member
from emitlab.registry import COMBINERS, MEMBERS
from emitlab.settings import DataConfig, EnsembleConfig, LexiconConfig, TfidfConfig, TrainConfig

LABELS = ["Anger", "Fear", "Joy", "Neutral"]
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".bin", ".pt", ".pth"}
PICKLE_HEADS = {b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"}  # pickle protocols 2-5


def _texts(n: int = 48) -> tuple[list[str], np.ndarray]:
    cues = ["rabbia furioso", "paura terrore", "felice evviva", "oggi notizia"]
    rng = np.random.default_rng(0)
    texts, y = [], np.zeros((n, len(LABELS)), dtype=int)
    for i in range(n):
        j = i % len(LABELS)
        y[i, j] = 1
        texts.append(f"{cues[j]} {rng.choice(['il', 'la', 'di', 'che'])} {rng.choice(['non', 'per', 'con'])}")
    return texts, y


def _context(tiny_model: Path, tmp_path: Path, texts, y) -> FoldContext:
    n = len(texts)
    train = TrainConfig(model=str(tiny_model), epochs=1, batch_size=8, max_length=16, report_to="none",
                        logging_steps=5, learning_rate=3e-3)
    configs = {TfidfConfig: TfidfConfig(), LexiconConfig: LexiconConfig(), TrainConfig: train,
               DataConfig: DataConfig()}
    folds = [(np.arange(0, n - 8), np.arange(n - 8, n))]
    return FoldContext(configs=configs, workdir=tmp_path / "work", texts=texts, labels=y, folds=folds,
                       n_task_rows=n, seed=7)


def _no_pickle(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert path.suffix not in PICKLE_SUFFIXES, path
            head = path.read_bytes()[:2]
            assert path.suffix == ".safetensors" or head not in PICKLE_HEADS, f"{path} looks like a pickle"
            if path.suffix == ".npy":
                np.load(path, allow_pickle=False)


@pytest.mark.parametrize("name", MEMBERS.builtin)
def test_member_contract(name, tiny_model, tmp_path):
    cls = MEMBERS.get(name)
    assert cls.kind == name and isinstance(cls.network, bool)
    texts, y = _texts()
    ctx = _context(tiny_model, tmp_path, texts, y)
    tr = ctx.folds[0][0]

    member = cls.for_fold(ctx, 0)
    assert isinstance(member, cls)
    fitted = member.fit([texts[i] for i in tr], y[tr], LABELS)
    assert fitted is member
    probs = member.predict_proba(texts)
    assert probs.shape == (len(texts), len(LABELS)) and probs.dtype == np.float64
    assert np.all(np.isfinite(probs)) and np.all((probs >= 0) & (probs <= 1))
    assert member.predict_proba([]).shape[0] == 0

    # save -> JSON spec + files that run no code -> load gives the same probabilities
    spec = member.save(tmp_path / "saved")
    assert spec["kind"] == name
    json.dumps(spec)
    _no_pickle(tmp_path / "saved")
    again = load_member(tmp_path / "saved", json.loads(json.dumps(spec)))
    np.testing.assert_allclose(again.predict_proba(texts), probs, rtol=0, atol=1e-6)

    # the same fold and seed give the same model
    ctx2 = _context(tiny_model, tmp_path / "second", texts, y)
    twin = cls.for_fold(ctx2, 0).fit([texts[i] for i in tr], y[tr], LABELS)
    np.testing.assert_allclose(twin.predict_proba(texts), probs, rtol=0, atol=1e-6)

    # masked cells (an extra corpus that does not annotate a label) are accepted
    mask = np.ones_like(y[tr], dtype=bool)
    mask[::2, 1] = False
    masked = cls.for_fold(_context(tiny_model, tmp_path / "masked", texts, y), 0)
    masked.fit([texts[i] for i in tr], y[tr], LABELS, mask=mask, sample_weight=np.ones(len(tr)))
    assert masked.predict_proba(texts[:3]).shape == (3, len(LABELS))


def _member_probs(n: int = 60, m: int = 3, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(LABELS))) < 0.3).astype(int)
    probs = [np.clip(0.6 * y + 0.4 * rng.random(y.shape), 0.01, 0.99) for _ in range(m)]
    return probs, y


@pytest.mark.parametrize("name", COMBINERS.builtin)
def test_combiner_contract(name):
    cls = COMBINERS.get(name)
    assert cls.kind == name
    members = ["a", "b", "c"]
    probs, y = _member_probs()
    cands = cls.candidates(len(members), EnsembleConfig(), seed=3)
    assert cands and all(isinstance(n, str) for n, _ in cands)
    for cand_name, make in cands:
        comb = make()
        assert isinstance(comb, cls), cand_name
        honest = comb.fit_predict(probs, y)
        assert honest.shape == y.shape and np.all((honest >= 0) & (honest <= 1))
        out = comb.combine(probs)
        assert out.shape == y.shape and np.all((out >= 0) & (out <= 1))

        d = json.loads(json.dumps(comb.to_dict()))
        assert d["kind"] == name
        np.testing.assert_allclose(cls.from_dict(d).combine(probs), out, rtol=0, atol=1e-12)

        used = cls.members_used(d, members)
        assert used and set(used) <= set(members)
        restricted = json.loads(json.dumps(cls.restrict(d, members, used)))
        kept = [probs[members.index(u)] for u in used]
        np.testing.assert_allclose(cls.from_dict(restricted).combine(kept), out, rtol=0, atol=1e-9)

        for short in (False, True):
            text = cls.describe(d, members, short)
            assert isinstance(text, str) and text
        weights = cls.member_weights(d, members)
        assert weights is None or len(weights) == len(members)


def test_fitting_is_seeded_for_every_combiner():
    probs, y = _member_probs(seed=1)
    for name in COMBINERS.builtin:
        cls = COMBINERS.get(name)
        for _, make in cls.candidates(3, EnsembleConfig(), seed=5):
            a, b = make().fit_predict(probs, y), make().fit_predict(probs, y)
            np.testing.assert_array_equal(a, b)
