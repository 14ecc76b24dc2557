"""The ``emitlab`` command line.

Every subcommand builds its settings from dataclasses (``--help`` shows each field's help);
errors in the user's input end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

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
    g.add_argument("--overwrite", action="store_true", help="Replace an existing, non-empty run folder.")
    g.add_argument("--config", type=Path, default=None,
                   help="JSON or YAML file with one section per settings group (data:, cleaning:, ...); flags win.")


# --------------------------------------------------------------------------------------


def cmd_data_stats(args: argparse.Namespace) -> int:
    from .data.stats import compute_stats, format_stats, plot_stats
    from .pipeline import DataConfig, load_data

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
    from .pipeline import DataConfig, load_data

    cfg = build_configs(args, [DataConfig])[DataConfig]
    data = load_data(cfg)
    for name in ("train", "test", "test_ood", "test_nolabel", "ood_nolabel"):
        ds = getattr(data, name)
        if ds is not None:
            kind = f"{len(ds.label_names)} labels" if ds.labels is not None else "no labels"
            print(f"ok  {name:<13} {len(ds):>6} rows, {kind}  ({ds.source})")
    for w in data.warnings:
        print("note:", w)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from .data.cleaning import CleaningConfig, TextCleaner
    from .models.baseline import BaselineConfig, TfidfBaseline
    from .pipeline import CalibrationConfig, DataConfig, load_data, score_model, split_and_save, summary_line, write_submissions
    from .runs import RunDir, default_run_dir

    classes = [DataConfig, CleaningConfig, BaselineConfig, CalibrationConfig]
    cfgs = build_configs(args, classes, read_config_file(args.config) if args.config else None)
    data_cfg, clean_cfg, base_cfg, cal_cfg = (cfgs[c] for c in classes)
    data = load_data(data_cfg)
    run = RunDir(args.out or default_run_dir("baseline"), overwrite=args.overwrite)
    run.save_config(sys.argv, [cfgs[c] for c in classes])
    for w in data.warnings:
        log.warning(w)
    train, val = split_and_save(data, data_cfg, run)
    clean = TextCleaner(clean_cfg)
    t0 = time.time()
    model = TfidfBaseline(base_cfg).fit(clean.clean_many(train.texts), train.labels)
    fit_s = time.time() - t0
    sets = data.prediction_sets
    probs = {name: model.predict_proba(clean.clean_many(ds.texts)) for name, ds in sets.items()}
    p_val = model.predict_proba(clean.clean_many(val.texts))
    scored = score_model("tfidf-logreg", data.label_names, p_val, val.labels, sets, probs, cal_cfg)
    scored.metrics["task"] = data.task
    scored.metrics["timings_s"] = {"fit": round(fit_s, 2), "total": round(time.time() - run.started, 2)}
    run.write_json("metrics.json", scored.metrics)
    write_submissions(run, scored, sets, data.task)
    model.save(run / "baseline.joblib")
    log.info(summary_line(scored.metrics))
    print(summary_line(scored.metrics))
    print(f"run folder: {run.path}")
    run.close()
    return 0


# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .data.cleaning import CleaningConfig
    from .models.baseline import BaselineConfig
    from .pipeline import CalibrationConfig, DataConfig

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
    validate.set_defaults(func=cmd_data_validate)
    data.set_defaults(func=lambda a: (data.print_help(), 1)[1])

    base = sub.add_parser("baseline", help="TF-IDF word+char n-grams with balanced logistic regression; calibrate, evaluate, submit.",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls in (DataConfig, CleaningConfig, BaselineConfig, CalibrationConfig):
        add_dataclass_arguments(base, cls)
    _run_options(base, "baseline")
    base.set_defaults(func=cmd_baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data.loading import DataError
    from .runs import RunExistsError

    parser = build_parser()
    args = parser.parse_args(argv)
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
    except (DataError, RunExistsError, FileNotFoundError, ValueError) as exc:
        print(f"emitlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emitlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
