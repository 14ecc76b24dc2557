"""Batch inference at scale: single-process ``emitlab predict`` against ``--engine ray`` (local Ray).

    python benchmarks/ray_scale.py --model runs/full-A/model                    # 200,000 texts
    python benchmarks/ray_scale.py --model M --rows 2000 --results-dir /tmp/x   # a quick check

The input is the EMit texts (train, test and out-of-domain files of ``--data``, in that order)
repeated until ``--rows`` rows, with an ``id`` column, written as Parquet into a temporary folder
outside the repository (never kept): one file for the single-process engine, the very same rows
split into ``--files`` files for Ray (Ray reads files in parallel blocks). Both engines run the
whole exported ensemble with the same ``--backend`` (ONNX fp32 by default, Ray's default; the ONNX
files are exported into the model folder first, untimed, by a warm-up predict of a few rows).

Each engine runs as its own ``emitlab predict`` subprocess, one after the other (never together:
they would compete for the cores). Recorded per engine: wall seconds, texts per second, texts
per second per core it used (the single process: its torch/onnxruntime threads; Ray: its actors,
one CPU each) and the peak memory of the whole process tree (the sum of the proportional set
sizes, PSS, of the command and every process under it -- Ray's raylet, GCS and workers included
-- sampled every ``--sample-s`` seconds; PSS counts shared pages, such as Ray's object store, once).
The outputs are then compared: the same ids, no row lost or duplicated, and the largest
probability difference between the two engines.

From the measured per-core rate, ``sizing`` says what classifying 100 million posts an hour
(27,778 texts/s; ``--target-per-hour``) needs: cores, and nodes of 16, 32 and 64 cores (one core
per node left to Ray's reading and writing tasks, as the local engine does).

The JSON record goes to ``benchmarks/results/<--name>.json`` (default ``ray_scale``) through
``record.write_result`` (machine, versions, git commit), or into ``--results-dir``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402

REPO = HERE.parent
NODE_SIZES = (16, 32, 64)


def emit_texts(data: Path) -> list[str]:
    import pandas as pd

    texts: list[str] = []
    for name in ("emit_train_A.csv", "emit_test.csv", "emit_test_nolabel_out_of_domain.csv"):
        path = data / name
        if path.is_file():
            texts += pd.read_csv(path)["text"].astype(str).tolist()
    if not texts:
        raise SystemExit(f"no EMit CSV files in {data} (see ../shared/data/emit/SOURCE.md)")
    return texts


def write_inputs(texts: list[str], rows: int, files: int, folder: Path) -> tuple[Path, Path]:
    """``folder/all.parquet`` (every row) and ``folder/parts/part-*.parquet`` (the same rows in
    ``files`` files)."""
    import pandas as pd

    repeated = [texts[i % len(texts)] for i in range(rows)]
    frame = pd.DataFrame({"id": [f"r{i:07d}" for i in range(rows)], "text": repeated})
    single = folder / "all.parquet"
    frame.to_parquet(single, index=False)
    parts = folder / "parts"
    parts.mkdir()
    step = math.ceil(rows / files)
    for k, start in enumerate(range(0, rows, step)):
        frame.iloc[start:start + step].to_parquet(parts / f"part-{k:03d}.parquet", index=False)
    return single, parts


class TreeMemory:
    """Samples the summed PSS of a process and all its descendants in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int, every_s: float):
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._every = every_s
        self._stop = threading.Event()
        self.peak = 0
        self.peak_processes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except self._psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                total += proc.memory_full_info().pss
            except self._psutil.Error:
                continue
        if total > self.peak:
            self.peak, self.peak_processes = total, len(procs)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_engine(command: list[str], sample_s: float, log: Path) -> dict:
    print("$", shlex.join(command), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        memory = TreeMemory(proc.pid, sample_s)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    memory.stop()
    if rc != 0:
        raise SystemExit(f"command failed (status {rc}); its log:\n{log.read_text()[-4000:]}")
    return {"command": shlex.join(command), "wall_s": round(wall, 1),
            "peak_memory_mib": round(memory.peak / 2**20, 1), "processes_at_peak": memory.peak_processes}


def read_output(path: Path):
    import pandas as pd

    files = sorted(glob.glob(str(path / "*.parquet"))) if path.is_dir() else [str(path)]
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values("id").reset_index(drop=True)


def sizing(per_core: float, per_hour: float) -> dict:
    per_s = per_hour / 3600.0
    cores = math.ceil(per_s / per_core)
    return {"texts_per_hour": per_hour, "texts_per_s": round(per_s, 1), "per_core_texts_per_s": round(per_core, 2),
            "cores": cores,
            "nodes": [{"cores_per_node": c, "workers_per_node": c - 1, "nodes": math.ceil(cores / (c - 1))}
                      for c in NODE_SIZES]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="An export folder (runs/<run>/model) or its zip.")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EMITLAB_DATA", REPO.parent / "shared/data/emit")),
                   help="EMit folder whose texts are repeated (default: $EMITLAB_DATA or ../shared/data/emit).")
    p.add_argument("--rows", type=int, default=200_000, help="Texts to classify (default: 200000).")
    p.add_argument("--files", type=int, default=16, help="Parquet files the Ray input is split into (default: 16).")
    p.add_argument("--backend", default="onnx", choices=["torch", "onnx", "onnx-int8"],
                   help="Prediction backend of both engines (default: onnx).")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=2048, help="Rows per chunk (single) / per actor batch (Ray).")
    p.add_argument("--ray-actors", type=int, default=None, help="Ray actors (default: the local cores).")
    p.add_argument("--engines", default="local,ray", help="Which engines to run, in order (default: local,ray).")
    p.add_argument("--sample-s", type=float, default=2.0, help="Memory sampling period (default: 2 s).")
    p.add_argument("--target-per-hour", type=float, default=100e6, help="Posts an hour for the sizing table.")
    p.add_argument("--workdir", type=Path, default=None, help="Where inputs and outputs go (default: a temp dir).")
    p.add_argument("--name", default="ray_scale")
    p.add_argument("--results-dir", type=Path, default=None)
    args = p.parse_args(argv)

    import pandas as pd

    from emitlab.batch.ray_predict import local_cores

    cores = local_cores()
    actors = args.ray_actors or cores
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or cores
    cli = [sys.executable, "-m", "emitlab.cli", "-q", "predict", "--model", str(args.model),
           "--backend", args.backend, "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size)]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    with tempfile.TemporaryDirectory(prefix="emitlab-ray-scale-", dir=args.workdir) as tmp:
        work = Path(tmp)
        texts = emit_texts(args.data)
        single_input, parts = write_inputs(texts, args.rows, args.files, work)
        # warm-up (untimed): exports the ONNX files into the model folder when missing
        warm = work / "warm.parquet"
        pd.DataFrame({"id": [f"w{i}" for i in range(8)], "text": texts[:8]}).to_parquet(warm, index=False)
        t0 = time.perf_counter()
        subprocess.run([*cli, "--input", str(warm), "--output", str(work / "warm-out.csv")], check=True,
                       stdout=subprocess.DEVNULL)
        warmup_s = time.perf_counter() - t0

        results: dict[str, dict] = {}
        outputs: dict[str, Path] = {}
        for engine in engines:
            if engine == "local":
                out = work / "local.parquet"
                command = [*cli, "--input", str(single_input), "--output", str(out)]
                used = threads
            elif engine == "ray":
                out = work / "ray-out"
                command = [*cli, "--engine", "ray", "--ray-actors", str(actors), "--input", str(parts),
                           "--output", str(out)]
                used = actors
            else:
                raise SystemExit(f"unknown engine {engine!r}: local or ray")
            res = run_engine(command, args.sample_s, work / f"{engine}.log")
            res["cores_used"] = used
            res["texts_per_s"] = round(args.rows / res["wall_s"], 2)
            res["texts_per_s_per_core"] = round(args.rows / res["wall_s"] / used, 2)
            results[engine] = res
            outputs[engine] = out
            print(json.dumps({engine: res}), flush=True)

        check: dict = {}
        frames = {e: read_output(o) for e, o in outputs.items()}
        for e, f in frames.items():
            check[f"{e}_rows"] = len(f)
            check[f"{e}_unique_ids"] = int(f["id"].nunique())
        if len(frames) == 2:
            a, b = frames["local"], frames["ray"]
            check["same_ids"] = bool(a["id"].equals(b["id"]))
            pcols = [c for c in a.columns if c.startswith("p_")]
            if check["same_ids"]:
                check["max_abs_prob_diff"] = float((a[pcols] - b[pcols]).abs().to_numpy().max())
                check["same_labels"] = bool(a["labels"].equals(b["labels"]))

    basis = results.get("ray") or results.get("local")
    payload = {"model": str(args.model), "backend": args.backend, "rows": args.rows,
               "distinct_texts": len(set(texts)), "input_files_ray": args.files, "batch_size": args.batch_size,
               "chunk_size": args.chunk_size, "cores": cores, "warmup_s": round(warmup_s, 1),
               "engines": results, "output_check": check,
               "sizing": sizing(basis["texts_per_s_per_core"], args.target_per_hour),
               "sizing_basis": "ray" if "ray" in results else "local"}
    if "local" in results and "ray" in results:
        payload["ray_over_local_throughput"] = round(results["ray"]["texts_per_s"] / results["local"]["texts_per_s"], 3)
    path = record.write_result(args.name, payload, args.results_dir)
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
