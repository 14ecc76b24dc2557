"""``emitlab serve``: the HTTP service and demo page for an exported model (the whole ensemble:
every member's fold models, the combiner and the calibrated decoder).

Wire it into the main parser with ``register_cli(sub)`` (``sub`` being the object returned by
``parser.add_subparsers``). Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse

from emitlab.registry import BACKENDS


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _non_negative_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return x


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "serve",
        help="Serve an exported model over HTTP: POST /predict, GET /labels, /health, /metrics, a demo page at / "
             "and docs at /docs.",
        description="Serve an exported model (folder or .zip: the whole ensemble) with FastAPI/uvicorn. Open "
                    "http://HOST:PORT/ for the demo page and http://HOST:PORT/docs for the API documentation; "
                    "GET /health names the members, their folds and the combiner; GET /metrics is for Prometheus. "
                    "Concurrent requests are micro-batched into one model call (--max-batch-texts, "
                    "--max-wait-ms); on shutdown (Ctrl-C, SIGTERM) the running batch and the queued requests "
                    "are finished first.",
    )
    p.add_argument("--model", required=True, help="Export folder or its .zip (runs/<run>/model).")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1; 0.0.0.0 for all).")
    p.add_argument("--port", type=int, default=8000, help="Port (default: 8000).")
    p.add_argument("--backend", choices=BACKENDS.choices, default="torch",
                   help="Backend of the transformer members: torch, or onnxruntime on CPU with onnx (fp32) or "
                        "onnx-int8, exporting their ONNX files first when missing; the cheap members run in numpy "
                        "(default: torch).")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: cpu; torch backend only).")
    p.add_argument("--max-texts", type=_positive_int, default=64, help="Most texts per /predict request (default: 64).")
    p.add_argument("--max-chars", type=_positive_int, default=2000, help="Longest text in characters (default: 2000).")
    p.add_argument("--max-body-bytes", type=_positive_int, default=None,
                   help="Largest request body in bytes; bigger bodies get 413 before parsing (default: the largest "
                        "valid request, max-texts x (12 x max-chars + 64), at least 64 KiB: about 1.5 MiB).")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="Texts per forward pass of the transformer members within one model call; the call's "
                        "texts are sorted by length first, each pass padded to its own longest text (default: 8 "
                        "on CPU, where short passes waste less padding; 32 on CUDA/MPS).")
    p.add_argument("--max-batch-texts", type=_positive_int, default=64,
                   help="Micro-batching: concurrent requests are merged into one model call of at most this many "
                        "texts (whole requests, first come first served; a larger request runs alone, unsplit) "
                        "(default: 64).")
    p.add_argument("--max-wait-ms", type=_non_negative_float, default=5.0,
                   help="Micro-batching: the longest wait for more requests after the oldest queued one before "
                        "its batch runs anyway, made only under concurrent load (the previous batch took more than "
                        "one request): a lone client never waits, nor do requests that queued up during the "
                        "previous batch (default: 5).")
    p.add_argument("--no-batching", action="store_true",
                   help="One model call per request, one at a time (the same as --max-batch-texts 1 "
                        "--max-wait-ms 0, which it overrides): the serialised server, for comparison.")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default: info).")
    p.set_defaults(func=cmd_serve)
    return p


def describe(clf) -> str:
    """``stacker of tfidf x5, lexicon x5, transformer x5``: the model kind and its members' folds."""
    meta = getattr(clf, "meta", None) or {}
    members = ", ".join(f"{name} x{len(folds)}" for name, folds in getattr(clf, "members", None) or [])
    kind = meta.get("model_kind") or (meta.get("combiner") or {}).get("kind") or "model"
    return f"{kind} of {members}" if members else str(kind)


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    import uvicorn

    from emitlab.serving.app import create_app, default_batch_size, load_classifier

    clf = load_classifier(args.model, backend=args.backend, device=args.device)
    name = Path(args.model).name
    max_batch_texts, max_wait_ms = (1, 0.0) if args.no_batching else (args.max_batch_texts, args.max_wait_ms)
    batch_size = args.batch_size or default_batch_size(clf)
    app = create_app(clf, max_texts=args.max_texts, max_chars=args.max_chars, model_name=name,
                     batch_size=batch_size, max_body_bytes=args.max_body_bytes,
                     max_batch_texts=max_batch_texts, max_wait_ms=max_wait_ms)
    batching = ("no batching" if max_batch_texts == 1 else
                f"batches of up to {max_batch_texts} texts, waiting up to {max_wait_ms:g} ms")
    if getattr(clf, "transformer_folds", None):
        batching += f"; forward passes of {batch_size} texts"
    print(f"emitlab serve: {name} ({describe(clf)}; {len(clf.label_names)} labels, backend {args.backend}; "
          f"{batching}) on http://{args.host}:{args.port}/  (API docs: /docs, metrics: /metrics)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
