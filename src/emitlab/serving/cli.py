"""``emitlab serve``: the HTTP service and demo page for an exported model (the whole ensemble:
every member's fold models, the combiner and the calibrated decoder).

Wire it into the main parser with ``register_cli(sub)`` (``sub`` being the object returned by
``parser.add_subparsers``). Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse

BACKENDS = ["torch", "onnx", "onnx-int8"]  # = emitlab.members.transformer.BACKENDS (not imported: it pulls in torch)


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "serve",
        help="Serve an exported model over HTTP: POST /predict, GET /labels, /health, a demo page at / and docs at /docs.",
        description="Serve an exported model (folder or .zip: the whole ensemble) with FastAPI/uvicorn. Open "
                    "http://HOST:PORT/ for the demo page and http://HOST:PORT/docs for the API documentation; "
                    "GET /health names the members, their folds and the combiner.",
    )
    p.add_argument("--model", required=True, help="Export folder or its .zip (runs/<run>/model).")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1; 0.0.0.0 for all).")
    p.add_argument("--port", type=int, default=8000, help="Port (default: 8000).")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="Backend of the transformer members: torch, or onnxruntime on CPU with onnx (fp32) or "
                        "onnx-int8, exporting their ONNX files first when missing; the cheap members run in numpy "
                        "(default: torch).")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: cpu; torch backend only).")
    p.add_argument("--max-texts", type=_positive_int, default=64, help="Most texts per /predict request (default: 64).")
    p.add_argument("--max-chars", type=_positive_int, default=2000, help="Longest text in characters (default: 2000).")
    p.add_argument("--max-body-bytes", type=_positive_int, default=None,
                   help="Largest request body in bytes; bigger bodies get 413 before parsing (default: the largest "
                        "valid request, max-texts x (12 x max-chars + 64), at least 64 KiB: about 1.5 MiB).")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="Texts per forward pass (default: 32).")
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

    from .app import create_app, load_classifier

    clf = load_classifier(args.model, backend=args.backend, device=args.device)
    name = Path(args.model).name
    app = create_app(clf, max_texts=args.max_texts, max_chars=args.max_chars, model_name=name,
                     batch_size=args.batch_size, max_body_bytes=args.max_body_bytes)
    print(f"emitlab serve: {name} ({describe(clf)}; {len(clf.label_names)} labels, backend {args.backend}) "
          f"on http://{args.host}:{args.port}/  (API docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
