"""Inference throughput, accuracy and agreement of the prediction backends on one exported model.

    python benchmarks/inference.py --model runs/me5/model            # the 1000 EMit test texts
    python benchmarks/inference.py --model runs/me5/model --limit 50 # a quick check

On one machine, in one run, for each backend at batch 1 and batch 64 (``--batch-sizes``):
texts per second over the whole text set (after a short warm-up), macro-F1 of the decoded
predictions against the gold labels (``emitlab.metrics.macro_f1``, the classifier's calibrated
decoder) and the largest absolute probability difference from our torch predictor at batch 64.
The backends:

``hf-pipeline``
    What a user would write with a Hugging Face ``Pipeline``. Our export is an encoder plus a
    custom head (mean or CLS pooling + linear), which no ``AutoModelFor...`` class reproduces
    (BERT's sequence-classification head has no mean pooling), so ``pipeline("text-classification")``
    cannot load it as is. :class:`EmotionPipeline` is therefore a ``transformers.Pipeline``
    subclass around the very same torch network: ``preprocess`` cleans, prefixes and tokenizes
    one text, ``_forward`` runs the model, ``postprocess`` applies the sigmoid and returns
    ``[{"label", "score"}, ...]`` like the text-classification pipeline with ``top_k=None``.
    Batching, padding (``pad_collate_fn``) and un-batching are the Pipeline's own, with its
    default DataLoader and inputs in the given order (no length sorting). The alternative,
    ``pipeline("feature-extraction")`` + our head in numpy, would ship every token's hidden state
    back as Python lists and measure that conversion rather than the model, so it is not used.
``torch``
    :class:`emitlab.inference.EmotionClassifier` (length-sorted batches, ``torch.inference_mode``).
``onnx``, ``onnx-int8``
    The same classifier on onnxruntime (CPU) with ``model.onnx`` / ``model.int8.onnx``; they are
    exported into the model folder first when missing (the export time is reported).

All backends use ``torch.get_num_threads()`` threads (onnxruntime gets the same number).

Measurements are plain functions registered with ``@measurement("name")``: each receives the
shared :class:`Context` (model path, texts, gold labels, the torch reference probabilities) and
returns a JSON-able dict, stored under ``measurements.<name>``. Adding one (say, HTTP serving
latency) is one more decorated function; ``--only`` picks a subset.

The JSON goes to ``benchmarks/results/<--name>.json`` (default ``inference``) via ``record.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from record import write_result  # noqa: E402

REPO = HERE.parent
BACKENDS = ["hf-pipeline", "torch", "onnx", "onnx-int8"]


# --------------------------------------------------------------------------------------
# Shared state and the measurement registry


@dataclass
class Context:
    args: argparse.Namespace
    model: Path
    ids: list[str]
    texts: list[str]
    gold: np.ndarray
    label_names: list[str]
    notes: list[str] = field(default_factory=list)
    _reference: np.ndarray | None = None

    @property
    def reference_batch_size(self) -> int:
        return 64 if 64 in self.args.batch_sizes else max(self.args.batch_sizes)

    def reference(self) -> np.ndarray:
        """Our torch predictor's probabilities (computed once): what every backend is compared with."""
        if self._reference is None:
            from emitlab.inference import EmotionClassifier

            clf = EmotionClassifier.from_pretrained(self.model)
            self._reference = clf.predict_proba(self.texts, self.reference_batch_size)
        return self._reference


MEASUREMENTS: dict[str, Callable[[Context], dict]] = {}


def measurement(name: str):
    """Register ``fn(ctx) -> dict`` as a measurement stored under ``measurements.<name>``."""
    def register(fn: Callable[[Context], dict]) -> Callable[[Context], dict]:
        MEASUREMENTS[name] = fn
        return fn
    return register


# --------------------------------------------------------------------------------------
# The Hugging Face Pipeline baseline


def make_hf_pipeline(model_dir: Path):
    """An :class:`EmotionPipeline` around the export's torch network (CPU), and the classifier
    it was built from (for its decoder)."""
    import torch
    from torch import nn
    from transformers import Pipeline

    from emitlab.inference import EmotionClassifier

    clf = EmotionClassifier.from_pretrained(model_dir)

    class PipelineModel(nn.Module):
        """The EmotionModel plus the attributes a Pipeline reads from a PreTrainedModel."""

        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        @property
        def device(self) -> torch.device:
            return next(self.parameters()).device

        @property
        def dtype(self) -> torch.dtype:
            return next(self.parameters()).dtype

        def forward(self, **inputs):
            return self.inner(**inputs)

    class EmotionPipeline(Pipeline):
        def _sanitize_parameters(self, **kwargs):
            return {}, {}, {}

        def preprocess(self, text: str):
            text = clf.input_prefix + clf.cleaner(text)
            return self.tokenizer(text, truncation=True, max_length=clf.max_length, return_tensors="pt")

        def _forward(self, model_inputs):
            inputs = {k: v for k, v in model_inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            return {"logits": self.model(**inputs)["logits"]}

        def postprocess(self, model_outputs):
            scores = torch.sigmoid(model_outputs["logits"][0].float()).numpy()
            return [{"label": name, "score": float(s)} for name, s in zip(clf.label_names, scores)]

    return EmotionPipeline(model=PipelineModel(clf.model), tokenizer=clf.tokenizer, device=torch.device("cpu")), clf


def pipeline_predict_proba(pipe, texts: list[str], batch_size: int, label_names: list[str]) -> np.ndarray:
    rows = pipe(texts, batch_size=batch_size)
    index = {name: j for j, name in enumerate(label_names)}
    out = np.zeros((len(texts), len(label_names)))
    for i, row in enumerate(rows):
        for item in row:
            out[i, index[item["label"]]] = item["score"]
    return out


# --------------------------------------------------------------------------------------
# Measurements


def _predictor(ctx: Context, backend: str) -> tuple[Callable[[list[str], int], np.ndarray], Any]:
    """``predict(texts, batch_size) -> probs`` and the decoder for ``backend``."""
    from emitlab.inference import EmotionClassifier

    if backend == "hf-pipeline":
        pipe, clf = make_hf_pipeline(ctx.model)
        return (lambda texts, bs: pipeline_predict_proba(pipe, texts, bs, ctx.label_names)), clf.decoder
    clf = EmotionClassifier.from_pretrained(ctx.model, backend=backend)
    return clf.predict_proba, clf.decoder


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


@measurement("throughput")
def measure_throughput(ctx: Context) -> dict:
    """texts/s, macro-F1 and max |p - p_torch| per backend and batch size."""
    from emitlab.metrics import macro_f1

    args = ctx.args
    warm = ctx.texts[:max(1, min(args.warmup, len(ctx.texts)))]
    reference = ctx.reference()
    rows = []
    for backend in args.backends:
        (predict, decoder), load_s = _timed(lambda: _predictor(ctx, backend))
        for bs in args.batch_sizes:
            predict(warm, bs)
            probs, seconds = _timed(lambda: predict(ctx.texts, bs))
            row = {"backend": backend, "batch_size": bs, "texts": len(ctx.texts), "seconds": round(seconds, 3),
                   "texts_per_s": round(len(ctx.texts) / seconds, 1), "load_s": round(load_s, 2),
                   "macro_f1": round(macro_f1(ctx.gold, decoder.decode(probs)), 4),
                   "max_abs_prob_diff_vs_torch": float(np.abs(probs - reference).max())}
            rows.append(row)
            print(f"{backend:<12} batch {bs:>3}: {row['texts_per_s']:>8.1f} texts/s  macro-F1 {row['macro_f1']:.4f}  "
                  f"max |p - p_torch| {row['max_abs_prob_diff_vs_torch']:.1e}", flush=True)
    return {"reference": f"torch predictor, batch {ctx.reference_batch_size}", "warmup_texts": len(warm), "rows": rows}


@measurement("model_files")
def measure_model_files(ctx: Context) -> dict:
    """Sizes of the weights each backend loads."""
    from emitlab.onnx_export import onnx_file
    from emitlab.inference import read_meta

    meta = read_meta(ctx.model)
    sizes = {"torch": sum(p.stat().st_size for p in ctx.model.glob("*.safetensors"))}
    for backend in ("onnx", "onnx-int8"):
        path = onnx_file(ctx.model, meta, backend)
        if path.is_file():
            sizes[backend] = path.stat().st_size
    return {"bytes": sizes, "onnx_export": meta.get("onnx")}


@measurement("serving")
def measure_serving(ctx: Context) -> dict:
    """p50/p95 latency of ``POST /predict`` (one text per request) under concurrent clients.

    ``emitlab serve`` runs in its own process on loopback; ``--clients`` asyncio clients (httpx)
    each send requests back to back until ``--requests`` have been sent in all."""
    import asyncio
    import socket
    import subprocess

    import httpx

    args = ctx.args
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "emitlab.cli", "-q", "serve", "--model", str(ctx.model), "--port", str(port),
           "--backend", args.serve_backend, "--log-level", "warning"]
    server = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.5)

        latencies: list[float] = []
        errors: list[str] = []
        counter = iter(range(args.requests))

        async def client(http: httpx.AsyncClient) -> None:
            for i in counter:
                text = ctx.texts[i % len(ctx.texts)]
                t0 = time.perf_counter()
                try:
                    r = await http.post(base + "/predict", json={"text": text})
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                latencies.append(time.perf_counter() - t0)

        async def main() -> float:
            limits = httpx.Limits(max_connections=args.clients)
            async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                await http.post(base + "/predict", json={"texts": ctx.texts[:8]})  # warm-up
                t0 = time.perf_counter()
                await asyncio.gather(*(client(http) for _ in range(args.clients)))
                return time.perf_counter() - t0

        wall = asyncio.run(main())
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = np.array(latencies) * 1000
    out = {"backend": args.serve_backend, "clients": args.clients, "requests": len(latencies), "errors": len(errors),
           "error_kinds": sorted(set(errors)), "p50_ms": round(float(np.percentile(lat, 50)), 1),
           "p95_ms": round(float(np.percentile(lat, 95)), 1), "max_ms": round(float(lat.max()), 1),
           "requests_per_s": round(len(latencies) / wall, 1)}
    print(f"serving ({args.serve_backend}, {args.clients} clients): p50 {out['p50_ms']} ms, p95 {out['p95_ms']} ms, "
          f"{out['requests_per_s']} req/s, {out['errors']} errors", flush=True)
    return out


# --------------------------------------------------------------------------------------


def load_gold(data: Path, label_names: list[str], limit: int | None):
    from emitlab.data.loading import load_table

    path = data / "emit_test.csv" if data.is_dir() else data
    ds = load_table(path, label_cols=label_names)
    if limit:
        ds = ds.subset(np.arange(min(limit, len(ds))))
    return ds


def ensure_onnx(model: Path, backends: list[str]) -> dict | None:
    """Export the ONNX files the chosen backends need when they are missing; returns timing."""
    from emitlab.inference import read_meta
    from emitlab.onnx_export import export_onnx, onnx_file

    meta = read_meta(model)
    missing = [b for b in backends if b.startswith("onnx") and not onnx_file(model, meta, b).is_file()]
    if not missing:
        return None
    result, seconds = _timed(lambda: export_onnx(model, int8="onnx-int8" in backends))
    return {"exported": missing, "seconds": round(seconds, 1), "exporter": result["exporter"]}


def transformer_only_export(run_dir: Path) -> Path:
    """From an ``emitlab run`` folder whose export is the ensemble, make ``model-transformer``:
    the same files without the TF-IDF part, decoded with the transformer's own calibration (from
    the run's metrics.json), so that every backend, the HF pipeline included, runs the same network."""
    import json
    import shutil

    from emitlab.io import atomic_folder, atomic_write_json

    src, dest = run_dir / "model", run_dir / "model-transformer"
    if not dest.is_dir():
        with atomic_folder(dest) as tmp:  # an interrupted copy is never reused as the export
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("baseline.joblib", "*.onnx"), dirs_exist_ok=True)
            meta = json.loads((tmp / "emitlab.json").read_text())
            metrics = json.loads((run_dir / "metrics.json").read_text())["models"]["transformer"]
            meta.pop("ensemble", None)
            meta.pop("onnx", None)
            meta["model_kind"] = "transformer"
            meta["decoder"] = metrics["calibration"]["decoder"]
            meta["metrics"] = {k: metrics[k]["macro_f1"] for k in ("validation", "test") if k in metrics}
            atomic_write_json(tmp / "emitlab.json", meta)
    return dest


def default_data() -> Path:
    env = os.environ.get("EMITLAB_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "emit"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for how the HF pipeline baseline is built.")
    p.add_argument("--model", type=Path, default=REPO / "runs" / "me5" / "model", help="Export folder (default: runs/me5/model).")
    p.add_argument("--run", type=Path, default=None,
                   help="An `emitlab run` folder: benchmark its transformer alone (a copy of its export without the "
                        "TF-IDF part of the ensemble), instead of --model.")
    p.add_argument("--data", type=Path, default=None,
                   help="emit_test.csv or the folder holding it (default: $EMITLAB_DATA or ../shared/data/emit).")
    p.add_argument("--limit", type=int, default=None, help="Only the first N texts (a quick check).")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"Comma-separated subset of {','.join(BACKENDS)}.")
    p.add_argument("--batch-sizes", default="1,64", help="Comma-separated batch sizes (default: 1,64).")
    p.add_argument("--warmup", type=int, default=64, help="Texts predicted once before each timing (default: 64).")
    p.add_argument("--only", default=",".join(MEASUREMENTS),
                   help=f"Comma-separated measurements to run (default: all: {','.join(MEASUREMENTS)}).")
    p.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) threads (default: torch's).")
    p.add_argument("--serve-backend", default="onnx", choices=["torch", "onnx", "onnx-int8"],
                   help="Backend of the server in the serving measurement (default: onnx).")
    p.add_argument("--clients", type=int, default=50, help="Concurrent HTTP clients in the serving measurement (default: 50).")
    p.add_argument("--requests", type=int, default=1000, help="Requests sent in all in the serving measurement (default: 1000).")
    p.add_argument("--name", default="inference", help="Result name: benchmarks/results/NAME.json (default: inference).")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    for b in args.backends:
        if b not in BACKENDS:
            p.error(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    for m in args.only:
        if m not in MEASUREMENTS:
            p.error(f"unknown measurement {m!r}; choose from {', '.join(MEASUREMENTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from emitlab.inference import read_meta, resolve_export

    if args.threads:
        torch.set_num_threads(args.threads)
    model = transformer_only_export(args.run) if args.run else resolve_export(args.model)
    label_names = list(read_meta(model)["labels"])
    gold = load_gold(args.data or default_data(), label_names, args.limit)
    export = ensure_onnx(model, args.backends)
    ctx = Context(args=args, model=model, ids=gold.ids, texts=gold.texts, gold=gold.labels, label_names=label_names)
    print(f"{len(ctx.texts)} texts, model {model}, {torch.get_num_threads()} threads", flush=True)
    results = {name: MEASUREMENTS[name](ctx) for name in args.only}
    payload = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
               "model": str(model), "data": str(args.data or default_data()), "texts": len(ctx.texts),
               "threads": torch.get_num_threads(), "onnx_export_during_run": export, "notes": ctx.notes,
               "measurements": results}
    path = write_result(args.name, payload)
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
