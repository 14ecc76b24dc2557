"""Issue 19 moved every module and changed no behaviour or format: the same ``emitlab run`` on the
same seed gives the same scores as the layout before it, an export written before it loads and
predicts the same, and an export written now has the same format (``format_version``, keys, member
specs and file names) as that one. The fixture (``tests/fixtures/layout_v1``: synthetic texts only)
was written by the previous layout's code with its ``make_golden.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emitlab.cli import main
from emitlab.export import FORMAT_VERSION, read_meta
from emitlab.inference import EmotionClassifier

FIXTURE = Path(__file__).parent / "fixtures" / "layout_v1"


def _expected() -> dict:
    return json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


def _shape(meta: dict) -> dict:
    """What the format fixes, not the values: keys, member specs' keys and their files."""
    return {
        "keys": sorted(meta),
        "format_version": meta["format_version"],
        "combiner": sorted(meta["combiner"]),
        "members": [{"name": m["name"], "kind": m["kind"], "keys": sorted(m),
                     "folds": [{"path": f["path"], "spec": sorted(f["spec"]),
                                "files": sorted((f["spec"].get("files") or {}).values())} for f in m["folds"]]}
                    for m in meta["members"]],
    }


def test_the_same_run_gives_the_same_scores_and_format(emit_folder, tmp_path):
    expected = _expected()
    command = expected["command"]
    run = tmp_path / "run"
    assert main(["-q", command[0], "--data", str(emit_folder), "--out", str(run), *command[1:]]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_model"] == expected["best_model"]
    scores = {name: {"nested_macro_f1": v["nested_macro_f1"], "validation": v["validation"]["macro_f1"],
                     "test": v["test"]["macro_f1"]} for name, v in metrics["models"].items()}
    assert scores == expected["scores"]
    assert _shape(read_meta(run / "model")) == _shape(read_meta(FIXTURE / "model"))


def test_an_export_of_the_previous_layout_loads_and_predicts_the_same():
    expected = _expected()
    assert read_meta(FIXTURE / "model")["format_version"] == FORMAT_VERSION
    clf = EmotionClassifier.from_pretrained(FIXTURE / "model")
    np.testing.assert_allclose(clf.predict_proba(expected["texts"]), np.asarray(expected["probabilities"]),
                               rtol=0, atol=1e-12)
