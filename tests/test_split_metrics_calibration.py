"""Split reproducibility and balance, metric parity with sklearn, calibration optima."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from emitlab.data.loading import DataError, TextDataset
from emitlab.data.split import kfold_indices, split_dataset, stratified_split
from emitlab.engine.calibration import (
    best_global_threshold,
    best_thresholds,
    calibrate,
    decode,
    f1_threshold_curves,
    fast_macro_f1,
)
from emitlab.engine.evaluation import evaluate, macro_f1
from emitlab.labels import TASK_A_LABELS


def random_labels(n=3000, k=10, seed=0):
    rng = np.random.default_rng(seed)
    prev = np.linspace(0.015, 0.3, k)
    return (rng.random((n, k)) < prev).astype(int)


def test_split_is_reproducible_and_balanced():
    y = random_labels()
    tr1, va1 = stratified_split(y, 0.1, seed=7)
    tr2, va2 = stratified_split(y, 0.1, seed=7)
    tr3, va3 = stratified_split(y, 0.1, seed=8)
    assert np.array_equal(va1, va2) and np.array_equal(tr1, tr2)
    assert not np.array_equal(va1, va3)
    assert len(va1) == 300 and len(np.intersect1d(tr1, va1)) == 0 and len(tr1) + len(va1) == len(y)
    diff = np.abs(y[tr1].mean(0) - y[va1].mean(0)) * 100
    assert diff.max() <= 1.0, diff


def test_real_split_balance(emit_data_dir):
    from emitlab.data.loading import load_emit

    y = load_emit(emit_data_dir, "A").train.labels
    tr, va = stratified_split(y, 0.1, seed=42)
    assert (np.abs(y[tr].mean(0) - y[va].mean(0)) * 100).max() <= 1.0


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_rows_for_the_split_names_source_rows_and_minimum(n):
    ds = TextDataset(ids=[str(i) for i in range(n)], texts=["x"] * n, labels=np.ones((n, 3), int),
                     label_names=["a", "b", "c"], source="train.csv")
    with pytest.raises(DataError, match=rf"^train.csv: {n} rows; the 90/10 split needs at least 2$"):
        split_dataset(ds, 0.1, seed=1)
    with pytest.raises(DataError, match=r"the 80/20 split needs at least 2"):
        stratified_split(np.ones((n, 3), int), 0.2, source="train.csv")
    tr, va = stratified_split(np.ones((2, 3), int), 0.1)
    assert len(tr) == len(va) == 1


def test_single_label_column_splits():
    y = np.array([[0], [1]] * 20)
    tr, va = stratified_split(y, 0.1, seed=3)
    assert len(va) == 4 and y[va].sum() == 2
    assert [y[v].sum() for _, v in kfold_indices(y, 5, seed=3)] == [4] * 5


def test_kfold_indices_cover_every_row_once_and_are_stratified():
    y = random_labels(n=1000)
    folds = kfold_indices(y, 5, seed=11)
    assert len(folds) == 5
    val = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val), np.arange(len(y)))  # each row in exactly one validation fold
    for tr, va in folds:
        assert tr.dtype == va.dtype == np.int64
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
        assert 195 <= len(va) <= 205
    pos = np.array([y[va].sum(0) for _, va in folds])  # positives per fold and label
    assert (pos.max(0) - pos.min(0)).max() <= 2, pos


def test_kfold_indices_seeded():
    y = random_labels(n=300)
    a, b, c = kfold_indices(y, 4, seed=1), kfold_indices(y, 4, seed=1), kfold_indices(y, 4, seed=2)
    assert all(np.array_equal(x[1], z[1]) and np.array_equal(x[0], z[0]) for x, z in zip(a, b))
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c))


def test_kfold_indices_too_few_rows():
    with pytest.raises(DataError, match=r"^train.csv: 4 rows; 5-fold cross-fitting needs at least 5$"):
        kfold_indices(np.ones((4, 3), int), 5, seed=0, source="train.csv")
    assert [len(va) for _, va in kfold_indices(np.eye(5, dtype=int), 5, seed=0)] == [1] * 5
    with pytest.raises(ValueError, match="k must be at least 2"):
        kfold_indices(np.ones((4, 3), int), 1, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = random_labels(200, 10, seed)
    y[:, 3] = 0  # a label without support
    pred = (rng.random(y.shape) < 0.2).astype(int)
    ours = evaluate(y, pred, TASK_A_LABELS)
    assert ours["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert ours["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro"), abs=1e-12)
    assert ours["per_label"]["Joy"]["f1"] == pytest.approx(f1_score(y[:, 4], pred[:, 4]))
    assert ours["per_label"]["Joy"]["support"] == int(y[:, 4].sum())
    assert macro_f1(y, pred) == ours["macro_f1"]


def test_threshold_curve_matches_brute_force():
    rng = np.random.default_rng(1)
    y = random_labels(150, 4, 1)
    p = np.round(rng.random(y.shape), 2)  # ties on purpose
    thr_sorted, f1 = f1_threshold_curves(y, p)
    for j in range(4):
        for i in range(len(y)):
            if f1[i, j] < 0:
                continue  # inside a tie run
            t = thr_sorted[i, j]
            assert f1[i, j] == pytest.approx(f1_score(y[:, j], p[:, j] >= t, zero_division=0))


def test_calibration_finds_known_optimum():
    # Label 0 positives score in [0.2, 0.3), negatives in [0, 0.2): the best threshold is 0.2,
    # far from 0.5. Label 1 is noisy: compare with an exhaustive search over a fine grid.
    rng = np.random.default_rng(3)
    n = 1000
    y = np.zeros((n, 2), dtype=int)
    y[:100, 0] = 1
    p = np.zeros((n, 2))
    p[:, 0] = np.where(y[:, 0] == 1, 0.2 + 0.1 * rng.random(n), 0.2 * rng.random(n))
    y[:, 1] = rng.random(n) < 0.3
    p[:, 1] = np.clip(0.3 * y[:, 1] + 0.7 * rng.random(n), 0, 1)
    thr = best_thresholds(y, p)
    assert f1_score(y[:, 0], p[:, 0] >= thr[0]) == 1.0
    assert p[y[:, 0] == 0, 0].max() < thr[0] <= p[y[:, 0] == 1, 0].min()
    grid = np.unique(p[:, 1])
    brute = max(f1_score(y[:, 1], p[:, 1] >= t) for t in grid)
    assert f1_score(y[:, 1], p[:, 1] >= thr[1]) == pytest.approx(brute)


def test_label_without_positives_keeps_default():
    y = np.zeros((10, 1), dtype=int)
    assert best_thresholds(y, np.random.default_rng(0).random((10, 1)))[0] == 0.5


def test_decode_structure_rules():
    names = TASK_A_LABELS
    j_neu, j_joy, j_love = names.index("Neutral"), names.index("Joy"), names.index("Love")
    p = np.full((3, 10), 0.1)
    p[0, [j_neu, j_joy]] = [0.9, 0.6]   # Neutral clearly wins -> Neutral alone
    p[1, [j_neu, j_love]] = [0.55, 0.95]  # Love wins -> drop Neutral
    # row 2: nothing above 0.5 -> at_least_one picks the largest margin
    p[2, j_joy] = 0.4
    plain = decode(p, 0.5, names)
    assert plain[2].sum() == 0 and plain[0].sum() == 2
    both = decode(p, 0.5, names, at_least_one=True, neutral_exclusive=True)
    assert np.flatnonzero(both[0]).tolist() == [j_neu]
    assert np.flatnonzero(both[1]).tolist() == [j_love]
    assert np.flatnonzero(both[2]).tolist() == [j_joy]


def test_fast_macro_f1_matches_sklearn():
    rng = np.random.default_rng(4)
    y = random_labels(300, 10, 4)
    y[:, 2] = 0
    pred = (rng.random(y.shape) < 0.15).astype(int)
    pred[:, 5] = 0
    assert fast_macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)


def test_global_threshold_known_optimum():
    # every label: positives at 0.3, negatives at 0.1 -> any threshold in (0.1, 0.3] is perfect,
    # the grid's first such value is 0.11
    y = random_labels(400, 3, 2)
    p = np.where(y == 1, 0.3, 0.1)
    assert best_global_threshold(y, p) == pytest.approx(0.11)


def test_calibrate_reports_every_variant_and_picks_best_heldout():
    rng = np.random.default_rng(0)
    y = random_labels(600, 10, 5)
    p = np.clip(0.35 * y + 0.6 * rng.random(y.shape), 0, 1)
    rep = calibrate(y, p, TASK_A_LABELS)
    names = {s + r for s in ("fixed", "global", "per_label")
             for r in ("", "+at_least_one", "+neutral_exclusive", "+at_least_one+neutral_exclusive")}
    assert set(rep.validation_heldout_macro_f1) == names
    assert rep.validation_heldout_macro_f1[rep.chosen] == max(rep.validation_heldout_macro_f1.values())
    assert rep.validation_macro_f1["per_label"] >= rep.validation_macro_f1["fixed"]
    assert fast_macro_f1(y, rep.decoder.decode(p)) == pytest.approx(rep.validation_macro_f1[rep.chosen])


def test_calibrate_prefers_per_label_when_labels_need_different_thresholds():
    # label j's positives sit at 0.1 * (j + 1) + noise: one shared threshold cannot fit all
    rng = np.random.default_rng(1)
    y = random_labels(800, 5, 6)
    centre = 0.1 * (np.arange(5) + 1)
    p = np.where(y == 1, centre + 0.05 * rng.random(y.shape), centre - 0.08 + 0.05 * rng.random(y.shape))
    rep = calibrate(y, p, ["a", "b", "c", "d", "e"])
    assert rep.chosen.startswith("per_label")
    assert rep.validation_heldout_macro_f1[rep.chosen] > 0.95 > rep.validation_heldout_macro_f1["fixed"]


def test_calibrate_forced_options():
    y = random_labels(200, 10, 7)
    p = np.random.default_rng(2).random(y.shape)
    rep = calibrate(y, p, TASK_A_LABELS, thresholds="per_label", structure="none")
    assert rep.chosen == "per_label" and not rep.decoder.at_least_one
    rep = calibrate(y, p, TASK_A_LABELS, thresholds="fixed", structure="both")
    assert rep.chosen == "fixed+at_least_one+neutral_exclusive" and rep.decoder.thresholds == [0.5] * 10
    with pytest.raises(ValueError, match="thresholds must be"):
        calibrate(y, p, TASK_A_LABELS, thresholds="bogus")
