"""``emitlab serve`` under load: the serialised server against the micro-batched one.

    python benchmarks/serving.py --model runs/full-A/model                  # 1000 requests per level
    python benchmarks/serving.py --model runs/full-A/model --backend onnx   # transformer members on onnxruntime
    python benchmarks/serving.py --model M --requests 40 --results-dir /tmp/smoke   # a quick check

For each mode -- ``serialised`` (``--no-batching``: one model call per request, one at a time,
what the server did before micro-batching) and ``batched`` (``--max-batch-texts``,
``--max-wait-ms``; with ``--batch-sizes 32,8``, one batched server per forward-pass size:
``batched-32`` and ``batched-8``) -- one ``emitlab serve`` process runs on loopback (one at a time, so they
never compete), and for each concurrency level (``--concurrency``, default 1, 10 and 50)
that many asyncio clients (httpx, one connection each) send ``POST /predict`` with ONE text per
request, back to back, until ``--requests`` requests have been sent -- or ``--time-limit``
seconds have passed (then no new request starts, the open ones finish, and the level is marked
``time_limited``). Before each level a few warm-up requests run untimed.

Recorded per mode and level: requests done, errors, p50/p95/p99/max latency (client side, ms),
requests per second, and from the server's ``/metrics`` the model calls made and the mean texts
and requests per model call. The texts are the EMit test texts (``--data``), cycled; without
them, a small built-in set of Italian sentences.

The clients run on the same machine as the server and take CPU from it; compare the two modes
as ratios from one run on one machine. The JSON record goes to
``benchmarks/results/<--name>.json`` (default ``serving``) through ``record.write_result``
(machine, versions, git commit), or into ``--results-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402

REPO = HERE.parent
MODES = ["serialised", "batched"]
FALLBACK_TEXTS = [
    "Che bella giornata, sono felicissima!",
    "Che schifo, mi vergogno per loro.",
    "Ti amo tanto ❤️",
    "Ho paura di quello che succederà domani.",
    "Non ci posso credere, che sorpresa!",
    "Sono furioso, è una vergogna assoluta.",
    "Speriamo che vada tutto bene, ci conto.",
    "Oggi piove e sono un po' triste.",
]


def default_data() -> Path:
    env = os.environ.get("EMITLAB_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "emit"


def load_texts(data: Path | None) -> tuple[list[str], str]:
    """The EMit test texts, or the built-in sentences when they are not there."""
    path = data or default_data()
    path = path / "emit_test.csv" if path.is_dir() else path
    if path.is_file():
        from emitlab.data.loading import load_table

        texts = [t for t in load_table(path).texts if t.strip()]
        if texts:
            return texts, str(path)
    return list(FALLBACK_TEXTS), "built-in sentences"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mode_flags(mode: str, args: argparse.Namespace) -> list[str]:
    if mode == "serialised":
        return ["--no-batching"]
    flags = ["--max-batch-texts", str(args.max_batch_texts), "--max-wait-ms", f"{args.max_wait_ms:g}"]
    size = mode.split("-", 1)[1] if mode.startswith("batched-") else None  # batched-<forward pass size>
    return flags + (["--batch-size", size] if size else [])


class Server:
    """``emitlab serve`` in a child process, on a free loopback port."""

    def __init__(self, args: argparse.Namespace, mode: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "emitlab.cli", "-q", "serve", "--model", str(args.model),
                        "--port", str(self.port), "--backend", args.backend, "--log-level", "warning",
                        *mode_flags(mode, args)]
        self.start_timeout = args.start_timeout
        self.proc: subprocess.Popen | None = None
        self.health: dict = {}

    def __enter__(self) -> "Server":
        import httpx

        self.proc = subprocess.Popen(self.command)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                r = httpx.get(self.base + "/health", timeout=2)
                if r.status_code == 200:
                    self.health = r.json()
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}: {' '.join(self.command)}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the server did not answer /health within {self.start_timeout} s")
            time.sleep(0.25)

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def batch_stats(metrics_text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"emitlab_batch_texts_sum", "emitlab_batch_texts_count", "emitlab_batch_requests_sum"}
    return {s.name: s.value for f in text_string_to_metric_families(metrics_text) for s in f.samples
            if s.name in wanted}


async def run_level(base: str, texts: list[str], clients: int, requests: int, time_limit: float,
                    warmup: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    stop_at = 0.0

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            if time.monotonic() > stop_at:
                return
            t0 = time.perf_counter()
            try:
                r = await http.post(base + "/predict", json={"text": texts[i % len(texts)]})
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}")
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=max(60.0, time_limit), limits=limits) as http:
        for i in range(warmup):
            await http.post(base + "/predict", json={"text": texts[-1 - i % len(texts)]})
        before = batch_stats((await http.get(base + "/metrics")).text)
        t0 = time.perf_counter()
        stop_at = time.monotonic() + time_limit
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
        after = batch_stats((await http.get(base + "/metrics")).text)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    batches = delta.get("emitlab_batch_texts_count", 0.0)
    return {
        "clients": clients, "requests": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
        "time_limited": len(latencies) < requests,
        "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2), "max_ms": round(float(lat.max()), 2),
        "requests_per_s": round(len(latencies) / wall, 2) if wall > 0 else None, "wall_s": round(wall, 2),
        "model_calls": int(batches),
        "mean_texts_per_call": round(delta.get("emitlab_batch_texts_sum", 0.0) / batches, 2) if batches else None,
        "mean_requests_per_call": round(delta.get("emitlab_batch_requests_sum", 0.0) / batches, 2) if batches else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for what is measured and how.")
    p.add_argument("--model", type=Path, default=REPO / "runs" / "full-A" / "model",
                   help="Export folder or .zip to serve (default: runs/full-A/model).")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"],
                   help="Backend of the server's transformer members (default: torch).")
    p.add_argument("--data", type=Path, default=None,
                   help="emit_test.csv or its folder, for the request texts (default: $EMITLAB_DATA or "
                        "../shared/data/emit; built-in sentences when missing).")
    p.add_argument("--concurrency", default="1,10,50",
                   help="Comma-separated numbers of concurrent clients (default: 1,10,50).")
    p.add_argument("--requests", type=int, default=1000,
                   help="Requests per mode and concurrency level, one text each (default: 1000).")
    p.add_argument("--time-limit", type=float, default=120.0,
                   help="Seconds per mode and level after which no new request starts (default: 120).")
    p.add_argument("--warmup", type=int, default=8, help="Untimed requests before each level (default: 8).")
    p.add_argument("--modes", default=",".join(MODES), help=f"Comma-separated subset of {','.join(MODES)}.")
    p.add_argument("--max-batch-texts", type=int, default=64,
                   help="The batched server's --max-batch-texts (default: 64).")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="The batched server's --max-wait-ms (default: 5).")
    p.add_argument("--batch-sizes", default="",
                   help="Comma-separated values of the batched server's --batch-size (texts per forward pass "
                        "within a model call), each its own batched server in this run, e.g. 32,8 (default: "
                        "serve's own default, one batched server).")
    p.add_argument("--start-timeout", type=float, default=300.0,
                   help="Seconds to wait for a server to load its model and answer /health (default: 300).")
    p.add_argument("--name", default="serving", help="Result name: NAME.json (default: serving).")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="Write NAME.json here instead of benchmarks/results (e.g. /tmp for a smoke run).")
    args = p.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error(f"--concurrency: expected comma-separated integers, got {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency: every level must be at least 1")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in args.modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if args.requests < 1 or args.time_limit <= 0 or args.warmup < 0:
        p.error("--requests must be at least 1, --time-limit above 0 and --warmup at least 0")
    if args.max_batch_texts < 1 or args.max_wait_ms < 0:
        p.error("--max-batch-texts must be at least 1 and --max-wait-ms at least 0")
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch-sizes: expected comma-separated integers, got {args.batch_sizes!r}")
    if sizes and min(sizes) < 1:
        p.error("--batch-sizes: every size must be at least 1")
    if sizes and "batched" in args.modes:  # one batched server per forward-pass size: batched-<size>
        i = args.modes.index("batched")
        args.modes[i:i + 1] = [f"batched-{b}" for b in sizes]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from emitlab.export import read_meta, resolve_export

    args.model = resolve_export(args.model)
    meta = read_meta(args.model)
    texts, source = load_texts(args.data)
    members = ", ".join(f"{m['name']} x{len(m['folds'])}" for m in meta["members"])
    print(f"serving benchmark: {args.model} ({meta.get('model_kind')}: {members}), backend {args.backend}, "
          f"{len(texts)} texts from {source}, {args.requests} requests per level", flush=True)
    results: list[dict] = []
    servers: dict[str, dict] = {}
    for mode in args.modes:
        with Server(args, mode) as server:
            servers[mode] = {"command": server.command[1:], "batching": server.health.get("batching")}
            for clients in args.concurrency:
                out = {"mode": mode, **asyncio.run(run_level(server.base, texts, clients, args.requests,
                                                             args.time_limit, args.warmup))}
                results.append(out)
                print(f"{mode:>10} {clients:>3} clients: p50 {out['p50_ms']:8.1f} ms  p95 {out['p95_ms']:8.1f} ms  "
                      f"{out['requests_per_s']:8.1f} req/s  {out['requests']} requests, {out['errors']} errors, "
                      f"{out['mean_texts_per_call']} texts per model call"
                      + ("  (time limit)" if out["time_limited"] else ""), flush=True)
    ratios = {}
    by = {(r["mode"], r["clients"]): r for r in results}
    for clients in args.concurrency:
        s, b = by.get(("serialised", clients)), by.get(("batched", clients))
        if s and b and s["requests_per_s"] and b["p95_ms"]:
            ratios[str(clients)] = {
                "requests_per_s_batched_over_serialised": round(b["requests_per_s"] / s["requests_per_s"], 2),
                "p95_serialised_over_batched": round(s["p95_ms"] / b["p95_ms"], 2)}
        sized = [m for m in args.modes if m.startswith("batched-") and by.get((m, clients))]
        first = by[(sized[0], clients)] if sized else None
        for m in sized[1:]:  # each forward-pass size against the first one named
            if first["requests_per_s"]:
                ratios.setdefault(str(clients), {})[f"requests_per_s_{m}_over_{sized[0]}"] = round(
                    by[(m, clients)]["requests_per_s"] / first["requests_per_s"], 2)
    payload = {"model": str(args.model), "model_kind": meta.get("model_kind"),
               "members": {m["name"]: len(m["folds"]) for m in meta["members"]}, "backend": args.backend,
               "texts": source, "requests_per_level": args.requests, "time_limit_s": args.time_limit,
               "warmup": args.warmup,
               "batched": {"max_batch_texts": args.max_batch_texts, "max_wait_ms": args.max_wait_ms,
                           "batch_sizes": args.batch_sizes or None},
               "servers": servers, "results": results, "ratios": ratios,
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    path = record.write_result(args.name, payload, args.results_dir)
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
