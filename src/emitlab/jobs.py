"""The jobs behind ``emitlab baseline``, ``emitlab train`` and ``emitlab run``: one engine.

    data -> folds -> members (cross-fitted) -> combiner + calibration (nested, out-of-fold)
         -> evaluation -> submissions -> export (+ reload check) -> report

``baseline`` is the engine with the TF-IDF member alone, ``train`` with the transformer alone
(90/10 split by default, so that the best epoch is chosen on validation), ``run`` with every
member. All write the same ``metrics.json`` schema (see :func:`run_engine`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emitlab.data.augment import rare_label_mask
from emitlab.data.cleaning import TextCleaner
from emitlab.data.duplicates import loose_key
from emitlab.data.extra import (
    ADAPTERS,
    OOD_DOMAIN,
    PROXY_CORPUS,
    PROXY_FILE,
    TASK_DOMAIN,
    ExtraCorpus,
    domain_marker,
    drop_evaluation_duplicates,
    extra_data_dir,
    load_extra,
    restrict_labels,
    sample_rows,
)
from emitlab.data.loading import EmitData, TextDataset, label_warnings, load_emit, load_table
from emitlab.devices import check_processes_fit_devices, pick_device
from emitlab.engine.crossfit import (
    FOLD_FILE,
    CrossFitted,
    FoldPlan,
    crossfit,
    fit_fold,
    kfold_plan,
    split_plan,
    with_extra_rows,
)
from emitlab.engine.evaluation import evaluate_decoded, write_submission
from emitlab.errors import DataError, DiskSpaceError, SettingsError
from emitlab.labels import labels_for_task
from emitlab.members import FoldContext
from emitlab.registry import MEMBERS
from emitlab.runs import RunDir
from emitlab.settings import (
    DATA_ENV,
    CalibrationConfig,
    CleaningConfig,
    DataConfig,
    EnsembleConfig,
    RunConfig,
    TrainConfig,
)

log = logging.getLogger("emitlab")

METRICS_SCHEMA = 2


# --------------------------------------------------------------------------------------
# Data


def load_data(cfg: DataConfig) -> EmitData:
    """Load what ``cfg`` points at (a single file becomes an EmitData with train and test), with
    the ``--extra-data`` corpora and the out-of-domain proxy corpus."""
    data = _load_task_data(cfg)
    folder = extra_data_dir(cfg.extra_data_dir)
    data.extra = [load_extra(spec, folder, data.label_names) for spec in cfg.extra_data]
    if cfg.extra_data_labels:
        keep = rare_label_mask(data.train.labels, data.label_names, cfg.extra_data_labels, what="--extra-data-labels")
        used = [restrict_labels(c, keep) for c in data.extra]
        data.extra = [u for u, _ in used]
        data.proxy_untrained = next((left for u, left in used if u.is_proxy and len(left)), None)
    # the proxy stays whole: each of its rows gets its out-of-fold prediction
    data.extra = [c if c.is_proxy else sample_rows(c, cfg.extra_data_rows, cfg.seed) for c in data.extra]
    names = [c.name for c in data.extra]
    if len(set(names)) < len(names):
        raise SettingsError(f"--extra-data names a corpus twice: {', '.join(cfg.extra_data)}")
    proxy_file = folder / PROXY_FILE
    if (cfg.ood_proxy == "auto" and data.task == "A" and PROXY_CORPUS not in names and proxy_file.is_file()):
        data.proxy = ADAPTERS[PROXY_CORPUS](folder)
    return data


def _load_task_data(cfg: DataConfig) -> EmitData:
    source = cfg.data or os.environ.get(DATA_ENV, "")
    if not source:
        raise DataError(f"no data given: pass --data DIR (or a file / hf:<id>) or set ${DATA_ENV}")
    path = Path(source)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        label_cols = cfg.label_cols or labels_for_task(cfg.task)
        kwargs = dict(text_col=cfg.text_col, id_col=cfg.id_col or None,
                      label_cols=None if cfg.label_list_col else label_cols,
                      label_list_col=cfg.label_list_col or None)
        train = load_table(path, **kwargs)
        data = EmitData(task=cfg.task, label_names=train.label_names, train=train)
        if cfg.test_file:
            data.test = load_table(cfg.test_file, **kwargs, label_names=train.label_names)
        data.warnings = label_warnings(train) + (label_warnings(data.test) if data.test else [])
        return data
    return load_emit(source, cfg.task, cfg.zip_password or None)


@dataclass
class TrainingRows:
    """What the members train on: the task's ``n`` training rows, then the extra corpora's, all
    cleaned; ``mask`` and ``sample_weight`` are None without extra corpora; ``proxy`` holds the
    positions (>= n) of the out-of-domain proxy corpus' rows (empty when it does not train)."""

    texts: list[str]
    labels: np.ndarray
    n: int
    mask: np.ndarray | None = None
    sample_weight: np.ndarray | None = None
    proxy: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def training_rows(data: EmitData, texts: list[str], cleaner: TextCleaner, markers: bool = False) -> TrainingRows:
    """The task's cleaned ``texts`` and labels, then every extra corpus without the texts equal to
    an evaluation text (``data.extra`` and ``data.proxy`` are replaced by what is kept; the counts
    go to the log and each corpus' ``dropped``). With ``markers`` every text starts with its
    domain's marker (:func:`~emitlab.data.extra.domain_marker`)."""
    y = data.train.labels
    evaluation = {name: ds.texts for name, ds in data.prediction_sets.items()}

    def key(text: str) -> str:
        return loose_key(text, cleaner)

    data.extra = [_dedup(c, evaluation, key) for c in data.extra]
    if data.proxy is not None:
        data.proxy = _dedup(data.proxy, evaluation, key)
    if data.proxy_untrained is not None:
        data.proxy_untrained = drop_evaluation_duplicates(data.proxy_untrained, evaluation, key)
    if markers:
        texts = with_marker(texts, TASK_DOMAIN)
    if not data.extra:
        return TrainingRows(texts, y, len(texts))
    rows, offset, proxy = [texts], len(texts), []
    for c in data.extra:
        rows.append(with_marker(cleaner.clean_many(c.texts), c.domain if markers else None))
        if c.is_proxy:
            proxy.append(offset + np.arange(len(c)))
        offset += len(c)
    ones = np.ones_like(y, dtype=bool)
    return TrainingRows(
        texts=[t for block in rows for t in block],
        labels=np.concatenate([y] + [c.labels for c in data.extra]),
        n=len(texts),
        mask=np.concatenate([ones] + [c.mask for c in data.extra]),
        sample_weight=np.concatenate([np.ones(len(y))] + [np.full(len(c), c.weight) for c in data.extra]),
        proxy=np.concatenate(proxy) if proxy else np.zeros(0, dtype=np.int64))


def with_marker(texts: list[str], domain: str | None) -> list[str]:
    """``texts`` (cleaned) with ``domain``'s marker in front; unchanged for ``None``."""
    return texts if domain is None else [domain_marker(domain) + t for t in texts]


#: the domain of each prediction set, with --domain-marker
SET_DOMAINS = {"test": TASK_DOMAIN, "ood": OOD_DOMAIN}


def _dedup(corpus: ExtraCorpus, evaluation: dict[str, list[str]], key) -> ExtraCorpus:
    kept = drop_evaluation_duplicates(corpus, evaluation, key)
    counts = ", ".join(f"{n} equal to {s} texts" for s, n in kept.dropped.items())
    log.info("extra corpus %s: %d rows (weight %g)%s%s%s", kept.name, len(kept), kept.weight,
             f", a sample of {kept.sampled_from} (--extra-data-rows)" if kept.sampled_from else "",
             f"; dropped {counts}" if counts else "",
             f"; masked labels: {', '.join(kept.summary()['masked_labels'])}" if not kept.mask.all() else "")
    return kept


def fold_plans(data: EmitData, cfgs: dict, run: RunDir, members: list[str],
               train: TrainingRows | None = None) -> dict[str, FoldPlan]:
    """The folds (saved in ``folds.json``): ``"default"`` for the cheap members and, with a
    transformer member, ``"transformer"`` (its own K, as each fold is a fine-tuning). With extra
    corpora (``train``), their rows are appended to every plan: they train in every fold, but
    the proxy corpus' rows get folds of their own (stratified, the same seed and K), so that
    each gets one out-of-fold prediction (one validation split in the 90/10 mode)."""
    from emitlab.data.split import kfold_indices, stratified_split

    run_cfg: RunConfig = cfgs[RunConfig]
    dcfg: DataConfig = cfgs[DataConfig]
    y = data.train.labels
    n = len(data.train)
    if run_cfg.folds <= 1:
        tr, va = stratified_split(y, dcfg.val_fraction, dcfg.seed, source=data.train.source)
        plans = {"default": split_plan(tr, va, n, dcfg.seed)}
        if network_members(members):
            plans[NETWORK_PLAN] = plans["default"]
    else:
        plans = {"default": kfold_plan(y, run_cfg.folds, dcfg.seed, data.train.source)}
        k_tr = run_cfg.transformer_folds or run_cfg.folds
        if network_members(members):
            plans[NETWORK_PLAN] = plans["default"] if k_tr == run_cfg.folds else \
                kfold_plan(y, k_tr, dcfg.seed, data.train.source)
    if train is not None and len(train.texts) > n:
        y_proxy = train.labels[train.proxy]
        extra_plans: dict[int, FoldPlan] = {}
        for name, p in plans.items():
            if p.k not in extra_plans:
                fold_of = np.full(len(train.texts) - n, -1, dtype=np.int64)
                if len(train.proxy) and p.k == 1:
                    _, va = stratified_split(y_proxy, dcfg.val_fraction, dcfg.seed, source=PROXY_CORPUS)
                    fold_of[train.proxy[va] - n] = 0
                elif len(train.proxy):
                    for i, (_, va) in enumerate(kfold_indices(y_proxy, p.k, dcfg.seed, source=PROXY_CORPUS)):
                        fold_of[train.proxy[va] - n] = i
                extra_plans[p.k] = with_extra_rows(p, fold_of)
            plans[name] = extra_plans[p.k]
    run.write_json("folds.json", {"ids": data.train.ids, **{name: p.to_dict() for name, p in plans.items()}})
    return plans


# --------------------------------------------------------------------------------------
# Members


#: The fold plan (in ``folds.json``) of the members that fine-tune a network (``network = True``):
#: its own K, ``--transformer-folds``, as each fold is a fine-tuning.
NETWORK_PLAN = "transformer"


def network_members(members: list[str]) -> list[str]:
    """The members of ``members`` whose registered class fine-tunes a network."""
    return [m for m in members if getattr(MEMBERS.get(m), "network", False)]


def plan_name(member: str) -> str:
    return NETWORK_PLAN if network_members([member]) else "default"


def member_factory(name: str, cfgs: dict, run: RunDir, plan: FoldPlan, texts: list[str], y: np.ndarray,
                   resume: bool):
    """``fold -> Member`` for ``name``: its registered class's ``for_fold``, with the run's settings."""
    cls = MEMBERS.get(name)
    context = FoldContext(configs=cfgs, workdir=run.path / "work" / name, texts=texts, labels=y, folds=plan.folds,
                          n_task_rows=plan.n, seed=cfgs[DataConfig].seed, resume=resume,
                          select_on_held=plan.k == 1)
    return lambda i: cls.for_fold(context, i)


def check_disk_space(run: RunDir, cfg: TrainConfig, plan: FoldPlan, export: bool, resume: bool,
                     member: str = NETWORK_PLAN) -> None:
    """Refuse a run whose transformer folds cannot fit on the run folder's disk, before minutes
    of training rather than at the export; warn when only the training checkpoints may not fit.

    A fold folder is about the size of the base model's folder (fp32 weights + tokenizer). Each
    fold still to train writes one into ``members/`` (the export hard-links it), and ``model.zip``
    holds every fold once more; while a fold trains, up to ``save_total_limit`` checkpoints of
    about three times the weights (weights and Adam's two moments) lie in ``work/``. Skipped for a
    Hub id (its size is not known before the download)."""
    from emitlab.members.transformer.model import resolve_model_source

    try:
        source = resolve_model_source(cfg.model)
    except Exception:  # noqa: BLE001 - the first fold reports a model that cannot load, with its reason
        return
    if not Path(source).is_dir():
        return
    files = [f for f in Path(source).rglob("*") if f.is_file()]
    fold_bytes = sum(f.stat().st_size for f in files)
    weight_bytes = sum(f.stat().st_size for f in files if f.suffix in (".safetensors", ".bin"))
    todo = sum(not (resume and (run / "members" / member / f"fold-{i}" / FOLD_FILE).is_file())
               for i in range(plan.k))
    need = fold_bytes * (todo + (plan.k if export else 0))
    checkpoints = 3 * weight_bytes * cfg.save_total_limit
    free = shutil.disk_usage(run.path).free
    gib = 2**30
    zipped = f" and model.zip with all {plan.k}" if export else ""
    detail = f"{todo} transformer fold folder(s) to write{zipped}, about {fold_bytes / gib:.2f} GiB each"
    if free < need:
        raise DiskSpaceError(
            f"{run.path}: {free / gib:.1f} GiB free on its disk, but this run writes about {need / gib:.1f} GiB "
            f"({detail}). Free some space, put --out on a larger disk, or use fewer --transformer-folds.")
    if free < need + checkpoints:
        log.warning("%s: %.1f GiB free; the run needs about %.1f GiB (%s) plus up to %.1f GiB of training "
                    "checkpoints while a fold trains (--save-total-limit %d): it may run out of disk",
                    run.path, free / gib, need / gib, detail, checkpoints / gib, cfg.save_total_limit)


# --------------------------------------------------------------------------------------
# The engine


@dataclass
class Scored:
    """A candidate (a member alone or a combiner) with its decoder and every set's probabilities."""

    name: str
    combiner: Any
    calibration: Any
    oof: np.ndarray
    probs: dict[str, np.ndarray]
    metrics: dict = field(default_factory=dict)


def run_engine(data: EmitData, cfgs: dict, run: RunDir, members: list[str], resume: bool = False,
               export: bool = True, report: bool = True, stats: bool = True) -> dict:
    """Cross-fit ``members``, choose the combination, evaluate, write submissions, export.

    ``metrics.json`` (schema 2) holds: ``task``, ``label_names``, ``selection`` (which rows the
    choices were made on), ``members`` (per member: folds, seconds, training info), ``models``
    (per candidate: ``validation`` = its out-of-fold metrics, ``test`` where gold exists,
    ``calibration``, ``nested_macro_f1``), ``best_model``, ``ensemble`` (the choice), ``export``
    and ``timings_s``.
    """
    from emitlab.engine.ensemble import choose_combiner

    t_start = time.time()
    timings: dict[str, float] = {}
    cleaner = TextCleaner(cfgs[CleaningConfig])
    if data.train.labels is None:
        raise DataError(f"{data.train.source}: the training file has no labels")
    if network_members(members):  # before minutes of cheap members, not at the first network fold
        check_processes_fit_devices(pick_device(cfgs[TrainConfig].device))
    if not getattr(run, "is_main", True):
        return _replica_engine(data, cfgs, run, members, resume, cleaner)

    if stats:
        _write_stats(data, run)
    t = time.time()
    train, set_texts = _cleaned_texts(data, cleaner, cfgs[DataConfig].domain_marker)
    timings["cleaning"] = time.time() - t
    plans = fold_plans(data, cfgs, run, members, train)
    rows = plans["default"].rows
    for name, p in plans.items():
        if not np.array_equal(p.rows, rows):  # pragma: no cover - both cover every row or the same split
            raise RuntimeError(f"fold plan {name!r} holds out different rows")
    _before_networks(run, cfgs, members, plans, export, resume)
    fitted = _fit_members(run, cfgs, members, plans, train, set_texts, data.label_names, resume, timings)

    log.info("combination: nested choice over %d out-of-fold rows", len(rows))
    t = time.time()
    choice, all_fitted = choose_combiner(members, [fitted[m].oof for m in members], train.labels[rows],
                                          list(data.label_names), cfgs[CalibrationConfig], cfgs[EnsembleConfig],
                                          seed=cfgs[DataConfig].seed)
    timings["combination"] = time.time() - t
    proxy, proxy_probs = _proxy_scoring(data, plans["default"], train)
    scored = _score(data, members, fitted, choice, all_fitted, train.labels[rows], proxy, proxy_probs)

    for name, s in scored.items():
        _write_submissions(run, s, data.prediction_sets, data.task, prefix=f"{name}_")
    _write_submissions(run, scored[choice.name], data.prediction_sets, data.task)
    _save_predictions(run, data, rows, fitted, scored, data.prediction_sets, proxy, proxy_probs)

    metrics = _metrics(data, cfgs, members, plans, fitted, scored, choice, proxy)
    if export:
        t = time.time()
        metrics["export"] = export_run(run, data, cfgs, members, fitted, scored[choice.name], set_texts)
        timings["export"] = time.time() - t
    metrics["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    metrics["timings_s"]["total"] = round(time.time() - t_start, 1)
    run.write_json("metrics.json", metrics)
    _write_training_logs(run, fitted)
    if report:
        from emitlab.report import write_report

        t = time.time()
        write_report(run.path)
        metrics["timings_s"]["report"] = round(time.time() - t, 1)
        metrics["timings_s"]["total"] = round(time.time() - t_start, 1)
        run.write_json("metrics.json", metrics)
    return metrics


def _cleaned_texts(data: EmitData, cleaner: TextCleaner, markers: bool) -> tuple[TrainingRows, dict[str, list[str]]]:
    """The training rows and every prediction set's texts, cleaned (and with their domain's marker)."""
    train = training_rows(data, cleaner.clean_many(data.train.texts), cleaner, markers)
    set_texts = {name: with_marker(cleaner.clean_many(ds.texts), SET_DOMAINS.get(name, TASK_DOMAIN) if markers
                                   else None) for name, ds in data.prediction_sets.items()}
    if data.proxy is not None:  # zero-shot: every member predicts all of it, as it does the test file
        set_texts[PROXY_SET] = with_marker(cleaner.clean_many(data.proxy.texts), OOD_DOMAIN if markers else None)
    if data.proxy_untrained is not None:  # rows of a proxy corpus that trains left out by --extra-data-labels
        set_texts[PROXY_UNTRAINED] = with_marker(cleaner.clean_many(data.proxy_untrained.texts),
                                                 data.proxy_untrained.domain if markers else None)
    return train, set_texts


def _before_networks(run: RunDir, cfgs: dict, members: list[str], plans: dict[str, FoldPlan], export: bool,
                     resume: bool) -> None:
    """Before minutes of training: the disk check of each network member, the W&B folder."""
    for name in network_members(members):
        check_disk_space(run, cfgs[TrainConfig], plans[NETWORK_PLAN], export, resume, name)
    if network_members(members) and cfgs[TrainConfig].report_to == "wandb":
        os.environ["WANDB_DIR"] = str(run.path.resolve())  # every fold's W&B run under the run folder


def _fit_members(run: RunDir, cfgs: dict, members: list[str], plans: dict[str, FoldPlan], train: TrainingRows,
                 set_texts: dict[str, list[str]], label_names, resume: bool,
                 timings: dict[str, float]) -> dict[str, CrossFitted]:
    """Cross-fit every member on its plan (cached in ``members/<name>``: a resumed run reuses it)."""
    fitted: dict[str, CrossFitted] = {}
    for i, name in enumerate(members, 1):
        plan = plans[plan_name(name)]
        log.info("[%d/%d] member %s: %d fold(s)", i, len(members), name, plan.k)
        t = time.time()
        make = member_factory(name, cfgs, run, plan, train.texts, train.labels, resume)
        fitted[name] = crossfit(name, make, train.texts, train.labels, list(label_names), plan, set_texts,
                                cache=run / "members" / name, resume=resume, mask=train.mask,
                                sample_weight=train.sample_weight,
                                use_extra=name in cfgs[RunConfig].extra_data_members)
        timings[f"member_{name}"] = time.time() - t
    return fitted


def _score(data: EmitData, members: list[str], fitted: dict[str, CrossFitted], choice, all_fitted: dict,
           y_rows: np.ndarray, proxy: dict | None, proxy_probs) -> dict[str, Scored]:
    """Every candidate's probabilities on every set and its metrics: out-of-fold (``validation``),
    each set with gold, and the out-of-domain proxy."""
    label_names = list(data.label_names)
    nested = {c.name: c for c in choice.candidates}
    scored: dict[str, Scored] = {}
    for name, (comb, report_, out) in all_fitted.items():
        probs = {s: comb.combine([fitted[m].preds[s] for m in members]) for s in data.prediction_sets}
        s = Scored(name, comb, report_, out, probs)
        s.metrics = {"model": name, "combiner": comb.to_dict(), "calibration": report_.to_dict(),
                     "nested_macro_f1": nested[name].nested_macro_f1,
                     "nested_fold_macro_f1": nested[name].nested_fold_scores,
                     "validation": evaluate_decoded(y_rows, out, report_.decoder, label_names)}
        for set_name, ds in data.prediction_sets.items():
            if ds.labels is not None:
                s.metrics[set_name] = evaluate_decoded(ds.labels, probs[set_name], report_.decoder, label_names)
        if proxy is not None:
            probs[PROXY_SET] = comb.combine([proxy_probs(fitted[m]) for m in members])
            s.metrics[PROXY_SET] = evaluate_decoded(proxy["labels"], probs[PROXY_SET], report_.decoder, label_names)
        scored[name] = s
    return scored


def _metrics(data: EmitData, cfgs: dict, members: list[str], plans: dict[str, FoldPlan],
             fitted: dict[str, CrossFitted], scored: dict[str, Scored], choice, proxy: dict | None) -> dict[str, Any]:
    """``metrics.json`` before the export and the timings (see :func:`run_engine`)."""
    rows = plans["default"].rows
    metrics: dict[str, Any] = {
        "schema": METRICS_SCHEMA,
        "task": data.task,
        "label_names": list(data.label_names),
        "selection": {"rows": "out-of-fold" if plans["default"].k > 1 else "validation split", "n": int(len(rows)),
                      "folds": {name: p.k for name, p in plans.items()}},
        "members": {name: {"folds": len(f.models), "fold_seconds": f.seconds,
                           "training": [_strip_history(i) for i in f.info] if any(f.info) else None}
                    for name, f in fitted.items()},
        "models": {name: s.metrics for name, s in scored.items()},
        "best_model": choice.name,
        "ensemble": choice.to_dict(),
    }
    if data.extra:
        metrics["extra_data"] = {"corpora": [c.summary() for c in data.extra],
                                 "members": [m for m in members if m in cfgs[RunConfig].extra_data_members]}
    if proxy is not None:
        metrics["ood_proxy"] = {k: v for k, v in proxy.items() if k != "labels"}
    return metrics


#: The out-of-domain proxy's key in ``metrics.json`` (per candidate) and ``predictions.npz``.
PROXY_SET = "ood_proxy"
#: The prediction set of the proxy corpus' rows that ``--extra-data-labels`` leaves out of training.
PROXY_UNTRAINED = "ood_proxy_untrained"


def _proxy_scoring(data: EmitData, plan: FoldPlan, train: TrainingRows):
    """``(proxy, probs_of)``: what the out-of-domain proxy score is computed on, and how to get a
    cross-fitted member's probabilities for it; ``(None, None)`` without a proxy corpus.

    Out-of-fold when the proxy corpus trains (its rows held out in the plan, each predicted by fold
    models that never saw it), zero-shot otherwise (the fold-averaged prediction of all of it)."""
    if len(train.proxy):
        held = plan.extra_rows
        corpus = next(c for c in data.extra if c.is_proxy)
        gold = corpus.annotation[held - train.proxy[0]]  # its own labels, those --extra-data-labels masks too
        left = data.proxy_untrained
        info = {"corpus": corpus.name, "mode": "out-of-fold", "n": int(len(held)), "labels": gold,
                "dropped_equal_to_evaluation": corpus.dropped}
        if left is None or not len(left):
            return info, lambda f: f.oof_extra
        dropped = {k: corpus.dropped.get(k, 0) + left.dropped.get(k, 0) for k in {**corpus.dropped, **left.dropped}}
        info.update(n=int(len(held) + len(left)), n_out_of_fold=int(len(held)), n_untrained=len(left),
                    labels=np.concatenate([gold, left.annotation]), dropped_equal_to_evaluation=dropped)
        return info, lambda f: np.concatenate([f.oof_extra, f.preds[PROXY_UNTRAINED]])
    if data.proxy is not None:
        corpus = data.proxy
        info = {"corpus": corpus.name, "mode": "zero-shot", "n": len(corpus), "labels": corpus.labels,
                "dropped_equal_to_evaluation": corpus.dropped}
        return info, lambda f: f.preds[PROXY_SET]
    return None, None


def _replica_engine(data: EmitData, cfgs: dict, run: RunDir, members: list[str], resume: bool,
                    cleaner: TextCleaner) -> dict:
    """:func:`run_engine` on a rank > 0 of a multi-process launch (``accelerate launch``,
    ``torchrun``): only the transformer fits are collective, so this rank trains the same
    transformer folds as rank 0 (same cleaned texts, same fold plan, same seeds; the Trainer
    shards each batch across the ranks) and does nothing else. Rank 0 alone fits the cheap
    members, predicts, combines, evaluates and writes every file of the run folder; the fold
    models here are dropped. With ``resume``, the folds rank 0 already saved are skipped here
    too (rank 0 writes a fold's ``fold.json`` only after that fold's training, so both ranks see
    the same folds done)."""
    from emitlab.engine.crossfit import FOLD_FILE

    train = training_rows(data, cleaner.clean_many(data.train.texts), cleaner, cfgs[DataConfig].domain_marker)
    texts, y = train.texts, train.labels
    plans = fold_plans(data, cfgs, run, members, train)  # run.write_json writes nothing on this rank
    trained = 0
    for name in network_members(members):
        plan = plans[NETWORK_PLAN]
        make = member_factory(name, cfgs, run, plan, texts, y, resume)
        use_extra = name in cfgs[RunConfig].extra_data_members
        for i, (tr, _) in enumerate(plan.folds):
            if resume and (run / "members" / name / f"fold-{i}" / FOLD_FILE).is_file():
                continue
            fit_fold(make(i), texts, y, data.label_names, tr, plan.n, train.mask, train.sample_weight, use_extra)
            trained += 1
    log.info("rank %d of %d: trained %d transformer fold(s); rank 0 writes the run folder",
             run.rank, run.world_size, trained)
    return {"distributed": {"rank": run.rank, "world_size": run.world_size, "transformer_folds_trained": trained}}


def _strip_history(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "log_history"}


def _write_training_logs(run: RunDir, fitted: dict[str, CrossFitted]) -> None:
    """``trainer_log.json``: the first fold's Trainer log history (the report draws it)."""
    for f in fitted.values():
        for info in f.info:
            if info.get("log_history"):
                run.write_json("trainer_log.json", info["log_history"])
                return


def _write_stats(data: EmitData, run: RunDir) -> None:
    from emitlab.data.stats import compute_stats, plot_stats

    stats = [compute_stats(ds.texts, ds.labels, ds.label_names, name=name)
             for name, ds in (("train", data.train), ("test", data.test)) if ds is not None and ds.labels is not None]
    run.write_json("data_stats.json", [s.to_dict() | {"word_lengths": s.word_lengths.tolist()} for s in stats])
    plot_stats(stats, run / "data_stats.png")


def _write_submissions(run: RunDir, s: Scored, sets: dict[str, TextDataset], task: str, prefix: str = "") -> None:
    for set_name, ds in sets.items():
        write_submission(run / f"{prefix}submission_task-{task}_{set_name}.csv", ds.ids,
                         s.calibration.decoder.decode(s.probs[set_name]), s.calibration.decoder.label_names)


def _save_predictions(run: RunDir, data: EmitData, rows: np.ndarray, fitted: dict[str, CrossFitted],
                      scored: dict[str, Scored], sets: dict[str, TextDataset], proxy: dict | None = None,
                      proxy_probs=None) -> None:
    """``predictions.npz``: gold and probabilities of every member and candidate on the
    out-of-fold rows (``*_validation``) and every prediction set (and the out-of-domain proxy,
    ``*_ood_proxy``); ``validation_rows`` indexes the training file."""
    from emitlab.io import atomic_path

    arrays: dict[str, np.ndarray] = {"y_validation": data.train.labels[rows], "validation_rows": rows}
    if proxy is not None:
        arrays[f"y_{PROXY_SET}"] = proxy["labels"]
    for name, ds in sets.items():
        if ds.labels is not None:
            arrays[f"y_{name}"] = ds.labels
    for name, f in fitted.items():
        arrays[f"member:{name}_validation"] = f.oof
        for set_name, p in f.preds.items():
            arrays[f"member:{name}_{set_name}"] = p
        if proxy is not None:  # the rows the proxy score is computed on, in the order of y_ood_proxy
            arrays[f"member:{name}_{PROXY_SET}"] = proxy_probs(f)
    for name, s in scored.items():
        arrays[f"{name}_validation"] = s.oof
        for set_name, p in s.probs.items():
            arrays[f"{name}_{set_name}"] = p
    with atomic_path(run / "predictions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    run.write_json("validation_texts.json", [{"id": data.train.ids[i], "text": data.train.texts[i]} for i in rows])


# --------------------------------------------------------------------------------------
# Export


def export_run(run: RunDir, data: EmitData, cfgs: dict, members: list[str], fitted: dict[str, CrossFitted],
               best: Scored, set_texts: dict[str, list[str]]) -> dict:
    """Write ``run/model`` (+ .zip) holding the members the chosen combination uses, reload it
    and record how far its probabilities drift from the run's on the first prediction set (0.0 on
    the CPU; reloaded on the device the run predicted on)."""
    from emitlab.engine.ensemble import members_used, restrict_combiner
    from emitlab.export import write_export
    from emitlab.inference import EmotionClassifier

    combiner = best.combiner.to_dict()
    used = members_used(combiner, members)
    meta = {
        "task": data.task,
        "labels": list(data.label_names),
        "model_kind": best.name,
        "decoder": best.calibration.decoder.to_dict(),
        "combiner": restrict_combiner(combiner, members, used),
        "cleaning": TextCleaner(cfgs[CleaningConfig]).to_dict(),
        "metrics": {k: best.metrics[k]["macro_f1"] for k in ("validation", "test", "ood") if k in best.metrics},
        "nested_macro_f1": best.metrics.get("nested_macro_f1"),
    }
    if cfgs[DataConfig].domain_marker:  # what the classifier puts before a cleaned text, per domain
        domains = {TASK_DOMAIN, OOD_DOMAIN, *(c.domain for c in data.extra)}
        meta["domain_marker"] = {"markers": {d: domain_marker(d) for d in sorted(domains)}, "default": TASK_DOMAIN}
    folders = {name: [run / "members" / name / f"fold-{i}" for i in range(len(fitted[name].models))] for name in used}
    path = write_export(run / "model", meta, folders)
    # reload where the run predicted (a fine-tuned member predicts on its training device): the
    # check is then of the files alone, not of CPU vs GPU kernels (about 1e-7 apart)
    device = pick_device(cfgs[TrainConfig].device) if network_members(used) else "cpu"
    reloaded = EmotionClassifier.from_pretrained(path, device=device)
    check_set = next((s for s in set_texts if s in data.prediction_sets), None)  # not the proxy's
    info: dict[str, Any] = {"path": str(path), "model": best.name, "members": used, "reload_device": device}
    if check_set is not None:
        raw = data.prediction_sets[check_set].texts
        diff = float(np.abs(reloaded.predict_proba(raw) - best.probs[check_set]).max())
        info.update({"reload_checked_on": check_set, "reload_max_abs_diff": diff})
        log.info("exported %s to %s (+ .zip); reloaded %s probabilities differ by at most %.2e",
                 best.name, path, check_set, diff)
    return info


# --------------------------------------------------------------------------------------
# Summary


def summary_table(metrics: dict) -> str:
    """The one-screen summary printed at the end of a job (one line on a rank > 0 of a
    multi-process launch, whose :func:`run_engine` only trains)."""
    from io import StringIO

    if "models" not in metrics and "distributed" in metrics:
        d = metrics["distributed"]
        return (f"rank {d['rank']} of {d['world_size']}: trained {d['transformer_folds_trained']} transformer "
                "fold(s) with rank 0, which writes the run folder and prints the results")

    from rich.console import Console
    from rich.table import Table

    sel = metrics.get("selection", {})
    table = Table(title=f"EMit task {metrics['task']}: macro-F1 (raw @0.5 -> calibrated)")
    table.add_column("model")
    table.add_column("nested")
    table.add_column(sel.get("rows", "validation"))
    has_test = any("test" in m for m in metrics["models"].values())
    if has_test:
        table.add_column("test")
    proxy = metrics.get("ood_proxy")
    if proxy:
        table.add_column(f"OOD proxy ({proxy['mode']})")
    table.add_column("decoding")
    for name, m in metrics["models"].items():
        row = [name + (" *" if name == metrics["best_model"] else ""), f"{m.get('nested_macro_f1', float('nan')):.4f}",
               f"{m['validation']['raw']['macro_f1']:.4f} -> {m['validation']['macro_f1']:.4f}"]
        if has_test:
            row.append(f"{m['test']['raw']['macro_f1']:.4f} -> {m['test']['macro_f1']:.4f}" if "test" in m else "-")
        if proxy:
            row.append(f"{m[PROXY_SET]['raw']['macro_f1']:.4f} -> {m[PROXY_SET]['macro_f1']:.4f}")
        row.append(m["calibration"]["chosen"])
        table.add_row(*row)
    buf = StringIO()
    Console(file=buf, width=120, color_system=None).print(table)
    lines = [buf.getvalue().rstrip(),
             "* best nested out-of-fold macro-F1 (combiner and calibration fitted on other folds); "
             "its predictions are the official submissions"]
    if proxy:
        lines.append(f"OOD proxy: {proxy['corpus']}, {proxy['n']} rows, {proxy['mode']} (it chooses nothing)")
    comb = metrics["models"][metrics["best_model"]].get("combiner", {})
    if comb.get("kind") == "average":
        lines.append("weights: " + ", ".join(f"{m} {w:.2f}" for m, w in zip(metrics["members"], comb["weights"])))
    if metrics.get("export"):
        e = metrics["export"]
        lines.append(f"export: {e['path']} ({e['model']}; "
                     f"reload diff {e.get('reload_max_abs_diff', float('nan')):.1e})")
    lines.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in metrics["timings_s"].items()))
    return "\n".join(lines)
