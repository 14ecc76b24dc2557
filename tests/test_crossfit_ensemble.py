"""Cross-fitting, combiners and the export of fold folders, on small arrays and fake members (no
model training)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from emitlab.engine.calibration import fast_macro_f1
from emitlab.engine.crossfit import FOLD_FILE, PREDICTIONS_FILE, crossfit, kfold_plan, split_plan
from emitlab.engine.ensemble import (
    Stacker,
    WeightedAverage,
    combiner_from_dict,
    nested_score,
    simplex_grid,
    tuned_macro_f1,
)
from emitlab.errors import ModelFormatError
from emitlab.export import write_export
from emitlab.settings import CalibrationConfig


def multilabel(n: int, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < np.linspace(0.1, 0.5, k)).astype(int)
    y[y.sum(1) == 0, 0] = 1
    return y


class RecordingMember:
    """Predicts the row index of each text (texts are "row-<i>") and records what it saw."""

    kind = "recording"
    log: list[dict] = []

    def fit(self, texts, labels, label_names):
        self.fitted_on = {int(t.split("-")[1]) for t in texts}
        RecordingMember.log.append({"fit": self.fitted_on})
        self.k = labels.shape[1]
        return self

    def predict_proba(self, texts):
        rows = np.array([int(t.split("-")[1]) for t in texts], dtype=float)
        for r in rows:
            if r in self.fitted_on and texts and texts[0].startswith("row-"):
                RecordingMember.log.append({"leak": int(r)})
        return np.repeat(rows[:, None] / 1000.0, self.k, axis=1)


def test_every_training_row_gets_exactly_one_out_of_fold_prediction():
    y = multilabel(200)
    plan = kfold_plan(y, 5, seed=1)
    texts = [f"row-{i}" for i in range(200)]
    RecordingMember.log = []
    res = crossfit("rec", lambda i: RecordingMember(), texts, y, list("abcd"), plan, {"test": ["t-1", "t-2"]})
    assert not [e for e in RecordingMember.log if "leak" in e]  # no row predicted by a model that saw it
    assert res.oof.shape == (200, 4) and np.array_equal(plan.rows, np.arange(200))
    assert np.allclose(res.oof[:, 0] * 1000, np.arange(200))  # each row's own prediction, in row order
    held = np.concatenate([h for _, h in plan.folds])
    assert sorted(held.tolist()) == list(range(200))  # held out exactly once
    assert len(res.models) == 5 and res.preds["test"].shape == (2, 4)


def test_folds_are_stratified_and_seeded():
    y = multilabel(300, seed=3)
    plan = kfold_plan(y, 5, seed=7)
    per_fold = np.array([y[h].sum(0) for _, h in plan.folds])
    assert (per_fold.max(0) - per_fold.min(0) <= 2).all()
    assert [h.tolist() for _, h in kfold_plan(y, 5, seed=7).folds] == [h.tolist() for _, h in plan.folds]
    assert [h.tolist() for _, h in kfold_plan(y, 5, seed=8).folds] != [h.tolist() for _, h in plan.folds]


def test_split_plan_predicts_only_the_validation_rows():
    y = multilabel(50)
    plan = split_plan(np.arange(40), np.arange(40, 50), 50, 0)
    res = crossfit("rec", lambda i: RecordingMember(), [f"row-{i}" for i in range(50)], y, list("abcd"), plan, {})
    assert res.oof.shape == (10, 4) and np.allclose(res.oof[:, 0] * 1000, np.arange(40, 50))
    with pytest.raises(ValueError):
        split_plan(np.arange(45), np.arange(40, 50), 50, 0)  # overlap


def test_simplex_grid():
    g = simplex_grid(3, 0.5)
    assert np.allclose(g.sum(1), 1) and len(g) == 6


def test_weighted_average_finds_the_informative_member():
    rng = np.random.default_rng(0)
    y = multilabel(400)
    good = np.clip(y * 0.7 + rng.random(y.shape) * 0.3, 0, 1)
    noise = rng.random(y.shape)
    avg = WeightedAverage("prob", step=0.1).fit([noise, good], y)
    assert avg.weights[1] >= 0.8
    assert tuned_macro_f1(y, avg.combine([noise, good])) > 0.95
    again = combiner_from_dict(avg.to_dict())
    assert np.array_equal(again.combine([noise, good]), avg.combine([noise, good]))
    logit_avg = WeightedAverage("logit", weights=[0.5, 0.5])
    assert logit_avg.combine([np.full((2, 2), 0.9), np.full((2, 2), 0.9)]) == pytest.approx(0.9)


def test_stacker_learns_label_cooccurrence():
    # label 1 is never predicted by the member but always co-occurs with label 0
    rng = np.random.default_rng(1)
    y0 = (rng.random(500) < 0.3).astype(int)
    y = np.stack([y0, y0], 1)
    p = np.stack([np.clip(y0 * 0.8 + rng.random(500) * 0.2, 0.01, 0.99), np.full(500, 0.5)], 1)
    st = Stacker(C=1.0).fit([p], y)
    assert fast_macro_f1(y, st.combine([p]) >= 0.5) > 0.95
    again = combiner_from_dict(st.to_dict())
    assert np.array_equal(again.combine([p]), st.combine([p]))
    honest = Stacker(C=1.0).fit_predict([p], y)
    assert honest.shape == y.shape and not np.array_equal(honest, st.combine([p]))


def test_nested_score_never_scores_rows_the_combiner_was_fitted_on():
    seen: list[set] = []

    class Spy(WeightedAverage):
        def fit(self, probs, y):
            seen.append({round(float(v), 9) for v in probs[0][:, 0]})
            return super().fit(probs, y)

    y = multilabel(100)
    ids = np.arange(100) / 1000.0 + 0.1
    p = np.repeat(ids[:, None], 4, axis=1)
    score, per_fold, pred = nested_score(lambda: Spy("prob", weights=[1.0]), [p], y, list("abcd"),
                                         CalibrationConfig(repeats=3), folds=5, seed=0)
    assert len(seen) == 5 and len(per_fold) == 5 and pred.shape == y.shape
    fold_sets = [set(ids.round(9)) - s for s in seen]  # the rows each fit did not see
    assert sum(len(s) for s in fold_sets) == 100 and set().union(*fold_sets) == set(ids.round(9))  # disjoint, cover all


def test_unknown_combiner_is_a_format_error():
    with pytest.raises(ModelFormatError, match="unknown combiner"):
        combiner_from_dict({"kind": "pickle"})


class InPlaceSavingMember(RecordingMember):
    """Saves a weights file the way ``save_pretrained`` does: opened for writing in place."""

    kind = "in-place"

    def __init__(self, payload: bytes):
        self.payload = payload

    def save(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / "weights.bin", "wb") as fh:  # truncates an existing file, same inode
            fh.write(self.payload)
        return {"kind": self.kind}


def test_refitting_a_fold_never_changes_an_export_that_links_its_files(tmp_path):
    y = multilabel(60)
    plan = kfold_plan(y, 2, seed=0)
    texts = [f"row-{i}" for i in range(60)]
    cache = tmp_path / "run" / "members" / "m"
    crossfit("m", lambda i: InPlaceSavingMember(b"first %d" % i), texts, y, list("abcd"), plan, {}, cache=cache)
    export = write_export(tmp_path / "run" / "model", {"labels": list("abcd")},
                          {"m": [cache / "fold-0", cache / "fold-1"]}, make_zip=False)
    linked, source = export / "members/m/fold-0/weights.bin", cache / "fold-0" / "weights.bin"
    assert linked.stat().st_ino == source.stat().st_ino  # stored once, not copied
    assert not (export / "members/m/fold-0" / PREDICTIONS_FILE).exists()
    # the run refits its folds (no --resume) after the export was written: the export keeps its weights
    crossfit("m", lambda i: InPlaceSavingMember(b"second %d" % i), texts, y, list("abcd"), plan, {}, cache=cache)
    assert source.read_bytes() == b"second 0"
    assert linked.read_bytes() == b"first 0"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_export_copies_where_links_are_refused(tmp_path, monkeypatch):
    src = tmp_path / "fold"
    src.mkdir()
    (src / "w.npy").write_bytes(b"x")
    (src / FOLD_FILE).write_text('{"spec": {"kind": "tfidf"}}')

    def refuse(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    export = write_export(tmp_path / "model", {"labels": ["a"]}, {"m": [src]}, make_zip=False)
    copied = export / "members/m/fold-0/w.npy"
    assert copied.read_bytes() == b"x" and copied.stat().st_ino != (src / "w.npy").stat().st_ino
