"""The registries: a member and a combiner registered from outside the package take part in a tiny
``emitlab run`` (settings, CLI choices, cross-fitting, the nested choice, metrics, submissions,
export and reload, report, compare) with no change inside the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from emitlab.cli import main
from emitlab.errors import SettingsError
from emitlab.registry import BACKENDS, COMBINERS, MEMBERS, Registry


class CueMember:
    """A toy member: for each word, the share of the training texts holding it that carry each
    label; a text's probability of a label is the largest share among its words."""

    kind = "cue"
    network = False

    def __init__(self, vocab: Sequence[str] = (), shares: np.ndarray | None = None):
        self.vocab = list(vocab)
        self.shares = shares

    @classmethod
    def for_fold(cls, context, fold: int) -> "CueMember":
        assert context.folds[fold][0].size > 0 and context.n_task_rows > 0
        return cls()

    def fit(self, texts, labels, label_names, mask=None, sample_weight=None, extra_rows=None) -> "CueMember":
        words = sorted({w for t in texts for w in t.lower().split()})
        index = {w: i for i, w in enumerate(words)}
        hits = np.zeros((len(words), labels.shape[1]))
        counts = np.zeros(len(words))
        for text, row in zip(texts, np.asarray(labels)):
            for w in set(text.lower().split()):
                hits[index[w]] += row
                counts[index[w]] += 1
        self.vocab, self.shares = words, hits / np.maximum(counts, 1)[:, None]
        return self

    def predict_proba(self, texts) -> np.ndarray:
        index = {w: i for i, w in enumerate(self.vocab)}
        out = np.full((len(texts), self.shares.shape[1]), 0.01)
        for r, text in enumerate(texts):
            rows = [index[w] for w in text.lower().split() if w in index]
            if rows:
                out[r] = np.clip(self.shares[rows].max(axis=0), 0.01, 0.99)
        return out

    def save(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab), encoding="utf-8")
        np.save(folder / "shares.npy", self.shares, allow_pickle=False)
        return {"kind": self.kind}

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], **_: Any) -> "CueMember":
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        return cls(vocab, np.load(folder / "shares.npy", allow_pickle=False))


class MaxCombiner:
    """A toy combiner: the largest probability of any member, per label."""

    kind = "max"

    def fit(self, probs, y) -> "MaxCombiner":
        return self

    def fit_predict(self, probs, y) -> np.ndarray:
        return self.combine(probs)

    def combine(self, probs) -> np.ndarray:
        return np.max(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MaxCombiner":
        return cls()

    @classmethod
    def candidates(cls, n_members: int, cfg, seed: int = 0):
        return [("max", cls)]

    @staticmethod
    def member_weights(d, members):
        return None

    @staticmethod
    def members_used(d, members):
        return list(members)

    @staticmethod
    def restrict(d, members, used):
        return d

    @staticmethod
    def describe(d, members, short: bool = False) -> str:
        return "max" if short else "largest probability of any member"


@pytest.fixture
def toys():
    MEMBERS.register("cue", CueMember)
    COMBINERS.register("max", MaxCombiner)
    yield
    MEMBERS.unregister("cue")
    COMBINERS.unregister("max")


def test_a_toy_member_and_combiner_from_outside_run_end_to_end(toys, emit_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--out", str(out), "--members", "tfidf", "cue",
                 "--combiners", "max", "--folds", "3", "--nested-folds", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tfidf", "cue", "max"}
    assert metrics["models"]["max"]["combiner"] == {"kind": "max"}
    assert len(metrics["members"]["cue"]["fold_seconds"]) == 3
    assert metrics["models"]["cue"]["test"]["macro_f1"] > 0.5  # the cue words are learnable
    assert (out / "members" / "cue" / "fold-0" / "shares.npy").is_file()
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "largest probability of any member" in report
    assert main(["compare", str(out)]) == 0
    assert "max" in capsys.readouterr().out

    # the export holds what the chosen model needs, and reloads through the registry
    from emitlab.inference import EmotionClassifier

    clf = EmotionClassifier.from_pretrained(out / "model")
    probs = clf.predict_proba(["paura terrore oggi", "amore cuore"])
    assert probs.shape == (2, 10) and np.all((probs >= 0) & (probs <= 1))


def test_only_the_toy_member_exports_and_reloads_identically(toys, emit_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--out", str(out), "--members", "cue",
                 "--folds", "3", "--nested-folds", "3", "--no-report"]) == 0
    meta = json.loads((out / "model" / "emitlab.json").read_text())
    assert [m["kind"] for m in meta["members"]] == ["cue"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["export"]["reload_max_abs_diff"] == 0.0


def test_unregistered_names_are_refused_with_the_known_ones(emit_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["-q", "run", "--data", str(emit_folder), "--out", str(tmp_path / "r"), "--members", "cue"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "cue" in err and "tfidf" in err and "transformer" in err


def test_registry_rules():
    reg = Registry("thing", {"a": "emitlab.errors:SettingsError"})
    assert reg.get("a") is SettingsError and list(reg) == ["a"] and "a" in reg
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a", int)
    reg.register("a", int, replace=True)
    assert reg.get("a") is int
    with pytest.raises(ValueError, match="built in"):
        reg.unregister("a")

    @reg.register("b")
    class B:
        pass

    assert reg.get("b") is B and reg.choices == ["a", "b"]
    reg.unregister("b")
    assert reg.choices == ["a"]
    with pytest.raises(KeyError, match="known: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="comma"):
        reg.register("x,y", int)
    assert list(BACKENDS) == ["torch", "onnx", "onnx-int8"] and list(COMBINERS.builtin) == ["average", "stacker"]


def test_a_toy_backend_from_outside_runs_the_networks(tiny_ensemble_export):
    """A backend registered from outside: the classifier's ``backend=`` and the CLI's ``--backend``
    take it, and it runs every transformer fold."""
    from emitlab.cli import build_parser
    from emitlab.inference import EmotionClassifier
    from emitlab.members.transformer.backends import TorchBackend

    class CountingBackend(TorchBackend):
        name = "torch-counting"
        batches = 0

        def __call__(self, batch):
            type(self).batches += 1
            return super().__call__(batch)

    BACKENDS.register("torch-counting", CountingBackend)
    try:
        texts = ["paura terrore oggi", "amore cuore", "che schifo"]
        ref = EmotionClassifier.from_pretrained(tiny_ensemble_export).predict_proba(texts)
        got = EmotionClassifier.from_pretrained(tiny_ensemble_export, backend="torch-counting").predict_proba(texts)
        np.testing.assert_allclose(got, ref, atol=1e-6)
        assert CountingBackend.batches > 0
        sub = next(a for a in build_parser()._actions if a.dest == "command")
        backend = next(a for a in sub.choices["predict"]._actions if a.dest == "backend")
        assert "torch-counting" in backend.choices
    finally:
        BACKENDS.unregister("torch-counting")
