"""``emitlab predict --engine ray`` (emitlab/ray_predict.py) on a local Ray: the same rows as the
single-process engine, with the whole tiny ensemble export (cheap members and tiny BERT folds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
# Ray Data's own DataContext warns about its deprecated fields when it is copied to the workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

from emitlab.batch.ray_predict import MARKER  # noqa: E402
from emitlab.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_ensemble_export, tmp_path_factory) -> Path:
    """A writable copy: the ONNX files of the transformer folds are written into it once."""
    dest = tmp_path_factory.mktemp("ray-model") / "model"
    shutil.copytree(tiny_ensemble_export, dest)
    return dest


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    from synthetic import make_rows

    ids, texts, _, _ = make_rows(300, 11, "")  # ids "0000".."0299": strings with leading zeros
    texts = [t + (',\n"quoted" on a second line' if i % 9 == 0 else "") for i, t in enumerate(texts)]
    return pd.DataFrame({"id": ids, "text": texts})


def single_process(model: Path, inp: Path, out: Path) -> pd.DataFrame:
    assert main(["-q", "predict", "--model", str(model), "--input", str(inp), "--output", str(out),
                 "--backend", "onnx"]) == 0
    return pd.read_parquet(out).drop(columns=["text"]).sort_values("id", ignore_index=True)


def assert_same(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    got = got.sort_values("id", ignore_index=True)
    assert list(got.columns) == list(ref.columns)
    assert got["id"].tolist() == ref["id"].tolist()  # every id once
    p_cols = [c for c in ref.columns if c.startswith("p_")]
    assert np.abs(got[p_cols].to_numpy(float) - ref[p_cols].to_numpy(float)).max() <= 1e-6 + 1e-12
    rest = [c for c in ref.columns if c not in p_cols]
    pd.testing.assert_frame_equal(got[rest], ref[rest], check_dtype=False)


def test_ray_equals_single_process(model, rows, tmp_path, caplog):
    """CSV in two files read through a glob (string ids, quoted newlines), 2 actors."""
    whole = tmp_path / "all.csv"
    rows.to_csv(whole, index=False)
    parts = tmp_path / "parts"
    parts.mkdir()
    rows.iloc[:170].to_csv(parts / "part-0.csv", index=False)
    rows.iloc[170:].to_csv(parts / "part-1.csv", index=False)
    ref = single_process(model, whole, tmp_path / "single.parquet")

    out = tmp_path / "ray-out"
    assert main(["-q", "predict", "--engine", "ray", "--model", str(model), "--input", str(parts / "part-*.csv"),
                 "--output", str(out), "--ray-actors", "2", "--chunk-size", "64"]) == 0
    assert not ray.is_initialized()  # the local Ray was shut down
    got = pd.read_parquet(out)
    assert_same(got, ref)
    assert got["id"].map(type).eq(str).all() and "0000" in set(got["id"])
    summary = json.loads((out / MARKER).read_text())
    assert summary["backend"] == "onnx" and summary["actors"] == 2 and len(summary["inputs"]) == 2

    # an existing output is refused without --overwrite (before Ray starts)
    assert main(["-q", "predict", "--engine", "ray", "--model", str(model), "--input", str(whole),
                 "--output", str(out)]) == 2


def test_ray_parquet_input_and_a_bad_row(model, rows, tmp_path, capsys):
    """Parquet input; a row without text fails the job with one line naming its id."""
    inp = tmp_path / "in.parquet"
    rows.to_parquet(inp, index=False)
    ref = single_process(model, inp, tmp_path / "single.parquet")
    out = tmp_path / "ray-out"
    assert main(["-q", "predict", "--engine", "ray", "--model", str(model), "--input", str(inp),
                 "--output", str(out), "--ray-actors", "1"]) == 0
    assert_same(pd.read_parquet(out), ref)
    assert not ray.is_initialized()

    bad = rows.copy()
    bad.loc[123, "text"] = "  "
    bad.to_parquet(inp, index=False)
    capsys.readouterr()
    assert main(["-q", "predict", "--engine", "ray", "--model", str(model), "--input", str(inp),
                 "--output", str(tmp_path / "bad-out"), "--ray-actors", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("emitlab: error: id 0123: empty or missing text"), err[-3:]
    assert not ray.is_initialized()


def test_one_small_file_is_cut_into_a_block_per_chunk(rows, tmp_path):
    """Ray reads a few hundred kilobytes as one block, and one block would go to one actor: the
    input is cut into blocks of at most --chunk-size rows so that every actor gets a share."""
    from emitlab.batch.ray_predict import _read

    inp = tmp_path / "in.parquet"
    rows.to_parquet(inp, index=False)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = _read(ray, [str(inp)], "parquet", "text", "id", rows_per_block=64)
        assert sorted(ds.to_pandas()["id"]) == sorted(rows["id"])
        # batch_size=None: one batch per block
        sizes = ds.map_batches(lambda b: pd.DataFrame({"rows": [len(b)]}), batch_size=None,
                               batch_format="pandas").to_pandas()["rows"]
        assert sizes.sum() == 300 and len(sizes) >= 5 and sizes.max() <= 64
    finally:
        ray.shutdown()


def test_scale_benchmark_runs_both_engines_and_sizes(model, emit_folder, tmp_path):
    """benchmarks/ray_scale.py on a few rows: both engines' outputs hold every id once and agree;
    the sizing follows from the measured per-core rate."""
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("ray_scale", bench / "ray_scale.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main(["--model", str(model), "--data", str(emit_folder), "--rows", "150", "--files", "3",
                            "--ray-actors", "2", "--sample-s", "0.2", "--results-dir", str(tmp_path)]) == 0
    finally:
        sys.path.remove(str(bench))
    result = json.loads((tmp_path / "ray_scale.json").read_text())
    check = result["output_check"]
    assert check["local_rows"] == check["ray_rows"] == check["local_unique_ids"] == check["ray_unique_ids"] == 150
    assert check["same_ids"] and check["same_labels"] and check["max_abs_prob_diff"] <= 1e-6
    for engine in ("local", "ray"):
        e = result["engines"][engine]
        assert e["peak_memory_mib"] > 0 and e["texts_per_s"] > 0
    assert result["engines"]["ray"]["processes_at_peak"] > 1  # raylet, GCS, workers: the whole tree is counted
    sizing = result["sizing"]
    rate, need = sizing["per_core_texts_per_s"], 100e6 / 3600  # the stored rate is rounded to 0.01
    assert sizing["cores"] * rate >= need * 0.999 and (sizing["cores"] - 1) * rate < need * 1.001
    assert all(n["nodes"] * n["workers_per_node"] >= sizing["cores"] for n in sizing["nodes"])
