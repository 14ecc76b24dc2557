"""The main job, ``emitlab run``: stats -> split -> baseline -> fine-tuning -> calibration ->
evaluation -> ensemble -> submissions -> export -> report, in one run folder."""

from __future__ import annotations

import logging
import time

import numpy as np

from .calibration import calibrate
from .data.cleaning import TextCleaner
from .data.loading import EmitData, TextDataset
from .pipeline import ScoredModel, score_model, write_submissions
from .runs import RunDir
from .settings import BaselineConfig, CalibrationConfig, RunConfig, TrainConfig

log = logging.getLogger("emitlab")

#: Settings a profile puts in place of the defaults (a config file and flags still win).
PROFILES: dict[str, dict[str, dict]] = {
    "full": {},
    "quick": {"train": {"max_steps": 60, "max_length": 64, "eval_steps": 60, "early_stopping_patience": 0,
                        "logging_steps": 10, "warmup_ratio": 0.1, "learning_rate": 2e-4}},
}


def fit_baseline(cfg: BaselineConfig, train: TextDataset, val: TextDataset, sets: dict[str, TextDataset],
                 clean: TextCleaner):
    from .models.baseline import TfidfBaseline

    model = TfidfBaseline(cfg).fit(clean.clean_many(train.texts), train.labels)
    p_val = model.predict_proba(clean.clean_many(val.texts))
    probs = {name: model.predict_proba(clean.clean_many(ds.texts)) for name, ds in sets.items()}
    return model, p_val, probs


def choose_ensemble_weight(y_val: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, label_names: list[str],
                           cal: CalibrationConfig, step: float = 0.1) -> tuple[float, dict]:
    """Weight ``w`` on ``p_b`` in ``(1 - w) p_a + w p_b`` with the best held-out validation
    macro-F1 after calibration (the same honest criterion calibration itself uses)."""
    weights = np.round(np.arange(0.0, 1.0 + 1e-9, step), 2)
    scores = []
    for w in weights:
        rep = calibrate(y_val, (1 - w) * p_a + w * p_b, label_names, cal.thresholds, cal.structure, cal.repeats)
        scores.append(rep.selection_score)
    best = int(np.argmax(scores))
    return float(weights[best]), {"weights": weights.tolist(), "validation_heldout_macro_f1": scores}


def run_all(data: EmitData, train: TextDataset, val: TextDataset, clean: TextCleaner, run: RunDir, cfgs: dict,
            seed: int, resume: bool = False) -> dict:
    from .data.stats import compute_stats, plot_stats

    run_cfg: RunConfig = cfgs[RunConfig]
    cal: CalibrationConfig = cfgs[CalibrationConfig]
    tcfg: TrainConfig = cfgs[TrainConfig]
    sets = data.prediction_sets
    timings: dict[str, float] = {}
    scored: dict[str, ScoredModel] = {}

    t = time.time()
    stats = [compute_stats(ds.texts, ds.labels, ds.label_names, name=name)
             for name, ds in (("train", data.train), ("test", data.test)) if ds is not None and ds.labels is not None]
    run.write_json("data_stats.json", [s.to_dict() | {"word_lengths": s.word_lengths.tolist()} for s in stats])
    plot_stats(stats, run / "data_stats.png")
    run.write_json("validation_texts.json", [{"id": i, "text": x} for i, x in zip(val.ids, val.texts)])
    timings["stats"] = time.time() - t

    log.info("[1/4] baseline: TF-IDF + logistic regression")
    t = time.time()
    base_model, p_val, probs = fit_baseline(cfgs[BaselineConfig], train, val, sets, clean)
    base_model.save(run / "baseline.joblib")
    scored["baseline"] = score_model("baseline", data.label_names, p_val, val.labels, sets, probs, cal)
    timings["baseline"] = time.time() - t

    trained = None
    if run_cfg.transformer:
        from .training import train_transformer

        log.info("[2/4] fine-tuning %s", tcfg.model)
        t = time.time()
        trained = train_transformer(tcfg, train, val, sets, clean, run, seed, resume=resume)
        scored["transformer"] = score_model("transformer", data.label_names, trained.p_val, val.labels, sets,
                                            trained.probs, cal)
        timings["transformer"] = time.time() - t

        log.info("[3/4] ensemble weight and calibration on validation")
        t = time.time()
        w, curve = choose_ensemble_weight(val.labels, scored["baseline"].p_val, trained.p_val, data.label_names, cal)
        run.write_json("ensemble_weights.json", {"chosen_weight_on_transformer": w, **curve})
        mix = {name: (1 - w) * scored["baseline"].probs[name] + w * trained.probs[name] for name in sets}
        scored["ensemble"] = score_model("ensemble", data.label_names, (1 - w) * scored["baseline"].p_val + w * trained.p_val,
                                         val.labels, sets, mix, cal)
        scored["ensemble"].metrics["weight_on_transformer"] = w
        timings["calibration"] = time.time() - t

    best = max(scored, key=lambda m: scored[m].calibration.selection_score)
    for name, s in scored.items():
        write_submissions(run, s, sets, data.task, prefix=f"{name}_")
    write_submissions(run, scored[best], sets, data.task)
    _save_predictions(run, val, sets, scored)

    export_info = None
    if trained is not None:
        log.info("[4/4] export")
        t = time.time()
        export_info = export_best(run, data, scored, best, trained, clean, tcfg, val)
        timings["export"] = time.time() - t

    metrics = {
        "task": data.task,
        "label_names": data.label_names,
        "models": {name: s.metrics for name, s in scored.items()},
        "best_model": best,
        "training": trained.stats if trained else None,
        "export": export_info,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    run.write_json("metrics.json", metrics)
    if run_cfg.report:
        from .report import write_report

        t = time.time()
        write_report(run.path)
        metrics["timings_s"]["report"] = round(time.time() - t, 1)
    metrics["timings_s"]["total"] = round(time.time() - run.started, 1)
    run.write_json("metrics.json", metrics)
    return metrics


def _save_predictions(run: RunDir, val: TextDataset, sets: dict[str, TextDataset], scored: dict[str, ScoredModel]) -> None:
    arrays = {"y_validation": val.labels}
    for name, ds in sets.items():
        if ds.labels is not None:
            arrays[f"y_{name}"] = ds.labels
    for model, s in scored.items():
        arrays[f"{model}_validation"] = s.p_val
        for name, p in s.probs.items():
            arrays[f"{model}_{name}"] = p
    np.savez_compressed(run / "predictions.npz", **arrays)


def export_best(run: RunDir, data: EmitData, scored: dict[str, ScoredModel], best: str, trained, clean: TextCleaner,
                tcfg: TrainConfig, val: TextDataset) -> dict:
    """Export the transformer; when the ensemble is best, the export carries the baseline and
    the weight too, so that the exported model predicts what the report shows."""
    chosen = scored[best] if best in ("transformer", "ensemble") else scored["transformer"]
    return export_model(run, data, chosen, trained, clean, tcfg, val)


def export_model(run: RunDir, data: EmitData, chosen: ScoredModel, trained, clean: TextCleaner, tcfg: TrainConfig,
                 val: TextDataset) -> dict:
    """Write ``run/model`` (+ .zip) for ``chosen`` (the transformer, or the ensemble with the
    run's baseline), reload it and record how far its validation probabilities drift."""
    from .inference import EmotionClassifier, export_meta, write_export

    extra = {}
    ensemble = None
    if chosen.name == "ensemble":
        ensemble = {"baseline_file": "baseline.joblib", "weight_on_transformer": chosen.metrics["weight_on_transformer"]}
        extra["baseline.joblib"] = run / "baseline.joblib"
    meta = export_meta(data.task, data.label_names, chosen, clean, trained.input_prefix, tcfg, trained.stats)
    if ensemble:
        meta["ensemble"] = ensemble
    path = write_export(run / "model", trained.model, trained.tokenizer, meta, extra_files=extra)
    reloaded = EmotionClassifier.from_pretrained(path)
    diff = float(np.abs(reloaded.predict_proba(val.texts, tcfg.eval_batch_size) - chosen.p_val).max())
    log.info("exported %s as %s (+ .zip); reloaded validation probabilities differ by at most %.2e", chosen.name, path, diff)
    return {"path": str(path), "model": chosen.name, "reload_max_abs_diff": diff}


def summary_table(metrics: dict) -> str:
    """The one-screen summary printed at the end of ``emitlab run``."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"EMit task {metrics['task']}: macro-F1 (raw @0.5 -> calibrated)")
    table.add_column("model")
    table.add_column("validation")
    has_test = any("test" in m for m in metrics["models"].values())
    if has_test:
        table.add_column("test")
    table.add_column("decoding")
    for name, m in metrics["models"].items():
        row = [name + (" *" if name == metrics["best_model"] else ""),
               f"{m['validation']['raw']['macro_f1']:.4f} -> {m['validation']['macro_f1']:.4f}"]
        if has_test:
            row.append(f"{m['test']['raw']['macro_f1']:.4f} -> {m['test']['macro_f1']:.4f}" if "test" in m else "-")
        row.append(m["calibration"]["chosen"] + (f", w={m['weight_on_transformer']}" if "weight_on_transformer" in m else ""))
        table.add_row(*row)
    buf = StringIO()
    Console(file=buf, width=110, color_system=None).print(table)
    lines = [buf.getvalue().rstrip(), "* best on validation (held-out halves); its predictions are the official submissions"]
    tr = metrics.get("training")
    if tr:
        lines.append(f"training: {tr['train_seconds']:.0f} s, {tr['train_examples_per_second']} examples/s, "
                     f"{tr['global_steps']} steps on {tr['device']}")
    if metrics.get("export"):
        lines.append(f"export: {metrics['export']['path']} ({metrics['export']['model']}; reload diff "
                     f"{metrics['export']['reload_max_abs_diff']:.1e})")
    lines.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in metrics["timings_s"].items()))
    return "\n".join(lines)
