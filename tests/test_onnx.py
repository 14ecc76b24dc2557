"""ONNX export of an export's transformer networks and the onnxruntime backends, on the shared
tiny run (``tiny_run`` in conftest: trained once per session; nothing is trained here).

Every test that writes ONNX files works on a copy of the export in ``tmp_path``. The slow test
measures parity and the int8 macro-F1 change on the 1000 EMit test texts for a real trained
export: ``EMITLAB_MODEL=runs/full/model pytest -m slow tests/test_onnx.py``.
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
from emitlab.export import META_FILE, read_meta, write_export
from emitlab.inference import EmotionClassifier
from emitlab.inference.onnx_export import ONNX_FILE, ONNX_INT8_FILE, OnnxBackend, export_onnx, load_onnx_backend
from emitlab.members.transformer.member import NETWORK_FILE, read_network_meta

from conftest import emit_dir
from synthetic import make_rows

PARITY_TOL = 1e-4


# --------------------------------------------------------------------------------------
# The export under test


def whole_ensemble_export(run: Path, dest: Path, model: str = "stacker") -> Path:
    """An export of ``run``'s ``model`` (default the stacker, which uses every member) written
    from the run's member folders, as ``emitlab run`` writes its best model. No training."""
    run = Path(run)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    base = read_meta(run / "model")
    entry = metrics["models"][model]
    meta = {"task": metrics["task"], "labels": base["labels"], "model_kind": model,
            "decoder": entry["calibration"]["decoder"], "combiner": entry["combiner"], "cleaning": base["cleaning"],
            "metrics": {k: entry[k]["macro_f1"] for k in ("validation", "test", "ood") if k in entry},
            "nested_macro_f1": entry.get("nested_macro_f1")}
    folders = {name: [run / "members" / name / f"fold-{i}" for i in range(info["folds"])]
               for name, info in metrics["members"].items()}
    return write_export(dest, meta, folders, make_zip=False)


def has_transformer(export: Path) -> bool:
    return any(m["kind"] == "transformer" for m in read_meta(export)["members"])


@pytest.fixture(scope="module")
def ensemble(tiny_ensemble_export) -> Path:
    return tiny_ensemble_export


def fresh_copy(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    return dest


def networks(folder: Path) -> list[Path]:
    """The transformer network folders of an export, in the order of its emitlab.json."""
    meta = read_meta(folder)
    return [folder / f["path"] for m in meta["members"] if m["kind"] == "transformer" for f in m["folds"]]


def engines(clf: EmotionClassifier) -> list:
    return [fm.predictor.engine for fm in clf.transformer_folds]


@pytest.fixture(scope="module")
def exported(ensemble, tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = fresh_copy(ensemble, tmp_path_factory.mktemp("export") / "model")
    return folder, export_onnx(folder)


@pytest.fixture(scope="module")
def reference(exported) -> EmotionClassifier:
    return EmotionClassifier.from_pretrained(exported[0])


def varied_texts(n: int = 40) -> list[str]:
    _, texts, _, _ = make_rows(n, 7, "p")
    # from one character to past max_length (48 tokens): different paddings in every batch
    return [t * (1 + i % 5) for i, t in enumerate(texts)] + ["x", "😂", "ok " * 100]


# --------------------------------------------------------------------------------------


def test_export_writes_files_and_records_them(exported, ensemble):
    import onnx

    folder, results = exported
    nets = networks(folder)
    assert len(nets) >= 2 and len(results) == len(nets)  # every transformer fold of the ensemble
    assert [r["network"] for r in results] == [str(n.relative_to(folder)) for n in nets]
    # the export's own meta is untouched: the ONNX files belong to each network
    assert json.loads((folder / META_FILE).read_text()) == json.loads((ensemble / META_FILE).read_text())
    for net, result in zip(nets, results):
        assert (net / ONNX_FILE).is_file() and (net / ONNX_INT8_FILE).is_file()
        assert not list(net.glob(".*tmp*")), "temporary files left behind"
        meta = read_network_meta(net)
        rec = meta["onnx"]
        assert rec["files"]["onnx"] == {"file": ONNX_FILE, "bytes": (net / ONNX_FILE).stat().st_size}
        assert rec["files"]["onnx-int8"]["file"] == ONNX_INT8_FILE
        assert rec["files"]["onnx-int8"]["bytes"] < rec["files"]["onnx"]["bytes"]
        assert rec["opset"] >= 17 and rec["exporter"] in ("torchscript", "dynamo") and rec["output"] == "logits"
        assert rec["inputs"] == ["input_ids", "attention_mask"]  # this tokenizer makes no token_type_ids
        assert rec["sample_max_abs_logit_diff"]["onnx"] <= PARITY_TOL
        assert meta["labels"][0] == "Anger" and meta["max_length"] == 48  # the rest of network.json is kept
        assert Path(result["files"]["onnx"]["path"]) == (net / ONNX_FILE).resolve() and result["recorded"]
        graph = onnx.load(str(net / ONNX_FILE)).graph
        for inp in graph.input:  # dynamic batch and sequence axes, int64 ids
            dims = inp.type.tensor_type.shape.dim
            assert [bool(d.dim_param) for d in dims] == [True, True], inp.name
            assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
        (out,) = graph.output
        assert out.name == "logits" and out.type.tensor_type.shape.dim[1].dim_value == 10
    backend = load_onnx_backend(nets[0], "onnx-int8")
    assert isinstance(backend, OnnxBackend) and backend.path == nets[0] / ONNX_INT8_FILE


@pytest.mark.parametrize("batch_size", [1, 8, 64])
def test_onnx_fp32_matches_torch(exported, reference, batch_size):
    folder, _ = exported
    texts = varied_texts()
    ref = reference
    clf = EmotionClassifier.from_pretrained(folder, backend="onnx")
    assert clf.backend == "onnx" and ref.backend == "torch"
    assert [n for n, _ in clf.members] == [n for n, _ in ref.members] and len(clf.members) >= 2
    assert len(clf.transformer_folds) == len(networks(folder))
    assert all(isinstance(e, OnnxBackend) and e.name == "onnx" for e in engines(clf))
    assert all(fm.model is None for fm in clf.transformer_folds)  # no torch network loaded
    p_ref, p = ref.predict_proba(texts, batch_size), clf.predict_proba(texts, batch_size)
    assert p.shape == (len(texts), 10) and p.dtype == np.float64
    assert np.abs(p - p_ref).max() <= PARITY_TOL
    # member by member: the transformer within tolerance, the cheap members identical
    m_ref, m = ref.member_probas(texts), clf.member_probas(texts)
    for name, fm in clf.members:
        if fm[0].kind == "transformer":
            assert np.abs(m[name] - m_ref[name]).max() <= PARITY_TOL, name
        else:
            np.testing.assert_array_equal(m[name], m_ref[name])
    assert (clf.decode(p) == ref.decode(p_ref)).mean() > 0.99
    assert (clf.predict("amore cuore")[0]["probabilities"].keys()
            == ref.predict("amore cuore")[0]["probabilities"].keys())
    assert clf.predict_proba([]).shape == (0, 10)


def test_onnx_int8_runs(exported):
    folder, _ = exported
    texts = varied_texts()
    clf = EmotionClassifier.from_pretrained(folder, backend="onnx-int8")
    assert clf.backend == "onnx-int8"
    assert all(e.name == "onnx-int8" and e.path.name == ONNX_INT8_FILE for e in engines(clf))
    p = clf.predict_proba(texts, batch_size=16)
    assert p.shape == (len(texts), 10) and np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert clf.decode(p).shape == p.shape


def test_predict_cli_backend_onnx_stdin(exported, reference, monkeypatch, capsys):
    folder, _ = exported
    lines = "felice evviva\nche schifo vergogna paura\n"
    res = subprocess.run([sys.executable, "-m", "emitlab.cli", "-q", "predict", "--model", str(folder),
                          "--backend", "onnx-int8"], input=lines, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["felice evviva", "che schifo vergogna paura"]
    assert all(set(r["probabilities"]) == set(reference.label_names) for r in rows)
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))  # in-process this time (saves a start-up)
    assert main(["-q", "predict", "--model", str(folder), "--backend", "onnx"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ref = reference.predict(lines.splitlines())
    assert len(rows) == 2
    for a, b in zip(rows, ref):
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) <= PARITY_TOL
        assert a["labels"] == b["labels"]


def test_export_onnx_cli(ensemble, tiny_export, tmp_path, capsys, monkeypatch):
    folder = fresh_copy(ensemble, tmp_path / "model")
    nets = networks(folder)
    assert main(["-q", "export-onnx", "--model", str(folder), "--no-int8"]) == 0
    out = capsys.readouterr().out
    assert out.count(ONNX_FILE) == len(nets) and "members/transformer/fold-1" in out
    for net in nets:
        assert (net / ONNX_FILE).is_file() and not (net / ONNX_INT8_FILE).exists()
        assert set(read_network_meta(net)["onnx"]["files"]) == {"onnx"}

    # --out elsewhere: OUT/<member>/fold-<i>, recorded by absolute path and used by the onnx backends
    other = tmp_path / "onnx-files"
    assert main(["-q", "export-onnx", "--model", str(folder), "--out", str(other)]) == 0
    assert "recorded under 'onnx'" in capsys.readouterr().out
    shipped = [other / net.relative_to(folder / "members") for net in nets]
    assert [p.relative_to(other).as_posix() for p in shipped] == [f"transformer/fold-{i}" for i in range(len(nets))]
    for net, dest in zip(nets, shipped):
        files = read_network_meta(net)["onnx"]["files"]
        assert files["onnx-int8"]["file"] == str((dest / ONNX_INT8_FILE).resolve())
        assert (dest / ONNX_FILE).is_file() and not (net / ONNX_INT8_FILE).exists()
    clf = EmotionClassifier.from_pretrained(folder, backend="onnx-int8")
    assert [e.path for e in engines(clf)] == [(d / ONNX_INT8_FILE).resolve() for d in shipped]
    # moved away: the backends fall back to the files inside each network folder
    shutil.move(other, tmp_path / "moved")
    clf = EmotionClassifier.from_pretrained(folder, backend="onnx")
    assert [e.path for e in engines(clf)] == [net / ONNX_FILE for net in nets]

    # a read-only export: the files are written under --out but cannot be recorded, and say so
    import emitlab.inference.onnx_export as onnx_export

    def read_only(folder, updates):
        raise PermissionError(13, "Permission denied", str(Path(folder) / NETWORK_FILE))

    monkeypatch.setattr(onnx_export, "update_meta", read_only)
    assert main(["-q", "export-onnx", "--model", str(folder), "--out", str(tmp_path / "ro"), "--no-int8"]) == 0
    assert "NOT recorded" in capsys.readouterr().out
    assert (tmp_path / "ro" / "transformer" / "fold-0" / ONNX_FILE).is_file()
    monkeypatch.undo()

    # one error line (exit 2), no traceback: no such model, and an export with no transformer
    assert main(["export-onnx", "--model", str(tmp_path / "nowhere")]) == 2
    if not has_transformer(tiny_export):
        assert main(["export-onnx", "--model", str(tiny_export)]) == 2
        assert "no transformer member" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-onnx", "--help"])
    help_text = capsys.readouterr().out
    assert "--no-int8" in help_text and "<member>/fold-<i>" in help_text


def test_missing_onnx_is_exported_on_load(ensemble, tmp_path):
    # from the .zip too: the files go into the extracted copy beside it
    zipped = shutil.make_archive(str(tmp_path / "model"), "zip", ensemble)
    clf = EmotionClassifier.from_pretrained(zipped, backend="onnx-int8")
    assert clf.transformer_folds and all(e.path.name == ONNX_INT8_FILE and e.path.is_file() for e in engines(clf))
    extracted = tmp_path / "model.unzipped"
    for net in networks(extracted):
        assert set(read_network_meta(net)["onnx"]["files"]) == {"onnx", "onnx-int8"}
    assert not any(ensemble.rglob("*.onnx")), "the source export was written to"
    assert clf.predict_proba(["ciao"]).shape == (1, 10)


def test_token_type_ids_input_when_the_tokenizer_makes_them(ensemble, reference, tmp_path):
    folder = fresh_copy(ensemble, tmp_path / "model")
    for net in networks(folder):
        config = json.loads((net / "tokenizer_config.json").read_text())
        config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]  # as BERT tokenizers do
        (net / "tokenizer_config.json").write_text(json.dumps(config))
    results = export_onnx(folder, int8=False)
    assert [r["inputs"] for r in results] == [["input_ids", "attention_mask", "token_type_ids"]] * len(results)
    # one network folder alone (export_onnx accepts it too): the same inputs
    (single,) = export_onnx(networks(folder)[0], tmp_path / "single", int8=False)
    assert single["network"] == "." and single["inputs"] == results[0]["inputs"]
    texts = varied_texts(20)
    p_ref = EmotionClassifier.from_pretrained(folder).member_probas(texts)["transformer"]
    p = EmotionClassifier.from_pretrained(folder, backend="onnx").member_probas(texts)["transformer"]
    assert np.abs(p - p_ref).max() <= PARITY_TOL


def test_bad_backend_and_device(exported):
    folder, _ = exported
    with pytest.raises(ValueError, match="unknown backend"):
        EmotionClassifier.from_pretrained(folder, backend="tensorrt")
    with pytest.raises(ValueError, match="runs on CPU"):
        EmotionClassifier.from_pretrained(folder, backend="onnx", device="cuda")
    with pytest.raises(ValueError, match="not an ONNX backend"):
        load_onnx_backend(networks(folder)[0], "torch")
    assert main(["-q", "predict", "--model", str(folder), "--backend", "onnx", "--device", "cuda", "ciao"]) == 2


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is not None, reason="onnxscript is installed")
def test_dynamo_exporter_without_onnxscript_is_a_clear_error(ensemble, tmp_path):
    net = fresh_copy(networks(ensemble)[0], tmp_path / "fold-0")
    before = sorted(p.name for p in net.iterdir())
    with pytest.raises(ValueError, match="pip install onnxscript"):
        export_onnx(net, exporter="dynamo")
    assert sorted(p.name for p in net.iterdir()) == before  # no file, not even a temporary one, left behind


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="the dynamo exporter needs onnxscript")
def test_dynamo_exporter(ensemble, tmp_path):
    folder = fresh_copy(ensemble, tmp_path / "model")
    results = export_onnx(folder, int8=False, exporter="dynamo")
    assert all(r["exporter"] == "dynamo" and r["opset"] >= 18 for r in results)
    texts = varied_texts(20)
    p_ref = EmotionClassifier.from_pretrained(folder).member_probas(texts)["transformer"]
    p = EmotionClassifier.from_pretrained(folder, backend="onnx").member_probas(texts)["transformer"]
    assert np.abs(p - p_ref).max() <= PARITY_TOL


# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_parity_and_int8_f1(tmp_path):
    """fp32 ONNX == torch on the 1000 EMit test texts for the whole classifier; int8 costs
    little macro-F1."""
    from emitlab.data.loading import load_table
    from emitlab.engine.evaluation import macro_f1

    env = os.environ.get("EMITLAB_MODEL")
    if not env or not (Path(env) / META_FILE).is_file():
        pytest.skip("set EMITLAB_MODEL to a trained export folder (e.g. runs/full/model) to run this test")
    if not has_transformer(Path(env)):
        pytest.skip(f"{env} holds no transformer member: nothing to export to ONNX")
    test_csv = emit_dir() / "emit_test.csv"
    if not test_csv.is_file():
        pytest.skip(f"EMit test data not found at {test_csv} (set EMITLAB_DATA to the folder with emit_test.csv)")
    # a copy, so that the test leaves the user's export folder untouched
    folder = Path(shutil.copytree(env, tmp_path / "model", ignore=shutil.ignore_patterns("*.onnx")))
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


# --------------------------------------------------------------------------------------
# int8 faithfulness (issue 10 item 5)

INT8_MAX_ABS_DP = 0.01  # per-token on the tiny networks: about 0.001 measured (dynamic: about 0.003)


def network_probas(path: Path, net: Path, texts: list[str]) -> np.ndarray:
    """Probabilities of one network's ONNX file ``path`` (its own predictor, batches of 16)."""
    from emitlab.members.transformer.member import load_predictor

    predictor, _ = load_predictor(net, "onnx")
    predictor.engine = OnnxBackend(path, threads=1)
    return predictor.predict_proba(texts, batch_size=16)


def test_int8_per_token_is_close_to_fp32(exported, tmp_path):
    """The default int8 file (per-token activations, per-channel weights) stays within
    INT8_MAX_ABS_DP of fp32 ONNX; network.json says what it is."""
    from emitlab.inference.quantize import quantize_int8

    folder, _ = exported
    texts = varied_texts(60)
    worst = {}
    for net in networks(folder):
        entry = read_network_meta(net)["onnx"]["files"]["onnx-int8"]
        assert entry["scheme"] == "per-token" and "per token" in entry["weights"]
        assert entry["quantised_matmuls"] > 0 and entry["quantised_embeddings"] == 1
        p32 = network_probas(net / ONNX_FILE, net, texts)
        p8 = network_probas(net / ONNX_INT8_FILE, net, texts)
        worst.setdefault("per-token", []).append(float(np.abs(p8 - p32).max()))
        dyn = tmp_path / f"{net.name}.dynamic.onnx"
        assert quantize_int8(net / ONNX_FILE, dyn, "dynamic")["scheme"] == "dynamic"
        worst.setdefault("dynamic", []).append(float(np.abs(network_probas(dyn, net, texts) - p32).max()))
    print(f"\nmax |p_int8 - p_fp32| per network: {worst}")
    assert max(worst["per-token"]) <= INT8_MAX_ABS_DP


def test_int8_measured_options_stay_close_to_fp32(exported, tmp_path):
    """The options benchmarks/int8.py measures (asymmetric per-token activations, SmoothQuant
    ranges from calibration texts, MatMuls kept fp32) write graphs as faithful as the default."""
    from emitlab.inference.quantize import _quantize_per_token, matmul_input_absmax
    from emitlab.members.transformer.member import load_predictor

    folder, _ = exported
    net = networks(folder)[0]
    texts, calibration_texts = varied_texts(60), varied_texts(90)[60:]
    predictor, _ = load_predictor(net, "onnx")
    ranges = matmul_input_absmax(net / ONNX_FILE, [b for _, b in predictor.padded_batches(calibration_texts, 8)])
    assert ranges and all(np.isfinite(r).all() and (r >= 0).all() for r in ranges.values())
    p32 = network_probas(net / ONNX_FILE, net, texts)
    for name, kwargs in {"asym": {"asymmetric": True}, "smooth": {"smooth": ranges, "alpha": 0.5},
                         "keep": {"keep_fp32": ("/intermediate/dense/",)}}.items():
        dest = tmp_path / f"{name}.onnx"
        info = _quantize_per_token(net / ONNX_FILE, dest, **kwargs)
        assert info["quantised_matmuls"] > 0
        assert float(np.abs(network_probas(dest, net, texts) - p32).max()) <= INT8_MAX_ABS_DP, name
    full = _quantize_per_token(net / ONNX_FILE, tmp_path / "all.onnx")["quantised_matmuls"]
    assert _quantize_per_token(net / ONNX_FILE, tmp_path / "k.onnx",
                               keep_fp32=("/intermediate/dense/",))["quantised_matmuls"] < full


def test_int8_scheme_option(ensemble, tmp_path):
    from emitlab.errors import SettingsError
    from emitlab.inference.quantize import quantize_int8

    folder = fresh_copy(ensemble, tmp_path / "model")
    net = networks(folder)[0]
    with pytest.raises(SettingsError, match="int8 scheme"):
        quantize_int8(net / "missing.onnx", tmp_path / "x.onnx", "fp8")
    assert main(["-q", "export-onnx", "--model", str(folder), "--int8-scheme", "dynamic"]) == 0
    entry = read_network_meta(net)["onnx"]["files"]["onnx-int8"]
    assert entry["scheme"] == "dynamic" and "quantize_dynamic" in entry["weights"]
    clf = EmotionClassifier.from_pretrained(folder, backend="onnx-int8")
    assert np.isfinite(clf.predict_proba(["che bello", "no"])).all()
    # a later fp32-only export keeps the description of the int8 file still there
    assert main(["-q", "export-onnx", "--model", str(folder), "--no-int8"]) == 0
    assert read_network_meta(net)["onnx"]["files"]["onnx-int8"]["scheme"] == "dynamic"
