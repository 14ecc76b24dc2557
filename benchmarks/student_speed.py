"""Teacher ensemble against its distilled student (``emitlab distill``), in one run on one machine.

    python benchmarks/student_speed.py --run runs/full-A --data ../shared/data/emit
    python benchmarks/student_speed.py --run runs/full-A --texts 100 --requests 100 --name /tmp/smoke  # quick

For ``RUN/model`` (the teacher) and ``RUN/student``, one after the other, never at the same time:

``predict``
    ``emitlab predict --model M --input <the first --texts EMit test texts> --batch-size 64`` as a
    subprocess (what a user runs: start-up, model load, cleaning, every member), its wall seconds,
    and the texts per second of the model call alone (``EmotionClassifier.predict_proba`` at batch
    64 in this process, after a warm-up). Each measured ``--repeats`` times, alternating, median kept.
``serving``
    ``emitlab serve`` (micro-batched) under ``--clients`` concurrent clients sending one text per
    request (``benchmarks/serving.py``'s server and clients): requests per second and latency, a fresh
    server per measurement, ``--serving-repeats`` times per model, alternating; the level with the
    median requests per second is kept, every level's rate beside it.

The ratios student/teacher are the result (absolute speeds depend on the machine). The record
goes to ``benchmarks/results/<--name>.json`` through ``record.write_result``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import write_result  # noqa: E402


def test_texts(data: Path, n: int) -> tuple[list[str], list[str]]:
    from emitlab.data.loading import load_emit

    ds = load_emit(data, "A").test
    return list(ds.ids[:n]), list(ds.texts[:n])


def time_predict_cli(model: Path, csv_path: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emitlab.cli", "-q", "predict", "--model", str(model), "--input",
                    str(csv_path), "--batch-size", "64", "--output", str(out), "--overwrite"], check=True)
    return time.perf_counter() - t


def time_model_call(model: Path, texts: list[str]) -> float:
    from emitlab.inference import EmotionClassifier

    clf = EmotionClassifier.from_pretrained(model)
    clf.predict_proba(texts[:16], batch_size=64)
    t = time.perf_counter()
    clf.predict_proba(texts, batch_size=64)
    return len(texts) / (time.perf_counter() - t)


def serve_level(model: Path, texts: list[str], clients: int, requests: int, time_limit: float) -> dict:
    import serving

    args = serving.parse_args(["--model", str(model), "--requests", str(requests), "--time-limit", str(time_limit)])
    with serving.Server(args, "batched") as server:
        return asyncio.run(serving.run_level(server.base, texts, clients, requests, time_limit, args.warmup))


def _median_level(levels: list[dict]) -> dict:
    """The level whose requests per second is the median (the lower middle one of an even count)."""
    ranked = sorted(levels, key=lambda lv: lv.get("requests_per_s") or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="A run folder with model/ and student/ (emitlab distill).")
    p.add_argument("--data", type=Path, default=Path("../shared/data/emit"), help="The EMit folder (test texts).")
    p.add_argument("--texts", type=int, default=1000, help="Test texts to predict (default: 1000).")
    p.add_argument("--repeats", type=int, default=3, help="Measurements per model, alternating (default: 3).")
    p.add_argument("--clients", type=int, default=50, help="Concurrent serving clients (default: 50).")
    p.add_argument("--requests", type=int, default=600, help="Serving requests per model (default: 600).")
    p.add_argument("--serving-repeats", type=int, default=1, help=(
        "Serving measurements per model, alternating, median kept (default: 1; 50-client rates vary by about "
        "a tenth between runs on a shared machine)."))
    p.add_argument("--time-limit", type=float, default=180.0, help="Seconds per serving level at most.")
    p.add_argument("--name", default="student_speed_task-A", help="Result name, or a path for a smoke run.")
    args = p.parse_args(argv)

    models = {"teacher": args.run / "model", "student": args.run / "student"}
    for who, path in models.items():
        if not (path / "emitlab.json").is_file():
            p.error(f"{path}: no export ({who}); run `emitlab distill {args.run}` first")
    ids, texts = test_texts(args.data, args.texts)
    out: dict = {"run": str(args.run), "texts": len(texts), "batch_size": 64}
    with tempfile.TemporaryDirectory() as tmp:
        import pandas as pd

        csv_path = Path(tmp) / "texts.csv"
        pd.DataFrame({"id": ids, "text": texts}).to_csv(csv_path, index=False)
        walls: dict[str, list[float]] = {k: [] for k in models}
        rates: dict[str, list[float]] = {k: [] for k in models}
        for r in range(args.repeats):
            for who, path in models.items():
                walls[who].append(time_predict_cli(path, csv_path, Path(tmp) / f"{who}.jsonl"))
                rates[who].append(time_model_call(path, texts))
                print(f"repeat {r + 1}: {who}: emitlab predict {walls[who][-1]:.1f} s, model call "
                      f"{rates[who][-1]:.1f} texts/s", flush=True)
    out["predict"] = {who: {"cli_wall_s": round(statistics.median(walls[who]), 2),
                            "cli_texts_per_s": round(len(texts) / statistics.median(walls[who]), 1),
                            "model_call_texts_per_s": round(statistics.median(rates[who]), 1),
                            "cli_wall_s_all": [round(w, 2) for w in walls[who]]} for who in models}
    levels: dict[str, list[dict]] = {k: [] for k in models}
    for r in range(args.serving_repeats):
        for who, path in models.items():
            level = serve_level(path, texts, args.clients, args.requests, args.time_limit)
            levels[who].append(level)
            print(f"serve {r + 1}: {who}: {level['requests_per_s']} req/s at {args.clients} clients, "
                  f"p95 {level['p95_ms']} ms", flush=True)
    out["serving"] = {who: _median_level(levels[who]) for who in models}
    if args.serving_repeats > 1:
        out["serving_requests_per_s_all"] = {who: [lv.get("requests_per_s") for lv in levels[who]] for who in models}
    pt, ps = out["predict"]["teacher"], out["predict"]["student"]
    st, ss = out["serving"]["teacher"], out["serving"]["student"]
    out["student_over_teacher"] = {
        "emitlab_predict_wall": round(pt["cli_wall_s"] / ps["cli_wall_s"], 2),
        "model_call": round(ps["model_call_texts_per_s"] / pt["model_call_texts_per_s"], 2),
        "serving_requests_per_s": round(ss["requests_per_s"] / st["requests_per_s"], 2)
        if st.get("requests_per_s") else None,
    }
    print("student / teacher:", out["student_over_teacher"])
    name = Path(args.name)
    path = write_result(name.name, out, results_dir=name.parent if name.parent != Path(".") else None)
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
