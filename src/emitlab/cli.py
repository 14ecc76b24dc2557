"""The ``emitlab`` command line.

Every subcommand builds its settings from dataclasses (``--help`` shows each field's help);
errors in the user's input end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from .config import add_dataclass_arguments, build_configs, read_config_file

log = logging.getLogger("emitlab")

EPILOG = """\
Data: --data points at a folder with the EMit CSVs (emit_train_A.csv, ...) or the official
zips, at one zip, at 'hf:MattiaSangermano/emit', or at any CSV/JSONL/Parquet file; without
--data, $EMITLAB_DATA is used."""


def _run_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("run folder")
    g.add_argument("--out", type=Path, default=None,
                   help=f"Run folder (default: runs/{command}-<timestamp>). Holds config.json, split.json, "
                        "metrics.json, submissions and run.log.")
    g.add_argument("--overwrite", action="store_true",
                   help="Replace an earlier run folder (only one that emitlab made: it holds .emitlab-run).")
    g.add_argument("--config", type=Path, default=None,
                   help="JSON or YAML file with one section per settings group (data:, cleaning:, ...); flags win.")


# --------------------------------------------------------------------------------------


def cmd_data_stats(args: argparse.Namespace) -> int:
    from .data.stats import compute_stats, format_stats, plot_stats
    from .jobs import load_data
    from .settings import DataConfig

    cfg = build_configs(args, [DataConfig])[DataConfig]
    data = load_data(cfg)
    stats = []
    for name, ds in (("train", data.train), ("test", data.test), ("test_ood", data.test_ood)):
        if ds is not None and ds.labels is not None:
            stats.append(compute_stats(ds.texts, ds.labels, ds.label_names, name=name))
    for s in stats:
        print(format_stats(s))
        print()
    for w in data.warnings:
        print("note:", w)
    png = Path(args.png)
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_stats(stats, png)
    print(f"figure written to {png}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps([s.to_dict() for s in stats], indent=2))
        print(f"statistics written to {args.json}")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from .jobs import load_data
    from .settings import DataConfig

    cfg = build_configs(args, [DataConfig])[DataConfig]
    data = load_data(cfg)
    sets = {}
    for name in ("train", "test", "test_ood", "test_nolabel", "ood_nolabel"):
        ds = getattr(data, name)
        if ds is not None:
            kind = f"{len(ds.label_names)} labels" if ds.labels is not None else "no labels"
            print(f"ok  {name:<13} {len(ds):>6} rows, {kind}  ({ds.source})")
            sets[name] = {"source": ds.source, "rows": len(ds), "labels": ds.label_names if ds.has_labels else []}
    for w in data.warnings:
        print("note:", w)
    from .data.duplicates import duplicate_report, report_lines

    dups = duplicate_report(data)
    print("\n".join(report_lines(dups)))
    if args.json:
        import json

        report = {"sets": sets, "notes": data.warnings, "duplicates": dups}
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"report written to {args.json}")
    return 0


def _prepare(args: argparse.Namespace, classes: list[type], command: str, defaults: dict | None = None):
    """Settings (defaults <- command defaults <- profile <- config file <- flags), data and run folder."""
    from .jobs import load_data
    from .runs import RunDir, default_run_dir
    from .settings import PROFILES, DataConfig

    file_data = read_config_file(args.config) if args.config else {}
    profile = vars(args).get("run.profile") or (file_data.get("run") or {}).get("profile") or \
        ("full" if command == "run" else None)
    merged = {sec: dict(values) for sec, values in (defaults or {}).items()}
    for layer in ([PROFILES[profile]] if profile else []) + [file_data]:
        for sec, values in layer.items():
            if isinstance(values, dict):
                merged.setdefault(sec, {}).update(values)
            else:  # e.g. "command" in a run's saved config.json: build_configs ignores it
                merged[sec] = values
    cfgs = build_configs(args, classes, merged)
    data = load_data(cfgs[DataConfig])
    resume = getattr(args, "resume", False)
    run = RunDir(args.out or default_run_dir(command), overwrite=args.overwrite, resume=resume)
    for w in data.warnings:
        log.warning(w)
    run.save_config(sys.argv, [cfgs[c] for c in classes])
    return cfgs, data, run


def _job_settings() -> list[type]:
    from .data.cleaning import CleaningConfig
    from .settings import (CalibrationConfig, DataConfig, EnsembleConfig, LexiconConfig, RunConfig, TfidfConfig,
                           TrainConfig)

    return [RunConfig, DataConfig, CleaningConfig, TfidfConfig, LexiconConfig, TrainConfig, CalibrationConfig,
            EnsembleConfig]


def _job(args: argparse.Namespace, command: str, members: list[str] | None, defaults: dict) -> int:
    from .jobs import run_engine, summary_table
    from .settings import RunConfig

    cfgs, data, run = _prepare(args, _job_settings(), command, defaults)
    run_cfg = cfgs[RunConfig]
    metrics = run_engine(data, cfgs, run, members or run_cfg.members, resume=getattr(args, "resume", False),
                         export=command != "baseline" or args.export, report=run_cfg.report,
                         stats=command == "run")
    print(summary_table(metrics))
    print(f"run folder: {run.path}" + ("  (report: report.html)" if run_cfg.report else ""))
    run.close()
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    return _job(args, "baseline", ["tfidf"], {"run": {"report": False}})


def cmd_train(args: argparse.Namespace) -> int:
    return _job(args, "train", ["transformer"], {"run": {"folds": 1, "report": False}})


def cmd_run(args: argparse.Namespace) -> int:
    return _job(args, "run", None, {})


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from .inference import EmotionClassifier, read_texts, rows_from_probs

    clf = EmotionClassifier.from_pretrained(args.model, device=args.device, backend=args.backend)
    texts_in = args.texts if args.texts else ([] if args.input else sys.stdin.read().splitlines())
    ids, texts = read_texts(Path(args.input) if args.input else None, texts_in, args.text_col)
    probs = clf.predict_proba(texts, args.batch_size, progress=len(texts) > 10 * args.batch_size)
    rows = rows_from_probs(probs, clf.decode(probs), clf.label_names)
    fmt = args.format or ("csv" if args.output and args.output.endswith(".csv") else "jsonl")
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        if fmt == "jsonl":
            for i, t, r in zip(ids, texts, rows):
                out.write(json.dumps({"id": i, "text": t, **r}, ensure_ascii=False) + "\n")
        else:
            import pandas as pd

            frame = pd.DataFrame({"id": ids, "text": texts})
            for j, name in enumerate(clf.label_names):
                frame[f"p_{name}"] = np.round(probs[:, j], 6)
            pred = clf.decode(probs)
            for j, name in enumerate(clf.label_names):
                frame[name] = pred[:, j]
            frame["labels"] = [";".join(r["labels"]) for r in rows]
            frame.to_csv(out, index=False)
    finally:
        if args.output:
            out.close()
    return 0


# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .data.cleaning import CleaningConfig
    from .settings import (CalibrationConfig, DataConfig, EnsembleConfig, LexiconConfig, RunConfig, TfidfConfig,
                           TrainConfig)

    parser = argparse.ArgumentParser(
        prog="emitlab",
        description="Multilabel emotion detection for Italian social-media text (EMit, EVALITA 2023).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="Only warnings and results.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="Check or describe a dataset.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    stats = data_sub.add_parser("stats", help="Label prevalence, co-occurrence, labels per text, lengths: table and PNG.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(stats, DataConfig)
    stats.add_argument("--png", default="emit_stats.png", help="Where to write the figure (default: emit_stats.png).")
    stats.add_argument("--json", default="", help="Also write the statistics as JSON here.")
    stats.set_defaults(func=cmd_data_stats)
    validate = data_sub.add_parser("validate", help="Load and validate a dataset; report problems by file, row and column.",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(validate, DataConfig)
    validate.add_argument("--json", default="", help="Also write the report (sets, notes, duplicate texts) as JSON.")
    validate.set_defaults(func=cmd_data_validate)
    data.set_defaults(func=lambda a: (data.print_help(), 1)[1])

    base = sub.add_parser("baseline", help="TF-IDF word+char n-grams with balanced logistic regression, cross-fitted (--folds); calibrate, evaluate, submit.",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls in (RunConfig, DataConfig, CleaningConfig, TfidfConfig, CalibrationConfig):
        add_dataclass_arguments(base, cls)
    _run_options(base, "baseline")
    base.add_argument("--export", action="store_true", help="Also export the model (run/model + .zip).")
    base.set_defaults(func=cmd_baseline)

    train = sub.add_parser("train", help="Fine-tune a transformer encoder (default me5-small; 90/10 split unless --folds K); calibrate, evaluate, submit, export.",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls in (RunConfig, DataConfig, CleaningConfig, TrainConfig, CalibrationConfig):
        add_dataclass_arguments(train, cls)
    _run_options(train, "train")
    train.add_argument("--resume", action="store_true", help="Continue an interrupted run in --out from its last checkpoint.")
    train.set_defaults(func=cmd_train)

    run = sub.add_parser("run", help="The main job: stats, cross-fitted members (TF-IDF, lexicon, transformer), nested choice of "
                                     "the combination and calibration, evaluation, submissions, export and an HTML report.",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls in (RunConfig, DataConfig, CleaningConfig, TfidfConfig, LexiconConfig, TrainConfig, CalibrationConfig,
                EnsembleConfig):
        add_dataclass_arguments(run, cls)
    _run_options(run, "run")
    run.add_argument("--resume", action="store_true", help="Continue an interrupted run in --out from its last checkpoint.")
    run.set_defaults(func=cmd_run)

    from .compare import register_cli as register_compare
    from .onnx_export import register_cli as register_onnx
    from .serving.cli import register_cli as register_serve

    register_compare(sub)
    register_serve(sub)

    pred = sub.add_parser("predict", help="Per-label probabilities and labels from an exported model (folder or .zip).")
    pred.add_argument("--model", required=True, help="Export folder or its .zip (runs/<run>/model).")
    pred.add_argument("texts", nargs="*", help="Texts to classify; without them, --input or one text per stdin line.")
    pred.add_argument("--input", default="", help="CSV/JSONL/Parquet file with a text column (and optionally id).")
    pred.add_argument("--text-col", default="text", help="Text column of --input (default: text).")
    pred.add_argument("--output", default="", help="Write here instead of stdout (.csv gives CSV).")
    pred.add_argument("--format", choices=["jsonl", "csv"], default=None, help="Output format (default: jsonl, or csv for a .csv --output).")
    pred.add_argument("--batch-size", type=int, default=64, help="Texts per batch (sorted by length to cut padding).")
    pred.add_argument("--device", default=None, help="cpu, cuda or mps (default: cpu).")
    pred.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch",
                      help="torch (default), or onnxruntime on CPU: onnx (fp32) or onnx-int8 (quantised); "
                           "the ONNX file is exported into the model folder first if missing (see export-onnx).")
    pred.set_defaults(func=cmd_predict)
    register_onnx(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data.loading import DataError
    from .errors import RunFolderError

    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING if args.quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logging.getLogger().addHandler(console)
    logging.getLogger().setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (DataError, RunFolderError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("EMITLAB_DEBUG"):
            raise
        hint = "" if isinstance(exc, (DataError, RunFolderError)) else " (EMITLAB_DEBUG=1 shows the traceback)"
        print(f"emitlab: error: {exc}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emitlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
