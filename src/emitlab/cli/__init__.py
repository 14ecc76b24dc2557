"""The ``emitlab`` command line.

Every subcommand builds its settings from dataclasses (``--help`` shows each field's help).
A user error (:class:`emitlab.errors.UserError`: bad data, settings, model files or run folder)
ends with one line on stderr, ``emitlab: error: ...``, and exit status 2 (``EMITLAB_DEBUG=1``
shows its traceback); any other exception is a bug and keeps its traceback (exit status 1);
Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from emitlab.errors import SettingsError, UserError
from emitlab.settings_cli import add_dataclass_arguments, build_configs, read_config_file

log = logging.getLogger("emitlab")

EPILOG = """\
Data: --data points at a folder with the EMit CSVs (emit_train_A.csv, ...) or the official
zips, at one zip, at 'hf:MattiaSangermano/emit', or at any CSV/JSONL/Parquet file; without
--data, $EMITLAB_DATA is used."""


def _run_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("run folder")
    g.add_argument("--out", type=Path, default=None,
                   help=f"Run folder (default: runs/{command}-<timestamp>). Holds config.json, folds.json, "
                        "metrics.json, predictions, submissions, the export and run.log.")
    g.add_argument("--overwrite", action="store_true",
                   help="Replace an earlier run folder (only one that emitlab made: it holds .emitlab-run).")
    g.add_argument("--config", type=Path, default=None,
                   help="JSON or YAML file with one section per settings group (data:, cleaning:, ...); flags win.")
    g.add_argument("--print-config", action="store_true",
                   help="Print the resolved settings (defaults <- profile <- --config <- flags) as the JSON "
                        "sections of config.json, and exit: nothing is loaded, trained or written.")


# --------------------------------------------------------------------------------------


def cmd_data_stats(args: argparse.Namespace) -> int:
    from emitlab.data.stats import compute_stats, format_stats, plot_stats
    from emitlab.jobs import load_data
    from emitlab.settings import DataConfig

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
    with _output("--png", png):
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_stats(stats, png)
    print(f"figure written to {png}")
    if args.json:
        from emitlab.io import atomic_write_json

        with _output("--json", args.json):
            atomic_write_json(Path(args.json), [s.to_dict() for s in stats])
        print(f"statistics written to {args.json}")
    return 0


@contextlib.contextmanager
def _output(option: str, path: str | Path):
    """An output file given by ``option`` that cannot be written is the user's error, not a bug."""
    try:
        yield
    except OSError as exc:
        raise SettingsError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from exc


def cmd_data_validate(args: argparse.Namespace) -> int:
    from emitlab.jobs import load_data
    from emitlab.settings import DataConfig

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
    from emitlab.data.duplicates import duplicate_report, report_lines

    dups = duplicate_report(data)
    print("\n".join(report_lines(dups)))
    if args.json:
        from emitlab.io import atomic_write_json

        report = {"sets": sets, "notes": data.warnings, "duplicates": dups}
        with _output("--json", args.json):
            atomic_write_json(Path(args.json), report)
        print(f"report written to {args.json}")
    return 0


def _prepare(args: argparse.Namespace, classes: list[type], command: str, defaults: dict | None = None):
    """Settings (defaults <- command defaults <- profile <- config file <- flags), data and run folder."""
    from emitlab.io import to_jsonable
    from emitlab.jobs import load_data
    from emitlab.runs import RunDir, default_run_dir
    from emitlab.settings import EXTRA_DATA_DEFAULT, PROFILES, DataConfig, section_name

    file_data = read_config_file(args.config, classes) if args.config else {}
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
    if profile and _extra_data_default_applies(args, file_data, cfgs[DataConfig]):
        from emitlab.data.extra import extra_data_dir

        merged.setdefault("data", {}).update(EXTRA_DATA_DEFAULT)
        cfgs = build_configs(args, classes, merged)
        log.info("profile %s: training on MultiEmotions-It too (%s), with --domain-marker and Fear masked on it; "
                 "--extra-data none for the task's file alone", profile,
                 extra_data_dir(cfgs[DataConfig].extra_data_dir))
    if getattr(args, "print_config", False):
        print(json.dumps({section_name(c): to_jsonable(cfgs[c]) for c in classes}, indent=2, ensure_ascii=False))
        return None
    data = load_data(cfgs[DataConfig])
    resume = getattr(args, "resume", False)
    run = RunDir(args.out or default_run_dir(command), overwrite=args.overwrite, resume=resume)
    for w in data.warnings:
        log.warning(w)
    run.save_config(sys.argv, [cfgs[c] for c in classes])
    return cfgs, data, run


def _extra_data_default_applies(args: argparse.Namespace, file_data: dict, data_cfg) -> bool:
    """A run profile's extra data (``EXTRA_DATA_DEFAULT``): on task A, when MultiEmotions-It's file is in
    the extra-data folder and neither a flag nor the config file sets what extra data to use."""
    from emitlab.data.extra import PROXY_FILE, extra_data_dir

    keys = ("extra_data", "extra_data_labels", "domain_marker")
    given = {k.split(".", 1)[1] for k in vars(args) if k.startswith("data.")} | set(file_data.get("data") or {})
    return data_cfg.task == "A" and not given & set(keys) and (extra_data_dir(data_cfg.extra_data_dir)
                                                                / PROXY_FILE).is_file()


def _job_settings() -> list[type]:
    from emitlab.settings import GROUPS

    return list(GROUPS)


def _job(args: argparse.Namespace, command: str, members: list[str] | None, defaults: dict) -> int:
    from emitlab.jobs import run_engine, summary_table
    from emitlab.settings import RunConfig

    prepared = _prepare(args, _job_settings(), command, defaults)
    if prepared is None:  # --print-config
        return 0
    cfgs, data, run = prepared
    run_cfg = cfgs[RunConfig]
    try:
        metrics = run_engine(data, cfgs, run, members or run_cfg.members, resume=getattr(args, "resume", False),
                             export=command != "baseline" or args.export, report=run_cfg.report,
                             stats=command == "run")
        if run_cfg.distill and command == "run" and getattr(run, "is_main", True):
            from emitlab.distill import distill
            from emitlab.settings import DistillConfig

            metrics["distill"] = distill(run.path, DistillConfig())
    finally:  # detach run.log, also when the job fails
        run.close()
    print(summary_table(metrics))
    if "distill" in metrics:
        from emitlab.distill import distill_summary

        print(distill_summary(metrics["distill"]))
    print(f"run folder: {run.path}" + ("  (report: report.html)" if run_cfg.report else ""))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    return _job(args, "baseline", ["tfidf"], {"run": {"report": False}})


def cmd_train(args: argparse.Namespace) -> int:
    return _job(args, "train", ["transformer"], {"run": {"folds": 1, "report": False}})


def cmd_run(args: argparse.Namespace) -> int:
    return _job(args, "run", None, {})


def cmd_distill(args: argparse.Namespace) -> int:
    from emitlab.distill import RESULT_FILE, STUDENT_EXPORT, distill, distill_summary
    from emitlab.settings import DistillConfig

    dcfg = build_configs(args, [DistillConfig])[DistillConfig]
    result = distill(Path(args.run_dir), dcfg, data_dir=args.data)
    print(distill_summary(result))
    print(f"student: {Path(args.run_dir) / STUDENT_EXPORT} (+ .zip); record: {Path(args.run_dir) / RESULT_FILE}")
    return 0



def cmd_predict(args: argparse.Namespace) -> int:
    """Single-process (streaming, resumable; see emitlab.batch.predict) or Ray Data
    (emitlab.batch.ray_predict) prediction with the whole exported ensemble."""
    from emitlab.errors import SettingsError

    inputs = list(args.input or [])
    if args.engine == "ray":
        for flag, given in (("texts on the command line", bool(args.texts)), ("--resume", args.resume),
                            ("--device", args.device not in (None, "cpu"))):
            if given:
                raise SettingsError(f"--engine ray does not take {flag} (it reads --input files on CPU actors)")
        if not args.output:
            raise SettingsError("--engine ray needs --output: the folder for its Parquet files")
        if args.format not in (None, "parquet"):
            raise SettingsError("--engine ray writes Parquet only")
        if args.domain:
            raise SettingsError("--domain works with the local engine (Ray actors predict as the export's default)")
        from emitlab.batch.ray_predict import ray_predict

        ray_predict(args.model, inputs, args.output, backend=args.backend, actors=args.ray_actors,
                    address=args.ray_address, text_col=args.text_col, chunk_size=args.chunk_size,
                    batch_size=args.batch_size, overwrite=args.overwrite, quiet=args.quiet)
        return 0

    from emitlab.batch.predict import (
        check_output,
        check_resumable,
        iter_text_chunks,
        job_fingerprint,
        output_format,
        predict_chunks,
        predict_file,
        stdin_lines,
    )
    from emitlab.inference import EmotionClassifier

    if args.ray_actors is not None or args.ray_address:
        raise SettingsError("--ray-actors and --ray-address need --engine ray")
    if len(inputs) > 1:
        raise SettingsError("the single-process engine reads one --input file (--engine ray reads several)")
    if inputs and args.texts:
        raise SettingsError("give texts on the command line or --input, not both")
    input_path = Path(inputs[0]) if inputs else None
    output = args.output or None
    if (args.resume or args.overwrite) and not output:
        raise SettingsError("--resume and --overwrite need --output FILE")
    if args.resume and input_path is None:
        raise SettingsError("--resume needs --input FILE (texts from the command line or stdin cannot be resumed)")
    backend = args.backend or "torch"
    fmt = output_format(output, args.format)
    state = check_output(output, args.resume, args.overwrite) if output else None
    job = job_fingerprint(input_path, args.text_col, args.model, backend, fmt) if output else None
    if job is not None and args.domain:  # a resumed job must keep the domain it started with
        job["domain"] = args.domain
    if state is not None and state.get("complete"):
        check_resumable(state, job, output)
        log.info("%s is already complete (%d rows); nothing to do", output, state.get("rows_done", 0))
        return 0
    clf = EmotionClassifier.from_pretrained(args.model, device=args.device, backend=backend)
    clf.set_domain(args.domain)
    progress = False if args.quiet else None
    if input_path is not None:
        predict_file(clf, input_path, output, fmt=fmt, job=job, state=state, text_col=args.text_col,
                     chunk_size=args.chunk_size, batch_size=args.batch_size, progress=progress)
    else:
        texts = args.texts if args.texts else stdin_lines(sys.stdin)
        predict_chunks(clf, lambda skip: iter_text_chunks(texts, args.chunk_size), output, fmt=fmt, job=job,
                       state=state, batch_size=args.batch_size, progress=progress)
    return 0


# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """``emitlab`` and its commands: data, the three jobs, compare, serve, predict, export-onnx."""
    from emitlab.inference.onnx_export import register_cli as register_onnx
    from emitlab.report.compare import register_cli as register_compare
    from emitlab.serving.cli import register_cli as register_serve

    parser = argparse.ArgumentParser(
        prog="emitlab",
        description="Multilabel emotion detection for Italian social-media text (EMit, EVALITA 2023).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="Only warnings and results.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_data_commands(sub)
    _add_job_commands(sub)
    register_compare(sub)
    register_serve(sub)
    _add_distill_command(sub)
    _add_predict_command(sub)
    register_onnx(sub)
    return parser


def _add_distill_command(sub: argparse._SubParsersAction) -> None:
    from emitlab.settings import DistillConfig

    p = sub.add_parser("distill", help="One fast network from a run's ensemble: a student trained on the ensemble's "
                                       "out-of-fold probabilities, calibrated and exported beside model/.",
                       description="Train a student on RUN_DIR's ensemble: its targets are gold labels mixed with "
                                   "the teacher's out-of-fold probabilities (no text's target comes from a model "
                                   "that saw it), plus unlabelled transfer texts with the teacher's zero-shot "
                                   "probabilities. A held-out tenth chooses its epoch and calibrates it (with the "
                                   "run's TF-IDF and lexicon members beside it at the teacher's weights: "
                                   "--keep-members); the test file chooses nothing. Writes RUN_DIR/student (+ .zip) "
                                   "and distill.json.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="A finished run folder of `emitlab run` (cross-fitted).")
    p.add_argument("--data", default=None,
                   help="The run's data folder, where config.json's (relative) path no longer points at it.")
    add_dataclass_arguments(p, DistillConfig)
    p.set_defaults(func=cmd_distill)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    from emitlab.settings import DataConfig

    data = sub.add_parser("data", help="Check or describe a dataset.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    stats = data_sub.add_parser("stats",
                                help="Label prevalence, co-occurrence, labels per text, lengths: table and PNG.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(stats, DataConfig)
    stats.add_argument("--png", default="emit_stats.png", help="Where to write the figure (default: emit_stats.png).")
    stats.add_argument("--json", default="", help="Also write the statistics as JSON here.")
    stats.set_defaults(func=cmd_data_stats)
    validate = data_sub.add_parser("validate",
                                   help="Load and validate a dataset; report problems by file, row and column.",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(validate, DataConfig)
    validate.add_argument("--json", default="", help="Also write the report (sets, notes, duplicate texts) as JSON.")
    validate.set_defaults(func=cmd_data_validate)
    data.set_defaults(func=lambda a: (data.print_help(), 1)[1])


def _jobs() -> list[tuple[str, str, tuple, Any, bool]]:
    """``(command, help, settings groups, function, resumable)`` of the three jobs."""
    from emitlab.settings import (
        CalibrationConfig,
        CleaningConfig,
        DataConfig,
        EnsembleConfig,
        LexiconConfig,
        RunConfig,
        TfidfConfig,
        TrainConfig,
    )

    return [
        ("baseline", "TF-IDF word+char n-grams with balanced logistic regression, cross-fitted (--folds); "
                     "calibrate, evaluate, submit.",
         (RunConfig, DataConfig, CleaningConfig, TfidfConfig, CalibrationConfig), cmd_baseline, False),
        ("train", "Fine-tune a transformer encoder (default me5-small; 90/10 split unless --folds K); calibrate, "
                  "evaluate, submit, export.",
         (RunConfig, DataConfig, CleaningConfig, TrainConfig, CalibrationConfig), cmd_train, True),
        ("run", "The main job: stats, cross-fitted members (TF-IDF, lexicon, transformer), nested choice of the "
                "combination and calibration, evaluation, submissions, export and an HTML report.",
         (RunConfig, DataConfig, CleaningConfig, TfidfConfig, LexiconConfig, TrainConfig, CalibrationConfig,
          EnsembleConfig), cmd_run, True),
    ]


def _add_job_commands(sub: argparse._SubParsersAction) -> None:
    for command, help_text, groups, func, resumable in _jobs():
        p = sub.add_parser(command, help=help_text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        for cls in groups:
            add_dataclass_arguments(p, cls)
        _run_options(p, command)
        if command == "baseline":
            p.add_argument("--export", action="store_true", help="Also export the model (run/model + .zip).")
        if resumable:
            p.add_argument("--resume", action="store_true",
                           help="Continue an interrupted run in --out from its last checkpoint.")
        p.set_defaults(func=func)


def _add_predict_command(sub: argparse._SubParsersAction) -> None:
    from emitlab.registry import BACKENDS

    pred = sub.add_parser("predict", help="Per-label probabilities and labels from an exported model (folder or .zip).",
                          description="Predict with the whole exported ensemble. A file --input is read and written in "
                                      "chunks (memory stays bounded) and can be resumed; --engine ray runs the same "
                                      "model on Ray Data over many files.")
    pred.add_argument("--model", required=True, help="Export folder or its .zip (runs/<run>/model).")
    pred.add_argument("texts", nargs="*", help="Texts to classify; without them, --input or one text per stdin line.")
    pred.add_argument("--input", action="append", default=None, metavar="FILE",
                      help="CSV/JSONL/Parquet file with a text column (and optionally id; else ids are row numbers). "
                           "With --engine ray: files, folders or globs, repeatable, with an id column.")
    pred.add_argument("--text-col", default="text", help="Text column of --input (default: text).")
    pred.add_argument("--output", default="", help="Write here instead of stdout (.csv gives CSV, .parquet Parquet); "
                                                   "with --engine ray, a folder of Parquet files.")
    pred.add_argument("--format", choices=["jsonl", "csv", "parquet"], default=None,
                      help="Output format (default: jsonl, or from the --output suffix: .csv, .parquet).")
    pred.add_argument("--batch-size", type=int, default=64, help="Texts per batch (sorted by length to cut padding).")
    pred.add_argument("--chunk-size", type=int, default=2048,
                      help="Rows read, predicted and written at a time (default: 2048); with --engine ray, rows per "
                           "batch handed to an actor.")
    pred.add_argument("--resume", action="store_true",
                      help="Continue an interrupted predict into --output where it stopped (<output>.progress.json).")
    pred.add_argument("--overwrite", action="store_true", help="Replace an existing --output.")
    pred.add_argument("--device", default=None, help="cpu, cuda or mps (default: cpu).")
    pred.add_argument("--backend", choices=BACKENDS.choices, default=None,
                      help="torch (default; onnx with --engine ray), or onnxruntime on CPU: onnx (fp32) or onnx-int8 "
                           "(quantised); the ONNX file is exported into the model folder first if missing "
                           "(see export-onnx).")
    pred.add_argument("--domain", default=None,
                      help="For an export trained with --domain-marker: predict as texts of this domain (twitter, "
                           "its default, like EMit; youtube, like the out-of-domain file and MultiEmotions-It).")
    ray_opts = pred.add_argument_group("Ray Data (pip install 'emitlab[ray]')")
    ray_opts.add_argument("--engine", choices=["local", "ray"], default="local",
                          help="local: this process (default); ray: Ray Data actors, each loading the model once.")
    ray_opts.add_argument("--ray-actors", type=int, default=None,
                          help="Actors (one CPU each; default: the local cores, or the cluster's CPUs minus one).")
    ray_opts.add_argument("--ray-address", default=None,
                          help="Join this Ray cluster (e.g. auto, or ray://head:10001) "
                               "instead of starting a local one.")
    pred.set_defaults(func=cmd_predict)


def main(argv: list[str] | None = None) -> int:
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
    restore_bars = _hide_hf_progress_bars() if args.quiet else None
    try:
        return int(args.func(args) or 0)
    except UserError as exc:  # only these: anything else is a bug and keeps its traceback
        if os.environ.get("EMITLAB_DEBUG"):
            raise
        print(f"emitlab: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emitlab: interrupted", file=sys.stderr)
        return 130
    finally:  # main() may be called again in the same process (tests, notebooks)
        logging.getLogger().removeHandler(console)
        if restore_bars is not None:
            restore_bars()


def _hide_hf_progress_bars():
    """``-q``: no Hugging Face progress bars (transformers draws a "Loading weights" bar for every
    network it loads). Returns the function that puts them back as they were."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hub_was_off = are_progress_bars_disabled()
    hf_logging = sys.modules.get("transformers.utils.logging")  # read by transformers once, at its import
    transformers_was_on = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    disable_progress_bars()
    if hf_logging is not None:
        hf_logging.disable_progress_bar()

    def restore() -> None:
        logging_module = sys.modules.get("transformers.utils.logging")
        if logging_module is not None:  # imported before (its switch as it was) or during (as the hub's was)
            on = transformers_was_on if hf_logging is not None else not hub_was_off
            (logging_module.enable_progress_bar if on else logging_module.disable_progress_bar)()
        (disable_progress_bars if hub_was_off else enable_progress_bars)()  # last: the calls above set it too

    return restore


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
