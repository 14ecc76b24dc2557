"""ONNX export and the onnxruntime backends, with a tiny local BERT trained for a few steps.

The slow test measures parity and the int8 macro-F1 change on the 1000 EMit test texts for a
real trained model: ``EMITLAB_MODEL=runs/me5/model pytest -m slow tests/test_onnx.py``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emitlab.cli import main
from emitlab.inference import EmotionClassifier
from emitlab.onnx_export import ONNX_FILE, ONNX_INT8_FILE, export_onnx

from conftest import emit_dir
from synthetic import make_rows, write_emit_folder
from test_train_tiny import TRAIN_ARGS

PARITY_TOL = 1e-4


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, tiny_model) -> Path:
    """A tiny BERT fine-tuned for a few steps and exported (``<run>/model``)."""
    root = tmp_path_factory.mktemp("onnx")
    data = write_emit_folder(root / "emit", n_train=120, n_test=30)
    out = root / "run"
    args = ["-q", "train", "--data", str(data), "--model", str(tiny_model), "--out", str(out), "--max-steps", "6",
            "--eval-steps", "3", "--early-stopping-patience", "0"] + TRAIN_ARGS
    assert main(args) == 0
    return out / "model"


def fresh_copy(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    return dest


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory) -> tuple[Path, dict]:
    folder = fresh_copy(trained_model, tmp_path_factory.mktemp("export") / "model")
    return folder, export_onnx(folder)


def varied_texts(n: int = 40) -> list[str]:
    _, texts, _, _ = make_rows(n, 7, "p")
    # from one character to past max_length (48 tokens): different paddings in every batch
    return [t * (1 + i % 5) for i, t in enumerate(texts)] + ["x", "😂", "ok " * 100]


def test_export_writes_files_and_records_them(exported):
    import onnx

    folder, result = exported
    assert (folder / ONNX_FILE).is_file() and (folder / ONNX_INT8_FILE).is_file()
    assert not list(folder.glob(".*tmp*")), "temporary files left behind"
    meta = json.loads((folder / "emitlab.json").read_text())
    rec = meta["onnx"]
    assert rec["files"]["onnx"] == {"file": ONNX_FILE, "bytes": (folder / ONNX_FILE).stat().st_size}
    assert rec["files"]["onnx-int8"]["file"] == ONNX_INT8_FILE
    assert rec["files"]["onnx-int8"]["bytes"] < rec["files"]["onnx"]["bytes"]
    assert rec["opset"] >= 17 and rec["exporter"] in ("torchscript", "dynamo") and rec["output"] == "logits"
    assert rec["inputs"] == ["input_ids", "attention_mask"]  # this tokenizer makes no token_type_ids
    assert rec["sample_max_abs_logit_diff"]["onnx"] <= PARITY_TOL
    assert meta["labels"][0] == "Anger" and "decoder" in meta  # the rest of the meta is kept
    assert Path(result["files"]["onnx"]["path"]) == (folder / ONNX_FILE).resolve()
    graph = onnx.load(str(folder / ONNX_FILE)).graph
    for inp in graph.input:  # dynamic batch and sequence axes, int64 ids
        dims = inp.type.tensor_type.shape.dim
        assert [bool(d.dim_param) for d in dims] == [True, True], inp.name
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    (out,) = graph.output
    assert out.name == "logits" and out.type.tensor_type.shape.dim[1].dim_value == 10


@pytest.mark.parametrize("batch_size", [1, 8, 64])
def test_onnx_fp32_matches_torch(exported, batch_size):
    folder, _ = exported
    texts = varied_texts()
    ref = EmotionClassifier.from_pretrained(folder)
    clf = EmotionClassifier.from_pretrained(folder, backend="onnx")
    assert clf.backend == "onnx" and ref.backend == "torch" and clf.model is None
    p_ref, p = ref.predict_proba(texts, batch_size), clf.predict_proba(texts, batch_size)
    assert p.shape == (len(texts), 10) and p.dtype == np.float64
    assert np.abs(p - p_ref).max() <= PARITY_TOL
    assert (clf.decode(p) == ref.decode(p_ref)).mean() > 0.99
    assert clf.predict("amore cuore")[0]["probabilities"].keys() == ref.predict("amore cuore")[0]["probabilities"].keys()
    assert clf.predict_proba([]).shape == (0, 10)


def test_onnx_int8_runs(exported):
    folder, _ = exported
    texts = varied_texts()
    clf = EmotionClassifier.from_pretrained(folder, backend="onnx-int8")
    p = clf.predict_proba(texts, batch_size=16)
    assert clf.backend == "onnx-int8"
    assert p.shape == (len(texts), 10) and np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert clf.decode(p).shape == p.shape


def test_predict_cli_backend_onnx_stdin(exported, monkeypatch, capsys):
    folder, _ = exported
    lines = "felice evviva\nche schifo vergogna paura\n"
    res = subprocess.run([sys.executable, "-m", "emitlab.cli", "-q", "predict", "--model", str(folder), "--backend", "onnx"],
                         input=lines, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["felice evviva", "che schifo vergogna paura"]
    ref = EmotionClassifier.from_pretrained(folder).predict(lines.splitlines())
    for a, b in zip(rows, ref):
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) <= PARITY_TOL
        assert a["labels"] == b["labels"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))  # in-process this time (saves a start-up)
    assert main(["-q", "predict", "--model", str(folder), "--backend", "onnx-int8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_export_onnx_cli(trained_model, tmp_path, capsys):
    folder = fresh_copy(trained_model, tmp_path / "model")
    assert main(["-q", "export-onnx", "--model", str(folder), "--no-int8"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    assert (folder / ONNX_FILE).is_file() and not (folder / ONNX_INT8_FILE).exists()
    assert set(json.loads((folder / "emitlab.json").read_text())["onnx"]["files"]) == {"onnx"}
    # --out elsewhere: recorded with its absolute path and used by the onnx backend
    other = tmp_path / "onnx-files"
    assert main(["-q", "export-onnx", "--model", str(folder), "--out", str(other)]) == 0
    files = json.loads((folder / "emitlab.json").read_text())["onnx"]["files"]
    assert files["onnx-int8"]["file"] == str((other / ONNX_INT8_FILE).resolve())
    assert EmotionClassifier.from_pretrained(folder, backend="onnx-int8").engine.path == (other / ONNX_INT8_FILE).resolve()
    assert main(["export-onnx", "--model", str(tmp_path / "nowhere")]) == 2  # one error line, no traceback
    with pytest.raises(SystemExit):
        main(["export-onnx", "--help"])
    assert "--no-int8" in capsys.readouterr().out


def test_missing_onnx_is_exported_on_load(trained_model, tmp_path):
    # from the .zip too: the file goes into the extracted copy beside it
    zipped = shutil.make_archive(str(tmp_path / "model"), "zip", trained_model)
    clf = EmotionClassifier.from_pretrained(zipped, backend="onnx-int8")
    assert clf.engine.path.name == ONNX_INT8_FILE and clf.engine.path.is_file()
    assert "onnx" in clf.meta
    assert clf.predict_proba(["ciao"]).shape == (1, 10)


def test_token_type_ids_input_when_the_tokenizer_makes_them(trained_model, tmp_path):
    folder = fresh_copy(trained_model, tmp_path / "model")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]  # as BERT tokenizers do
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    result = export_onnx(folder, int8=False)
    assert result["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    texts = varied_texts(20)
    p_ref = EmotionClassifier.from_pretrained(folder).predict_proba(texts, 8)
    p = EmotionClassifier.from_pretrained(folder, backend="onnx").predict_proba(texts, 8)
    assert np.abs(p - p_ref).max() <= PARITY_TOL


def test_bad_backend_and_device(exported):
    folder, _ = exported
    with pytest.raises(ValueError, match="unknown backend"):
        EmotionClassifier.from_pretrained(folder, backend="tensorrt")
    with pytest.raises(ValueError, match="runs on CPU"):
        EmotionClassifier.from_pretrained(folder, backend="onnx", device="cuda")


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="the dynamo exporter needs onnxscript")
def test_dynamo_exporter(trained_model, tmp_path):
    folder = fresh_copy(trained_model, tmp_path / "model")
    result = export_onnx(folder, int8=False, exporter="dynamo")
    assert result["exporter"] == "dynamo" and result["opset"] >= 18
    texts = varied_texts(20)
    p_ref = EmotionClassifier.from_pretrained(folder).predict_proba(texts, 8)
    p = EmotionClassifier.from_pretrained(folder, backend="onnx").predict_proba(texts, 8)
    assert np.abs(p - p_ref).max() <= PARITY_TOL


# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_parity_and_int8_f1(tmp_path):
    """fp32 ONNX == torch on the 1000 EMit test texts; int8 costs little macro-F1."""
    from emitlab.data.loading import load_table
    from emitlab.metrics import macro_f1

    env = os.environ.get("EMITLAB_MODEL")
    if not env or not (Path(env) / "emitlab.json").is_file():
        pytest.skip("set EMITLAB_MODEL to a trained export folder (e.g. runs/me5/model) to run this test")
    test_csv = emit_dir() / "emit_test.csv"
    if not test_csv.is_file():
        pytest.skip(f"EMit test data not found at {test_csv} (set EMITLAB_DATA to the folder with emit_test.csv)")
    # a copy, so that the test leaves the user's export folder untouched
    folder = Path(shutil.copytree(env, tmp_path / "model"))
    export_onnx(folder)
    ref = EmotionClassifier.from_pretrained(folder)
    gold = load_table(test_csv, label_cols=ref.label_names)
    p_ref = ref.predict_proba(gold.texts)
    f1 = {"torch": macro_f1(gold.labels, ref.decode(p_ref))}
    diff = {}
    for backend in ("onnx", "onnx-int8"):
        clf = EmotionClassifier.from_pretrained(folder, backend=backend)
        p = clf.predict_proba(gold.texts)
        diff[backend] = float(np.abs(p - p_ref).max())
        f1[backend] = macro_f1(gold.labels, clf.decode(p))
    print(f"\nmax |p - p_torch|: {diff}\nmacro-F1: {f1}  (int8 change {f1['onnx-int8'] - f1['torch']:+.4f})")
    assert len(gold) == 1000
    assert diff["onnx"] <= PARITY_TOL
    assert abs(f1["onnx"] - f1["torch"]) <= 1e-3
    assert f1["onnx-int8"] >= f1["torch"] - 0.03
