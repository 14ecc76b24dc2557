"""Tests for emitlab.data.stats on synthetic data with hand-counted answers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from emitlab.data.stats import DatasetStats, compute_stats, format_stats, plot_stats

NAMES = ["Anger", "Joy", "Neutral"]
TEXTS = ["a b c", "hello", "one two", "x", "four words in here", "ciao ciao"]
# Anger: rows 0,1,4 -> 3; Joy: rows 1,2,4 -> 3; Neutral: row 3 -> 1; row 5 has no label.
Y = np.array(
    [
        [1, 0, 0],
        [1, 1, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [0, 0, 0],
    ]
)


def _data_dir() -> Path:
    env = os.environ.get("EMITLAB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/emit"


@pytest.fixture()
def stats() -> DatasetStats:
    return compute_stats(TEXTS, Y, NAMES, name="toy")


def test_prevalence_matches_hand_counts(stats):
    assert stats.n_texts == 6
    assert stats.prevalence["count"].to_dict() == {"Anger": 3, "Joy": 3, "Neutral": 1}
    assert stats.prevalence.loc["Anger", "percent"] == pytest.approx(50.0)
    assert stats.prevalence.loc["Neutral", "percent"] == pytest.approx(100 / 6)


def test_cooccurrence_matches_hand_counts(stats):
    expected = np.array([[3, 2, 0], [2, 3, 0], [0, 0, 1]])
    np.testing.assert_array_equal(stats.cooccurrence.to_numpy(), expected)
    assert list(stats.cooccurrence.index) == NAMES
    assert list(stats.cooccurrence.columns) == NAMES


def test_labels_per_text_includes_zero(stats):
    assert stats.labels_per_text == {0: 1, 1: 3, 2: 2}
    assert sum(stats.labels_per_text.values()) == stats.n_texts


def test_labels_per_text_zero_kept_when_absent():
    st = compute_stats(["a", "b"], np.array([[1, 0], [0, 1]]), ["X", "Y"])
    assert st.labels_per_text == {0: 0, 1: 2}


def test_pos_weight(stats):
    assert stats.pos_weight["Anger"] == pytest.approx(3 / 3)
    assert stats.pos_weight["Neutral"] == pytest.approx(5 / 1)
    st = compute_stats(["a", "b"], np.array([[1, 0], [1, 0]]), ["X", "Never"])
    assert math.isinf(st.pos_weight["Never"])
    assert st.to_dict()["pos_weight"]["Never"] is None


def test_lengths(stats):
    assert stats.length_words["min"] == 1
    assert stats.length_words["max"] == 4
    assert stats.length_words["median"] == pytest.approx(2.0)
    assert stats.length_chars["max"] == len("four words in here")
    assert set(stats.length_chars) == {"min", "mean", "median", "p95", "max"}


def test_to_dict_is_json_safe(stats):
    d = json.loads(json.dumps(stats.to_dict(), allow_nan=False))
    assert d["n_texts"] == 6
    assert d["prevalence"]["Joy"]["count"] == 3
    assert d["cooccurrence"]["Anger"]["Joy"] == 2
    assert d["labels_per_text"] == {"0": 1, "1": 3, "2": 2}


def test_bad_shape_raises():
    with pytest.raises(ValueError):
        compute_stats(TEXTS, Y[:, :2], NAMES)


def test_format_stats_contains_labels_and_counts(stats):
    out = format_stats(stats)
    assert "\x1b[" not in out
    for name in NAMES:
        assert name in out
    assert "50.0" in out and "16.7" in out
    lines = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") >= 4}
    assert " 3 " in lines["Anger"] and " 1 " in lines["Neutral"]
    assert "Labels per text" in out and "Text length" in out


@pytest.mark.parametrize("several", [False, True])
def test_plot_stats_writes_nontrivial_png(stats, tmp_path, several):
    import matplotlib.image as mpimg

    arg = [stats, compute_stats(TEXTS[:4], Y[:4], NAMES, name="test")] if several else stats
    out = plot_stats(arg, tmp_path / "sub" / "stats.png")
    assert out.exists() and out.suffix == ".png"
    img = mpimg.imread(out)
    assert img.shape[0] > 400 and img.shape[1] > 800
    assert np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0] > 10


def test_plot_stats_does_not_touch_pyplot(stats, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_stats(stats, tmp_path / "s.png")
    assert plt.get_fignums() == before


def test_real_train_file():
    path = _data_dir() / "emit_train_A.csv"
    if not path.exists():
        pytest.skip(f"EMit train file not found at {path} (set EMITLAB_DATA to its folder)")
    import pandas as pd

    from emitlab.labels import NEUTRAL, TASK_A_LABELS

    df = pd.read_csv(path)
    st = compute_stats(df["text"].astype(str).tolist(), df[TASK_A_LABELS].to_numpy(), TASK_A_LABELS)
    assert st.n_texts == 5966
    others = [lab for lab in TASK_A_LABELS if lab != NEUTRAL]
    assert (st.cooccurrence.loc[NEUTRAL, others] == 0).all()
    assert st.cooccurrence.loc[NEUTRAL, NEUTRAL] > 0
