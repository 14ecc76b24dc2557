"""Inference throughput, accuracy and agreement of the prediction backends on one export.

    python benchmarks/inference.py --model runs/full/model            # the 1000 EMit test texts
    python benchmarks/inference.py --model runs/full/model --limit 50 # a quick check
    python benchmarks/inference.py --run runs/full                    # the same as --model runs/full/model

An export holds the whole ensemble (``emitlab.export``): the cheap members (TF-IDF, lexicon:
sparse products in numpy), the transformer member's fold networks, a combiner and a decoder.
On one machine, in one run, at batch 1 and batch 64 (``--batch-sizes``), after a short warm-up:

``classifier``
    The whole :class:`emitlab.inference.EmotionClassifier` (cleaning, every member, combiner,
    decoder) with its transformer folds on each backend -- ``torch``, ``onnx``, ``onnx-int8``
    -- and the cheap members beside them: texts per second over the whole text set, the seconds
    spent in each member (the rest is cleaning and combining), macro-F1 of the decoded
    predictions against the gold labels and the largest absolute probability difference from the
    torch classifier at batch 64.
``networks``
    The transformer member alone (the mean of its fold networks, on texts cleaned beforehand) on
    each backend and on ``hf-pipeline``: texts per second, the largest difference from torch,
    macro-F1 at 0.5 and, when the run's ``metrics.json`` sits beside the export, with the
    member's own calibrated decoder.
``model_files``
    The bytes each backend loads, per member.
``serving``
    p50/p95 latency of ``POST /predict`` from ``emitlab serve`` (the whole ensemble) under
    concurrent clients.

The backends:

``hf-pipeline`` (networks only)
    What a user would write with a Hugging Face ``Pipeline``. A fold network is an encoder plus
    a custom head (mean or CLS pooling + linear), which no ``AutoModelFor...`` class reproduces
    (BERT's sequence-classification head has no mean pooling), so
    ``pipeline("text-classification")`` cannot load it as is. :class:`EmotionPipeline` is
    therefore a ``transformers.Pipeline`` subclass around the very same torch network:
    ``preprocess`` prefixes and tokenizes one text, ``_forward`` runs the model, ``postprocess``
    applies the sigmoid and returns ``[{"label", "score"}, ...]`` like the text-classification
    pipeline with ``top_k=None``. Batching, padding (``pad_collate_fn``) and un-batching are the
    Pipeline's own, with its default DataLoader and inputs in the given order (no length
    sorting). The alternative, ``pipeline("feature-extraction")`` + our head in numpy, would ship
    every token's hidden state back as Python lists and measure that conversion rather than the
    model, so it is not used.
``torch``
    Our predictor (length-sorted batches, ``torch.inference_mode``).
``onnx``, ``onnx-int8``
    The same predictor on onnxruntime (CPU) with each network's ``model.onnx`` /
    ``model.int8.onnx``; they are exported into the network folders first when missing (the
    export time is reported).

All backends use ``torch.get_num_threads()`` threads (onnxruntime gets the same number).

Measurements are plain functions registered with ``@measurement("name")``: each receives the
shared :class:`Context` (export folder, texts, gold labels, the torch reference probabilities)
and returns a JSON-able dict, stored under ``measurements.<name>``. Adding one is one more
decorated function; ``--only`` picks a subset.

The JSON goes to ``benchmarks/results/<--name>.json`` (default ``inference``) via ``record.py``,
or into ``--results-dir``.
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

import record  # noqa: E402

REPO = HERE.parent
#: backends of the whole classifier (its transformer folds; the cheap members always run in numpy)
from emitlab.registry import BACKENDS  # noqa: E402

#: backends of the transformer networks alone
NETWORK_BACKENDS = ["hf-pipeline", *BACKENDS]


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
    meta: dict
    notes: list[str] = field(default_factory=list)
    _torch: Any = None
    _reference: np.ndarray | None = None
    _cleaned: list[str] | None = None
    _network_reference: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def reference_batch_size(self) -> int:
        return 64 if 64 in self.args.batch_sizes else max(self.args.batch_sizes)

    @property
    def transformer_members(self) -> list[str]:
        return [m["name"] for m in self.meta["members"] if m["kind"] == "transformer"]

    def torch_classifier(self):
        """The export on the torch backend (loaded once; the reference of every comparison)."""
        if self._torch is None:
            from emitlab.inference import EmotionClassifier

            self._torch = EmotionClassifier.from_pretrained(self.model)
        return self._torch

    def reference(self) -> np.ndarray:
        """The torch classifier's probabilities (computed once)."""
        if self._reference is None:
            self._reference = self.torch_classifier().predict_proba(self.texts, self.reference_batch_size)
        return self._reference

    def cleaned(self) -> list[str]:
        """The texts as the export cleans them (what every member sees)."""
        if self._cleaned is None:
            self._cleaned = self.torch_classifier().cleaner.clean_many(self.texts)
        return self._cleaned

    def network_reference(self, member: str) -> np.ndarray:
        """The torch probabilities of transformer ``member`` alone (the mean of its folds)."""
        if member not in self._network_reference:
            folds = dict(self.torch_classifier().members)[member]
            self._network_reference[member] = member_proba(folds, self.cleaned(), self.reference_batch_size)
        return self._network_reference[member]


MEASUREMENTS: dict[str, Callable[[Context], dict]] = {}


def measurement(name: str):
    """Register ``fn(ctx) -> dict`` as a measurement stored under ``measurements.<name>``."""
    def register(fn: Callable[[Context], dict]) -> Callable[[Context], dict]:
        MEASUREMENTS[name] = fn
        return fn
    return register


def member_proba(folds: list, cleaned: list[str], batch_size: int) -> np.ndarray:
    """A member's probabilities on cleaned texts: the mean of its fold models."""
    total = None
    for fm in folds:
        if hasattr(fm, "config"):
            fm.config.eval_batch_size = int(batch_size)
        p = fm.predict_proba(cleaned)
        total = p if total is None else total + p
    return total / len(folds)


# --------------------------------------------------------------------------------------
# The Hugging Face Pipeline baseline


def make_hf_pipeline(fold, label_names: list[str]):
    """An :class:`EmotionPipeline` around one transformer fold's torch network (CPU)."""
    import torch
    from torch import nn
    from transformers import Pipeline

    predictor = fold.predictor

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
            return self.tokenizer(predictor.input_prefix + text, truncation=True, max_length=predictor.max_length,
                                  return_tensors="pt")

        def _forward(self, model_inputs):
            inputs = {k: v for k, v in model_inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            return {"logits": self.model(**inputs)["logits"]}

        def postprocess(self, model_outputs):
            scores = torch.sigmoid(model_outputs["logits"][0].float()).numpy()
            return [{"label": name, "score": float(s)} for name, s in zip(label_names, scores)]

    model = PipelineModel(fold.model.float().eval().to("cpu"))
    return EmotionPipeline(model=model, tokenizer=predictor.tokenizer, device=torch.device("cpu"))


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


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


class MemberTimer:
    """Wraps every fold model's ``predict_proba`` of a classifier to add up the seconds spent
    in each member, while the classifier's own ``predict_proba`` runs unchanged."""

    def __init__(self, clf):
        self.seconds: dict[str, float] = {name: 0.0 for name, _ in clf.members}
        for name, folds in clf.members:
            for fm in folds:
                fm.predict_proba = self._wrap(name, fm.predict_proba)

    def _wrap(self, name: str, fn):
        def timed(texts):
            t0 = time.perf_counter()
            try:
                return fn(texts)
            finally:
                self.seconds[name] += time.perf_counter() - t0
        return timed

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


def _classifier_backends(ctx: Context) -> list[str]:
    backends = [b for b in ctx.args.backends if b in BACKENDS]
    if not ctx.transformer_members and backends != ["torch"]:
        ctx.notes.append("the export has no transformer member: the backends only differ for transformer folds, "
                         "so the classifier is measured on torch alone")
        backends = ["torch"]
    return backends


@measurement("classifier")
def measure_classifier(ctx: Context) -> dict:
    """The whole classifier per backend and batch size: texts/s, seconds per member, macro-F1,
    max |p - p_torch|."""
    from emitlab.engine.evaluation import macro_f1
    from emitlab.inference import EmotionClassifier

    args = ctx.args
    warm = ctx.texts[:max(1, min(args.warmup, len(ctx.texts)))]
    reference = ctx.reference()
    rows = []
    for backend in _classifier_backends(ctx):
        clf, load_s = _timed(lambda: EmotionClassifier.from_pretrained(ctx.model, backend=backend))
        timer = MemberTimer(clf)
        for bs in args.batch_sizes:
            clf.predict_proba(warm, bs)
            timer.reset()
            probs, seconds = _timed(lambda: clf.predict_proba(ctx.texts, bs))
            members_s = {k: round(v, 3) for k, v in timer.seconds.items()}
            row = {"backend": backend, "batch_size": bs, "texts": len(ctx.texts), "seconds": round(seconds, 3),
                   "texts_per_s": round(len(ctx.texts) / seconds, 1), "load_s": round(load_s, 2),
                   "member_seconds": members_s,
                   "cleaning_and_combining_seconds": round(max(0.0, seconds - sum(timer.seconds.values())), 3),
                   "macro_f1": round(macro_f1(ctx.gold, clf.decode(probs)), 4),
                   "max_abs_prob_diff_vs_torch": float(np.abs(probs - reference).max())}
            rows.append(row)
            split = ", ".join(f"{k} {v:.2f}s" for k, v in members_s.items())
            print(f"classifier {backend:<10} batch {bs:>3}: {row['texts_per_s']:>8.1f} texts/s ({split})  "
                  f"macro-F1 {row['macro_f1']:.4f}  max |p - p_torch| {row['max_abs_prob_diff_vs_torch']:.1e}",
                  flush=True)
    return {"model_kind": ctx.meta.get("model_kind"), "combiner": ctx.meta["combiner"]["kind"],
            "members": {m["name"]: {"kind": m["kind"], "folds": len(m["folds"])} for m in ctx.meta["members"]},
            "reference": f"torch classifier, batch {ctx.reference_batch_size}", "warmup_texts": len(warm),
            "rows": rows}


def member_decoder(ctx: Context, member: str):
    """The member's own calibrated decoder from the run's metrics.json beside the export, if any."""
    import json

    from emitlab.engine.calibration import Decoder

    path = ctx.model.parent / "metrics.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["models"][member]
        return Decoder.from_dict(entry["calibration"]["decoder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@measurement("networks")
def measure_networks(ctx: Context) -> dict:
    """Each transformer member alone (mean of its fold networks, cleaned texts) per backend and
    batch size, the HF pipeline included."""
    from emitlab.engine.evaluation import macro_f1
    from emitlab.inference import EmotionClassifier

    args = ctx.args
    if not ctx.transformer_members:
        ctx.notes.append("networks: the export has no transformer member")
        return {"skipped": "no transformer member in the export"}
    cleaned = ctx.cleaned()
    warm = cleaned[:max(1, min(args.warmup, len(cleaned)))]
    out: dict[str, Any] = {"reference": f"torch, batch {ctx.reference_batch_size}", "warmup_texts": len(warm),
                           "members": {}}
    for member in ctx.transformer_members:
        reference = ctx.network_reference(member)
        decoder = member_decoder(ctx, member)
        rows = []
        for backend in [b for b in args.backends if b in NETWORK_BACKENDS]:
            t0 = time.perf_counter()
            if backend == "hf-pipeline":
                folds = dict(ctx.torch_classifier().members)[member]
                pipes = [make_hf_pipeline(fm, ctx.label_names) for fm in folds]

                def predict(texts, bs, pipes=pipes):
                    return sum(pipeline_predict_proba(p, texts, bs, ctx.label_names) for p in pipes) / len(pipes)
            else:
                clf = EmotionClassifier.from_pretrained(ctx.model, backend=backend)
                folds = dict(clf.members)[member]

                def predict(texts, bs, folds=folds):
                    return member_proba(folds, texts, bs)
            load_s = time.perf_counter() - t0
            for bs in args.batch_sizes:
                predict(warm, bs)
                probs, seconds = _timed(lambda: predict(cleaned, bs))
                row = {"backend": backend, "batch_size": bs, "folds": len(folds), "texts": len(cleaned),
                       "seconds": round(seconds, 3), "texts_per_s": round(len(cleaned) / seconds, 1),
                       "load_s": round(load_s, 2),
                       "macro_f1_at_0.5": round(macro_f1(ctx.gold, (probs >= 0.5).astype(int)), 4),
                       "max_abs_prob_diff_vs_torch": float(np.abs(probs - reference).max())}
                if decoder is not None:
                    row["macro_f1"] = round(macro_f1(ctx.gold, decoder.decode(probs)), 4)
                rows.append(row)
                print(f"{member} alone {backend:<11} batch {bs:>3}: {row['texts_per_s']:>8.1f} texts/s  "
                      f"macro-F1@0.5 {row['macro_f1_at_0.5']:.4f}  "
                      f"max |p - p_torch| {row['max_abs_prob_diff_vs_torch']:.1e}", flush=True)
        out["members"][member] = {"decoder": "the member's own (run metrics.json)" if decoder is not None else None,
                                  "rows": rows}
    return out


def _folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


@measurement("model_files")
def measure_model_files(ctx: Context) -> dict:
    """The bytes each backend loads, per member (a transformer's folds: weights or ONNX files)."""
    from emitlab.inference.onnx_export import onnx_file
    from emitlab.members.transformer.member import read_network_meta

    members = {}
    for m in ctx.meta["members"]:
        folders = [ctx.model / f["path"] for f in m["folds"]]
        if m["kind"] != "transformer":
            members[m["name"]] = {"kind": m["kind"], "folds": len(folders),
                                  "bytes": {"numpy": sum(_folder_bytes(f) for f in folders)}}
            continue
        sizes = {"torch": sum(_folder_bytes(f, "*.safetensors") for f in folders)}
        records = []
        for backend in ("onnx", "onnx-int8"):
            paths = [onnx_file(f, read_network_meta(f), backend) for f in folders]
            if all(p.is_file() for p in paths):
                sizes[backend] = sum(p.stat().st_size for p in paths)
        for f in folders:
            records.append(read_network_meta(f).get("onnx"))
        members[m["name"]] = {"kind": m["kind"], "folds": len(folders), "bytes": sizes, "onnx_export": records}
    return {"members": members}


@measurement("serving")
def measure_serving(ctx: Context) -> dict:
    """p50/p95 latency of ``POST /predict`` (one text per request) under concurrent clients.

    ``emitlab serve`` (the whole ensemble) runs in its own process on loopback; ``--clients``
    asyncio clients (httpx) each send requests back to back until ``--requests`` have been sent."""
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
                health = httpx.get(base + "/health", timeout=2)
                if health.status_code == 200:
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
    model = health.json().get("model", {})
    out = {"backend": args.serve_backend, "model_kind": model.get("model_kind"),
           "members": {m["name"]: m["folds"] for m in model.get("members", [])},
           "clients": args.clients, "requests": len(latencies), "errors": len(errors),
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
    """Export the ONNX files of every transformer network when the chosen backends need them;
    returns what was exported and how long it took."""
    from emitlab.inference.onnx_export import export_onnx, network_folders, onnx_file
    from emitlab.members.transformer.member import read_network_meta

    wanted = list(dict.fromkeys(b for b in backends if b in ("onnx", "onnx-int8")))
    folders = network_folders(model) if wanted else []
    missing = [f"{rel}:{b}" for rel, folder in folders for b in wanted
               if not onnx_file(folder, read_network_meta(folder), b).is_file()]
    if not missing:
        return None
    results, seconds = _timed(lambda: export_onnx(model, int8="onnx-int8" in wanted))
    return {"missing": missing, "networks": [r["network"] for r in results], "seconds": round(seconds, 1),
            "exporter": results[0]["exporter"]}


def default_data() -> Path:
    env = os.environ.get("EMITLAB_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "emit"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for the measurements and how the HF pipeline "
                                       "baseline is built.")
    p.add_argument("--model", type=Path, default=REPO / "runs" / "full" / "model",
                   help="Export folder or .zip of an `emitlab run|train|baseline --export` (default: runs/full/model).")
    p.add_argument("--run", type=Path, default=None,
                   help="An `emitlab run` folder: benchmark its export RUN/model (same as --model RUN/model).")
    p.add_argument("--data", type=Path, default=None,
                   help="emit_test.csv or the folder holding it (default: $EMITLAB_DATA or ../shared/data/emit).")
    p.add_argument("--limit", type=int, default=None, help="Only the first N texts (a quick check).")
    p.add_argument("--backends", default=",".join(NETWORK_BACKENDS),
                   help=f"Comma-separated subset of {','.join(NETWORK_BACKENDS)} (hf-pipeline: networks only).")
    p.add_argument("--batch-sizes", default="1,64", help="Comma-separated batch sizes (default: 1,64).")
    p.add_argument("--warmup", type=int, default=64, help="Texts predicted once before each timing (default: 64).")
    p.add_argument("--only", default=",".join(MEASUREMENTS),
                   help=f"Comma-separated measurements to run (default: all: {','.join(MEASUREMENTS)}).")
    p.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) threads (default: torch's).")
    p.add_argument("--serve-backend", default="onnx", choices=BACKENDS,
                   help="Backend of the server in the serving measurement (default: onnx).")
    p.add_argument("--clients", type=int, default=50,
                   help="Concurrent HTTP clients in the serving measurement (default: 50).")
    p.add_argument("--requests", type=int, default=1000,
                   help="Requests sent in all in the serving measurement (default: 1000).")
    p.add_argument("--name", default="inference",
                   help="Result name: benchmarks/results/NAME.json (default: inference).")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="Write NAME.json here instead of benchmarks/results (e.g. for a smoke run).")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        p.error(f"--batch-sizes: expected comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes: every batch size must be at least 1")
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    for b in args.backends:
        if b not in NETWORK_BACKENDS:
            p.error(f"unknown backend {b!r}; choose from {', '.join(NETWORK_BACKENDS)}")
    for m in args.only:
        if m not in MEASUREMENTS:
            p.error(f"unknown measurement {m!r}; choose from {', '.join(MEASUREMENTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from emitlab.export import read_meta, resolve_export

    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_export(args.run / "model" if args.run else args.model)
    meta = read_meta(model)
    label_names = list(meta["labels"])
    gold = load_gold(args.data or default_data(), label_names, args.limit)
    needs_onnx = any(m in args.only for m in ("classifier", "networks")) or (
        "serving" in args.only and args.serve_backend != "torch")
    backends = args.backends + ([args.serve_backend] if "serving" in args.only else [])
    export = ensure_onnx(model, backends) if needs_onnx else None
    ctx = Context(args=args, model=model, ids=gold.ids, texts=gold.texts, gold=gold.labels, label_names=label_names,
                  meta=meta)
    members = ", ".join(f"{m['name']} x{len(m['folds'])}" for m in meta["members"])
    print(f"{len(ctx.texts)} texts, model {model} ({meta.get('model_kind')}: {members}; combiner "
          f"{meta['combiner']['kind']}), {torch.get_num_threads()} threads", flush=True)
    results = {name: MEASUREMENTS[name](ctx) for name in args.only}
    payload = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
               "model": str(model), "model_kind": meta.get("model_kind"),
               "members": {m["name"]: len(m["folds"]) for m in meta["members"]},
               "data": str(args.data or default_data()), "texts": len(ctx.texts),
               "threads": torch.get_num_threads(), "onnx_export_during_run": export, "notes": ctx.notes,
               "measurements": results}
    path = record.write_result(args.name, payload, args.results_dir)
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
