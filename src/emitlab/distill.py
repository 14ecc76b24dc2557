"""``emitlab distill RUN_DIR``: one fast network from a run's ensemble (a *student*).

The student is one encoder (the run's ``--model`` unless ``--student-model``), fine-tuned on soft
targets that no text's own model made:

- for each training text, ``gold_weight`` x its gold labels + (1 - ``gold_weight``) x the teacher's
  **out-of-fold** probability (``predictions.npz``: the chosen candidate's combination of the
  members' out-of-fold predictions, each from the fold model that held that text out);
- with ``--transfer`` (default), the texts of the ``--transfer-corpora`` (default: the out-of-domain
  proxy corpus, MultiEmotions-It; also XED) *without their labels*, with the teacher's zero-shot
  probabilities as targets (the teacher never trained on them): the run's predictions of the proxy
  corpus (task A), else its export's. Never the test or out-of-domain texts (equal texts are dropped).
  When the teacher trained on the proxy corpus (``--extra-data``, the run profiles' default), its
  texts come with the run's out-of-fold predictions of them instead (each from fold models that never
  saw that text; labels unused).

Like ``emitlab train``, a stratified ``--val-fraction`` of the training texts is held out: it
chooses the student's best epoch and calibrates its thresholds and decoding rules (its gold
labels; the test file chooses nothing). With ``--keep-members`` (default ``auto``) the run's members
without a network (TF-IDF, lexicon: cheap to run) stay beside the student in its export, in the
teacher's weighted average with the student in place of the teacher's networks; the held-out tenth
calibrates that mix, and the network alone is scored beside it. The student is exported as an
ordinary emitlab model, ``RUN_DIR/student`` and ``student.zip`` beside ``model/``, so ``predict``,
``serve`` and Ray load it like any export; ``distill.json`` holds teacher and student side by side (macro-F1 per set
and per label, texts/s measured in one process, sizes), which the report and ``compare`` show.

With ``--trim-vocabulary`` (default) the exported network keeps only the vocabulary pieces its
training texts and an Italian and English word list need (:mod:`emitlab.members.transformer.vocabulary`;
me5-small: about a fifth of its 250,002 pieces): the calibration, the scores and the export all use
the trimmed network, and ``distill.json`` counts the test, out-of-domain and proxy texts that hold a
dropped piece (split into kept pieces instead).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emitlab.data.cleaning import TextCleaner
from emitlab.data.duplicates import loose_key
from emitlab.data.extra import (
    ADAPTERS,
    OOD_DOMAIN,
    PROXY_CORPUS,
    TASK_DOMAIN,
    drop_evaluation_duplicates,
    extra_data_dir,
)
from emitlab.data.loading import EmitData
from emitlab.data.split import stratified_split
from emitlab.engine.calibration import calibrate
from emitlab.engine.crossfit import FOLD_FILE
from emitlab.engine.ensemble import combiner_from_dict
from emitlab.engine.evaluation import evaluate_decoded, write_submission
from emitlab.errors import DataError, RunFolderError
from emitlab.io import atomic_write_json, to_jsonable
from emitlab.jobs import PROXY_SET, SET_DOMAINS, load_data, network_members, training_rows, with_marker
from emitlab.settings import GROUPS, CalibrationConfig, CleaningConfig, DataConfig, DistillConfig, TrainConfig

log = logging.getLogger("emitlab")

#: Where the student goes in the run folder: its export (and ``.zip``), its work folder, its record.
STUDENT_EXPORT = "student"
WORK_DIR = "distill"
RESULT_FILE = "distill.json"
#: The name under which transfer texts equal to a training text are counted as dropped.
TRAIN_SET = "train"
#: The student's name among the export's members.
STUDENT_MEMBER = "transformer"


# --------------------------------------------------------------------------------------
# What the run left


def run_settings(run: Path) -> dict[type, Any]:
    """The run's settings groups from its ``config.json`` (defaults for what it does not hold)."""
    from emitlab.settings import section_name
    from emitlab.settings_cli import read_config_file

    path = Path(run) / "config.json"
    if not path.is_file():
        raise RunFolderError(f"{run}: no config.json (not a run folder of emitlab run/train)")
    data = read_config_file(path, list(GROUPS))
    return {cls: cls(**(data.get(section_name(cls)) or {})) for cls in GROUPS}


def teacher_predictions(run: Path) -> tuple[str, dict[str, np.ndarray]]:
    """The chosen candidate's name and its arrays of ``predictions.npz``: ``validation`` (out-of-fold
    probabilities of ``validation_rows``), ``y_validation``, each prediction set's, and ``y_ood_proxy``
    (the proxy's gold) when the run scored the proxy."""
    run = Path(run)
    for name in ("metrics.json", "predictions.npz"):
        if not (run / name).is_file():
            raise RunFolderError(f"{run}: no {name} (an unfinished run? distill needs a finished one)")
    best = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["best_model"]
    with np.load(run / "predictions.npz", allow_pickle=False) as z:
        arrays = {k[len(best) + 1:]: z[k] for k in z.files if k.startswith(best + "_")}
        arrays["validation_rows"] = z["validation_rows"]
        arrays["y_validation"] = z["y_validation"]
        if f"y_{PROXY_SET}" in z.files:  # the proxy corpus' gold, in the order of its predictions
            arrays[f"y_{PROXY_SET}"] = z[f"y_{PROXY_SET}"]
    return best, arrays


def soft_targets(gold: np.ndarray, teacher_rows: np.ndarray, teacher_probs: np.ndarray,
                 gold_weight: float) -> np.ndarray:
    """``gold_weight`` x gold + (1 - ``gold_weight``) x the teacher's out-of-fold probability, for the
    rows ``teacher_rows`` that have one (all of them after cross-fitting); gold alone elsewhere (a
    90/10 run predicted only its held tenth honestly)."""
    targets = np.asarray(gold, dtype=np.float64).copy()
    rows = np.asarray(teacher_rows, dtype=np.int64)
    targets[rows] = gold_weight * targets[rows] + (1.0 - gold_weight) * np.asarray(teacher_probs, dtype=np.float64)
    return targets


def student_combination(run: Path, keep: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The student export's members and combiner when the teacher's ``keep`` members (without a
    network) stay beside the student: the teacher's weighted average (its chosen model, else the
    run's ``average_prob`` candidate; both chosen on out-of-fold rows) with its network members'
    weights summed onto the student, the kept members at their weights, any other member dropped,
    the weights renormalised. ``none`` (or nothing): the student alone; ``auto``: every member
    without a network, or the student alone where the teacher has no such average to keep."""
    alone = {"kind": "average", "space": "prob", "weights": [1.0]}
    keep = [m for m in keep if m != "none"]
    if not keep:
        return [STUDENT_MEMBER], alone
    metrics = json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8"))
    members = list(metrics.get("members", {}))
    auto = "auto" in keep
    if auto:
        keep = [m for m in members if not network_members([m])]
    wrong = [m for m in keep if m not in members or network_members([m])]
    if wrong:
        raise RunFolderError(f"{run}: --keep-members {' '.join(wrong)}: not a member of the run without a network "
                             f"(its members: {', '.join(members)})")

    def average(name: str) -> dict[str, Any] | None:
        c = (metrics["models"].get(name) or {}).get("combiner") or {}
        return c if c.get("kind") == "average" and len(c.get("weights") or []) == len(members) else None

    combiner = average(metrics["best_model"]) or average("average_prob")
    if auto and (combiner is None or not keep or
                 sum(w for m, w in zip(members, combiner["weights"]) if network_members([m])) <= 0):
        log.info("--keep-members auto: the student alone (the teacher has no weighted average giving its "
                 "networks and other members weight)")
        return [STUDENT_MEMBER], alone
    if combiner is None:
        raise RunFolderError(f"{run}: no weighted average of its members among its candidates: --keep-members "
                             "has no weights to keep")
    names: list[str] = []
    weights: list[float] = []
    for m, w in zip(members, combiner["weights"]):
        name = STUDENT_MEMBER if network_members([m]) else m
        if name != STUDENT_MEMBER and (m not in keep or w <= 0):
            continue
        if name in names:
            weights[names.index(name)] += float(w)
        else:
            names.append(name)
            weights.append(float(w))
    if STUDENT_MEMBER not in names or weights[names.index(STUDENT_MEMBER)] <= 0:
        raise RunFolderError(f"{run}: the teacher's average gives its networks no weight: the student would "
                             "stand in for nothing (distill with --keep-members none)")
    total = sum(weights)
    return names, {"kind": "average", "space": combiner.get("space", "prob"), "weights": [w / total for w in weights]}


def kept_folders(run: Path, kept: Sequence[str]) -> dict[str, list[Path]]:
    """Each kept member's fold models as the run saved them (``members/<name>/fold-<i>``)."""
    out = {}
    for name in kept:
        out[name] = sorted((f for f in (run / "members" / name).glob("fold-*") if (f / FOLD_FILE).is_file()),
                           key=lambda f: int(f.name.split("-")[1]))
        if not out[name]:
            raise RunFolderError(f"{run}: no fold models of {name} under members/{name} (a run folder copied "
                                 "without members/?): --keep-members exports them (none: the student alone)")
    return out


class StudentMix:
    """The student's probabilities combined with those the run's kept members made of the same
    texts (``predictions.npz``: out-of-fold for training rows, the fold models' mean for a
    prediction set). The student alone when nothing is kept."""

    def __init__(self, run: Path, names: list[str], combiner: dict[str, Any], n_train: int):
        self.names = names
        self.kept = [m for m in names if m != STUDENT_MEMBER]
        self.combiner = combiner_from_dict(combiner) if self.kept else None
        self.arrays: dict[str, dict[str, np.ndarray]] = {m: {} for m in self.kept}
        if not self.kept:
            return
        with np.load(Path(run) / "predictions.npz", allow_pickle=False) as z:
            rows = z["validation_rows"]
            for m in self.kept:
                oof = np.full((n_train, z[f"member:{m}_validation"].shape[1]), np.nan)
                oof[rows] = z[f"member:{m}_validation"]
                self.arrays[m][TRAIN_SET] = oof
                prefix = f"member:{m}_"
                self.arrays[m].update({k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)
                                       and k != prefix + "validation"})

    def missing(self, rows: np.ndarray) -> int:
        """How many of the training ``rows`` lack a kept member's out-of-fold prediction."""
        gaps = [np.isnan(self.arrays[m][TRAIN_SET][rows, 0]) for m in self.kept]
        return int(np.logical_or.reduce(gaps).sum()) if gaps else 0

    def has(self, set_name: str) -> bool:
        return all(set_name in self.arrays[m] for m in self.kept)

    def __call__(self, student: np.ndarray, set_name: str, rows: Any = slice(None)) -> np.ndarray:
        """Combined probabilities of the texts ``rows`` of ``set_name`` (``train`` or a prediction set)."""
        if not self.kept:
            return student
        probs = []
        for m in self.names:
            if m == STUDENT_MEMBER:
                probs.append(np.asarray(student, dtype=np.float64))
                continue
            p = self.arrays[m][set_name][rows]
            if np.isnan(p).any():
                raise RunFolderError(f"member {m} has no out-of-fold prediction of {int(np.isnan(p[:, 0]).sum())} "
                                     "held-out training texts (a 90/10 run predicts only its held tenth): "
                                     "--keep-members needs a cross-fitted run")
            probs.append(p)
        return self.combiner.combine(probs)


def transfer_rows(data: EmitData, arrays: dict[str, np.ndarray], cleaner: TextCleaner, markers: bool,
                  run: Path | None = None, extra_dir: str = "",
                  corpora: Sequence[str] = (PROXY_CORPUS,)) -> tuple[list[str], np.ndarray, str]:
    """The unlabelled transfer texts of ``corpora`` (extra corpora the teacher never trained on,
    labels unused) and the teacher's probabilities for them. For the proxy corpus (MultiEmotions-It)
    the run's zero-shot predictions when it made them (task A); otherwise the teacher's export
    (``run/model``) predicts the corpus' texts here (task B has no labels for the proxy corpus; the
    run made no predictions of XED). Texts equal to an evaluation text are dropped first, and so are
    those equal to a training text (that text already has its out-of-fold target; the teacher's
    prediction of its twin is not zero-shot). Returns the texts, the probabilities and what was used
    or skipped and why (one clause a corpus). A teacher that trained on the proxy corpus gives its
    out-of-fold predictions of it (:func:`_proxy_rows_out_of_fold`); other corpora it trained on, none."""
    texts: list[str] = []
    probs = [np.zeros((0, len(data.label_names)))]
    why: list[str] = []
    teacher = None
    trained_on = {c.name for c in data.extra}
    evaluation = {s: ds.texts for s, ds in data.prediction_sets.items()}

    def key(text: str) -> str:
        return loose_key(text, cleaner)

    seen = {**evaluation, TRAIN_SET: data.train.texts}  # an adapter's rows equal to any of these: dropped
    train_keys = {key(t) for t in data.train.texts} - {""}
    for name in dict.fromkeys(corpora):
        zero_shot = arrays.get(PROXY_SET) if name == PROXY_CORPUS else None
        if name == PROXY_CORPUS and data.proxy is not None and zero_shot is not None:
            if len(data.proxy) != len(zero_shot):
                why.append(f"{name}: {len(data.proxy)} texts now, the run predicted {len(zero_shot)}")
                continue
            keep = np.array([key(t) not in train_keys for t in data.proxy.texts], dtype=bool)
            kept = [t for t, k in zip(data.proxy.texts, keep) if k]
            texts += with_marker(cleaner.clean_many(kept), OOD_DOMAIN if markers else None)
            probs.append(np.asarray(zero_shot, dtype=np.float64)[keep])
            why.append(f"{data.proxy.name}: {len(kept)} texts ({int((~keep).sum())} equal to training texts "
                       "dropped), labels unused")
            continue
        if name in trained_on:
            held = (_proxy_rows_out_of_fold(data, run, arrays.get(f"y_{PROXY_SET}"))
                    if name == PROXY_CORPUS and zero_shot is not None else None)
            if held is None or len(held[0]) != len(zero_shot):
                why.append(f"{name}: the teacher trained on it (--extra-data), its texts cannot transfer"
                           + (" (no out-of-fold predictions of them to match)" if name == PROXY_CORPUS else ""))
                continue
            raw, domain = held
            keep = np.array([key(t) not in train_keys for t in raw], dtype=bool)
            texts += with_marker(cleaner.clean_many([t for t, k in zip(raw, keep) if k]), domain if markers else None)
            probs.append(np.asarray(zero_shot, dtype=np.float64)[keep])
            why.append(f"{name}: {int(keep.sum())} texts ({int((~keep).sum())} equal to training texts dropped) with "
                       "the teacher's out-of-fold predictions (it trained on their labels; each text predicted by "
                       "fold models that never saw it), labels unused")
            continue
        if run is None or not (run / "model").is_dir():
            why.append(f"{name}: no zero-shot predictions in this run and no export to make them")
            continue
        try:
            corpus = ADAPTERS[name](extra_data_dir(extra_dir))
        except DataError as e:
            log.warning("no transfer texts from %s: %s", name, e)
            why.append(f"{name}: {e}")
            continue
        corpus = drop_evaluation_duplicates(corpus, seen, key)
        if teacher is None:
            from emitlab.inference import EmotionClassifier

            teacher = EmotionClassifier.from_pretrained(run / "model")
            default_domain = teacher.domain
        domain = None
        if markers:  # the corpus' own domain where the teacher has learnt its marker, else its default
            domain = teacher.domain = corpus.domain if corpus.domain in teacher.markers else default_domain
        log.info("the teacher predicts the %d texts of %s (dropped: %s) for the student", len(corpus), corpus.name,
                 dict(corpus.dropped) or "none")
        probs.append(np.asarray(teacher.predict_proba(list(corpus.texts), progress=True), dtype=np.float64))
        texts += with_marker(cleaner.clean_many(corpus.texts), domain)
        why.append(f"{corpus.name}: {len(corpus)} texts ({corpus.dropped.get(TRAIN_SET, 0)} equal to training texts "
                   "dropped), labels unused, predicted by the teacher's export")
    return texts, np.vstack(probs), "; ".join(why) or "no transfer corpus"


def _proxy_rows_out_of_fold(data: EmitData, run: Path | None, gold: np.ndarray | None) -> tuple[list[str], str] | None:
    """When the teacher trained on the proxy corpus: its raw texts in the order of the run's proxy
    predictions (the rows its plan held out, then those ``--extra-data-labels`` left out of training)
    and its domain; None when they cannot be matched to the run's gold ``gold`` (no fold plan, other
    gold)."""
    corpus = next((c for c in data.extra if c.is_proxy), None)
    if corpus is None or run is None or gold is None:
        return None
    try:
        fold_of = np.asarray(json.loads((run / "folds.json").read_text(encoding="utf-8"))["default"]["extra"]
                             ["fold_of_row"])
    except (OSError, KeyError, ValueError):
        return None
    start = sum(len(c) for c in data.extra[:data.extra.index(corpus)])
    if len(fold_of) != sum(len(c) for c in data.extra):
        return None
    held = np.flatnonzero(fold_of[start:start + len(corpus)] >= 0)
    raw, annotation = [corpus.texts[i] for i in held], [corpus.annotation[held]]
    if data.proxy_untrained is not None:
        raw += list(data.proxy_untrained.texts)
        annotation.append(data.proxy_untrained.annotation)
    annotation = np.vstack(annotation)
    if annotation.shape != gold.shape or not np.array_equal(annotation, gold):
        return None
    return raw, corpus.domain


# --------------------------------------------------------------------------------------
# The job


def distill(run: Path, dcfg: DistillConfig, data_dir: str | None = None) -> dict[str, Any]:
    """Train (or with ``reuse_student`` reload), calibrate, evaluate, export and measure the student of
    ``run``; returns ``distill.json``."""
    run = Path(run)
    t_start = time.time()
    cfgs = run_settings(run)
    if data_dir:
        cfgs[DataConfig] = replace(cfgs[DataConfig], data=data_dir)
    best, arrays = teacher_predictions(run)
    data = load_data(cfgs[DataConfig])
    cleaner = TextCleaner(cfgs[CleaningConfig])
    markers = cfgs[DataConfig].domain_marker
    label_names = list(data.label_names)
    train = training_rows(data, cleaner.clean_many(data.train.texts), cleaner, markers)  # drops proxy duplicates
    n, gold = train.n, data.train.labels
    if len(arrays["y_validation"]) != len(arrays["validation_rows"]) or \
            not np.array_equal(arrays["y_validation"], gold[arrays["validation_rows"]]):
        raise RunFolderError(f"{run}: its predictions do not match the training file of {cfgs[DataConfig].data!r} "
                             "(another data folder? give the run's with --data)")
    seed = cfgs[DataConfig].seed if dcfg.seed < 0 else dcfg.seed
    tr, va = stratified_split(gold, dcfg.val_fraction, seed, source=data.train.source)
    dcfg = replace(dcfg, student_layers=student_layers(dcfg, cfgs[TrainConfig]))  # distill.json: the number used
    train_cfg = _student_train_config(cfgs[TrainConfig], dcfg)
    work = run / WORK_DIR
    names, combiner = student_combination(run, dcfg.keep_members)  # checked before the student trains
    mix = StudentMix(run, names, combiner, n)
    missing = mix.missing(va)
    if missing:  # a 90/10 run predicted only its held tenth: nothing to calibrate the mix on
        if "auto" not in dcfg.keep_members:
            raise RunFolderError(f"{run}: its members have no out-of-fold prediction of {missing} of the "
                                 "student's held-out texts (a 90/10 run?): --keep-members needs a cross-fitted run")
        log.info("--keep-members auto: the student alone (the run is not cross-fitted)")
        names, combiner = student_combination(run, ["none"])
        mix = StudentMix(run, names, combiner, n)
    kept = kept_folders(run, mix.kept)
    if dcfg.reuse_student:
        member, before = _reused_student(run, dcfg, train_cfg, seed)
        trained = {k: before[k] for k in ("targets", "train_seconds", "fit")}
    else:
        member, trained = _train_student(run, dcfg, train_cfg, seed, data, arrays, train, cleaner, markers, best,
                                         tr, va, work, cfgs[DataConfig].extra_data_dir)
    trained_member = member
    folder = _student_folder(work) if dcfg.reuse_student else _save_student(member, work)
    vocabulary: dict[str, Any] = {"trimmed": False, "why": "--no-trim-vocabulary"}
    if dcfg.trim_vocabulary:  # everything below (calibration, scores, export) sees the trimmed network
        folder, member, vocabulary = _trimmed_student(folder, member, work, train.texts[:n], cleaner)
    held = member.predict_proba([train.texts[i] for i in va])
    cal = cfgs[CalibrationConfig]
    held_mix = mix(held, TRAIN_SET, va)
    report = calibrate(gold[va], held_mix, label_names, cal.thresholds, cal.structure, cal.repeats)

    export = _export_student(run, data, cfgs, report, folder, names, combiner, kept)
    network = _network_predictions(member, data, cleaner, markers)
    if vocabulary["trimmed"]:
        vocabulary["texts_with_dropped_pieces"] = _texts_with_dropped_pieces(_student_folder(work), folder, data,
                                                                             cleaner, markers)
    mixed = {name: mix(p, name) for name, p in network.items() if mix.has(name)}
    scores = _student_scores(data, report, gold[va], held_mix, mixed, label_names, work)
    if mix.kept:  # the network alone, calibrated on the same held-out tenth, for comparison
        alone = calibrate(gold[va], held, label_names, cal.thresholds, cal.structure, cal.repeats)
        scores["network_alone"] = _student_scores(data, alone, gold[va], held, network, label_names, None)
    result = {
        "teacher": _teacher_scores(run, best),
        "student": {"members": names, "combiner": combiner, **scores},
        **trained,
        "seed": seed,
        "settings": {"distill": dcfg.__dict__, "train": train_cfg.__dict__},
        "vocabulary": vocabulary,
        "export": export,
    }
    if dcfg.reuse_student:
        result["reused_student"] = str(folder)
    result["export"]["reload_max_abs_diff"] = _reload_check(run, data, member, cleaner, markers, mix)
    result["speed"] = measure_speed(run, data, dcfg.speed_texts)
    result["size_bytes"] = {"teacher": folder_bytes(run / "model"), "student": folder_bytes(run / STUDENT_EXPORT)}
    result["seconds"] = round(time.time() - t_start, 1)
    atomic_write_json(run / RESULT_FILE, result)
    if (run / "report.html").is_file():  # the report shows teacher and student side by side
        from emitlab.report import write_report

        write_report(run)
    if hasattr(trained_member, "cleanup"):  # training checkpoints, no longer needed once saved
        trained_member.cleanup()
    return result


def _train_student(run: Path, dcfg: DistillConfig, train_cfg: TrainConfig, seed: int, data: EmitData,
                   arrays: dict[str, np.ndarray], train, cleaner: TextCleaner, markers: bool, best: str,
                   tr: np.ndarray, va: np.ndarray, work: Path, extra_dir: str):
    """Fit the student on its soft targets (the training texts but the held-out ``va``, then the
    transfer texts); returns it and what ``distill.json`` says of its training."""
    from emitlab.members.transformer.member import TransformerMember

    n, gold, label_names = train.n, data.train.labels, list(data.label_names)
    targets = soft_targets(gold, arrays["validation_rows"], arrays["validation"], dcfg.gold_weight)
    extra_texts, extra_targets, why = (transfer_rows(data, arrays, cleaner, markers, run,
                                                     extra_dir, dcfg.transfer_corpora)
                                       if dcfg.transfer
                                       else ([], np.zeros((0, len(label_names))), "--no-transfer"))
    log.info("student targets: %d training texts (%d with the teacher's out-of-fold %s, gold weight %.2f); "
             "transfer: %s", n, len(arrays["validation_rows"]), best, dcfg.gold_weight, why)
    texts = list(train.texts[:n]) + list(extra_texts)
    fit_rows = np.concatenate([tr, n + np.arange(len(extra_texts))]).astype(np.int64)
    labels = np.vstack([targets, extra_targets]) if len(extra_texts) else targets
    member = TransformerMember(train_cfg, workdir=work / "work", seed=seed,
                               eval_texts=[texts[i] for i in va], eval_labels=gold[va], select_on_eval=True)
    t = time.time()
    member.fit([texts[i] for i in fit_rows], labels[fit_rows], label_names)
    return member, {
        "targets": {"training_texts": n, "with_teacher_out_of_fold": int(len(arrays["validation_rows"])),
                    "gold_weight": dcfg.gold_weight, "transfer": why, "transfer_texts": len(extra_texts),
                    "held_out_for_epoch_and_calibration": int(len(va))},
        "train_seconds": round(time.time() - t, 1),
        "fit": {k: v for k, v in member.fit_info.items() if k != "log_history"},
    }


#: DistillConfig fields that change the student network itself (--reuse-student checks them).
TRAINING_FIELDS = ("gold_weight", "transfer", "transfer_corpora", "student_model", "student_layers", "epochs",
                   "max_steps", "val_fraction")


def _reused_student(run: Path, dcfg: DistillConfig, train_cfg: TrainConfig, seed: int):
    """The student network an earlier ``distill`` of ``run`` saved, and its ``distill.json``, once
    its settings are those asked now (else an error naming what differs)."""
    from emitlab.members.transformer.member import TransformerMember

    folder, path = _student_folder(run / WORK_DIR), run / RESULT_FILE
    if not (folder / FOLD_FILE).is_file() or not path.is_file():
        raise RunFolderError(f"{run}: no student to reuse ({folder} or {path.name} is missing): distill without "
                             "--reuse-student first")
    before = json.loads(path.read_text(encoding="utf-8"))
    settings = before.get("settings") or {}
    now = {**{k: getattr(dcfg, k) for k in TRAINING_FIELDS}, "seed": seed}
    then = {**(settings.get("distill") or {}), "seed": before.get("seed", seed)}
    differ = [f"{k}: {then[k]!r} then, {now[k]!r} now" for k in now if k in then and then[k] != now[k]]
    train_now = to_jsonable(train_cfg.__dict__)
    differ += [f"train.{k}: {v!r} then, {train_now[k]!r} now" for k, v in (settings.get("train") or {}).items()
               if k in train_now and v != train_now[k]]
    if differ:
        raise RunFolderError(f"{run}: the saved student was trained otherwise ({'; '.join(differ)}): distill "
                             "without --reuse-student")
    spec = json.loads((folder / FOLD_FILE).read_text(encoding="utf-8"))["spec"]
    return TransformerMember.load(folder, spec), before


def _reload_check(run: Path, data: EmitData, member, cleaner: TextCleaner, markers: bool,
                  mix: StudentMix) -> float | None:
    """How far the reloaded export's probabilities are from the trained student's (with the kept
    members' predictions of the run), on the test texts."""
    from emitlab.inference import EmotionClassifier

    ds = data.prediction_sets.get("test")
    if ds is None:
        return None
    raw = list(ds.texts[:64])
    mine = mix(member.predict_proba(with_marker(cleaner.clean_many(raw), TASK_DOMAIN if markers else None)),
               "test", slice(0, len(raw)))
    again = EmotionClassifier.from_pretrained(run / STUDENT_EXPORT).predict_proba(raw)
    return float(np.abs(again - mine).max())


#: --student-layers auto: the share of an encoder's layers the student keeps, and the fewest layers an
#: encoder must have to be cut (me5-small's 10 of 12 held the teacher's scores: README, Results).
AUTO_LAYER_SHARE, AUTO_MIN_LAYERS = 5 / 6, 12


def auto_student_layers(layers: int | None) -> int:
    """``--student-layers -1`` (auto) for an encoder of ``layers`` layers: five sixths of them, rounded,
    from 12 layers up; 0 (all) for a smaller encoder or one whose config does not say."""
    if layers is None or layers < AUTO_MIN_LAYERS:
        return 0
    return int(round(layers * AUTO_LAYER_SHARE))


def student_layers(dcfg: DistillConfig, teacher: TrainConfig) -> int:
    """The number of layers the student keeps (0 = all): ``dcfg.student_layers``, resolved when auto."""
    if dcfg.student_layers >= 0:
        return dcfg.student_layers
    from emitlab.members.transformer.model import encoder_layers, resolve_model_source

    layers = auto_student_layers(encoder_layers(resolve_model_source(dcfg.student_model or teacher.model)))
    log.info("--student-layers auto: %s", f"the first {layers}" if layers else "all (a small encoder)")
    return layers


def _student_train_config(teacher: TrainConfig, dcfg: DistillConfig) -> TrainConfig:
    changes: dict[str, Any] = {}
    if dcfg.student_model:
        changes["model"] = dcfg.student_model
    if dcfg.student_layers > 0:
        changes["num_layers"] = dcfg.student_layers
    if dcfg.epochs > 0:
        changes["epochs"] = dcfg.epochs
    if dcfg.max_steps > 0:
        changes["max_steps"] = dcfg.max_steps
    return replace(teacher, **changes)


def _student_folder(work: Path) -> Path:
    return work / "members" / STUDENT_MEMBER / "fold-0"


def _save_student(member, work: Path) -> Path:
    """The student as one fold folder (the layout ``write_export`` takes)."""
    folder = _student_folder(work)
    spec = member.save(folder)
    atomic_write_json(folder / FOLD_FILE, {"spec": spec, "seconds": member.fit_info.get("train_seconds")})
    return folder


def _export_student(run: Path, data: EmitData, cfgs: dict, report, folder: Path, names: list[str],
                    combiner: dict[str, Any], kept: dict[str, list[Path]]) -> dict[str, Any]:
    from emitlab.export import read_meta, write_export

    teacher_meta = read_meta(run / "model") if (run / "model").is_dir() else {}
    meta = {
        "task": data.task,
        "labels": list(data.label_names),
        "model_kind": "student",
        "decoder": report.decoder.to_dict(),
        "combiner": combiner,
        "cleaning": TextCleaner(cfgs[CleaningConfig]).to_dict(),
        "metrics": {},
        "nested_macro_f1": None,
        "distilled_from": {"run": str(run.resolve()), "model_kind": teacher_meta.get("model_kind")},
    }
    if "domain_marker" in teacher_meta:
        meta["domain_marker"] = teacher_meta["domain_marker"]
    folders = {name: [folder] if name == STUDENT_MEMBER else kept[name] for name in names}
    path = write_export(run / STUDENT_EXPORT, meta, folders)
    return {"path": str(path), "zip": str(path.with_name(path.name + ".zip"))}


def vocabulary_texts(cleaner: TextCleaner) -> list[str]:
    """What the student's vocabulary covers beyond its training texts: every Italian and English word
    form simplemma's dictionaries hold (forms and lemmas; lower, Capitalised and UPPER case), ELIta's
    words and every emoji as the cleaner writes it (its Italian name), 64 words a line."""
    import emoji
    from simplemma.strategies.dictionaries.dictionary_factory import DefaultDictionaryFactory

    from emitlab.data.elita import lexicon_bytes, read_ratings

    factory = DefaultDictionaryFactory()
    words: set[str] = set(read_ratings(lexicon_bytes()))
    for lang in ("it", "en"):
        for pair in factory.get_dictionary(lang).items():
            words.update(w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in pair)
    words |= {w.capitalize() for w in words} | {w.upper() for w in words}
    ordered = sorted(words)
    lines = [" ".join(ordered[i:i + 64]) for i in range(0, len(ordered), 64)]
    return lines + cleaner.clean_many(list(emoji.EMOJI_DATA))


def _trimmed_student(folder: Path, member, work: Path, texts: Sequence[str], cleaner: TextCleaner):
    """The student network of ``folder`` with the vocabulary it needs (``--trim-vocabulary``): its
    folder (under ``work/trimmed``), the member loaded from it and what was kept; the student as it
    is, with the reason, when its tokenizer is not trimmed."""
    import shutil

    from emitlab.members.transformer.member import TransformerMember
    from emitlab.members.transformer.vocabulary import trim_vocabulary, untrimmable

    why = untrimmable(folder)
    if why:  # before the word lists are built
        log.info("student vocabulary kept whole: %s", why)
        return folder, member, {"trimmed": False, "why": why}
    top = work / "trimmed"
    if top.exists():  # an earlier distill's
        shutil.rmtree(top)
    dst = top / STUDENT_MEMBER / "fold-0"
    t = time.time()
    info = trim_vocabulary(folder, dst, list(texts) + vocabulary_texts(cleaner))
    if not info["trimmed"]:
        log.info("student vocabulary kept whole: %s", info["why"])
        return folder, member, info
    saved = json.loads((folder / FOLD_FILE).read_text(encoding="utf-8"))
    spec = {**saved["spec"], "files": sorted(p.name for p in dst.iterdir() if p.is_file())}
    atomic_write_json(dst / FOLD_FILE, {**saved, "spec": spec})
    info["seconds"] = round(time.time() - t, 1)
    log.info("student vocabulary trimmed to %d of %d pieces (%.0f s)", info["pieces"], info["of"], info["seconds"])
    return dst, TransformerMember.load(dst, spec), info


def _texts_with_dropped_pieces(full: Path, trimmed: Path, data: EmitData, cleaner: TextCleaner,
                               markers: bool) -> dict[str, Any]:
    """Per prediction set (and the proxy corpus): how many texts hold a piece the trimmed vocabulary
    dropped (they are split into other pieces), of how many."""
    from emitlab.members.transformer.vocabulary import changed_texts

    sets = {name: (ds.texts, SET_DOMAINS.get(name, TASK_DOMAIN)) for name, ds in data.prediction_sets.items()}
    if data.proxy is not None:
        sets[PROXY_SET] = (data.proxy.texts, OOD_DOMAIN)
    out = {}
    for name, (raw, domain) in sets.items():
        texts = with_marker(cleaner.clean_many(raw), domain if markers else None)
        out[name] = {"texts": len(texts), "changed": changed_texts(full, trimmed, texts)}
    return out


def _teacher_scores(run: Path, best: str) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    m = metrics["models"][best]
    out = {"model": best, "validation_macro_f1": m["validation"]["macro_f1"]}
    for key in ("test", PROXY_SET):
        if key in m:
            out[key] = {"macro_f1": m[key]["macro_f1"], "per_label_f1": _per_label(m[key])}
    models = metrics["models"]
    members = [name for name in metrics.get("members", {}) if name in models and "test" in models[name]]
    out["best_member"] = max(((metrics["models"][k]["test"]["macro_f1"], k) for k in members), default=(None, None))[1]
    if out["best_member"]:
        out["best_member_test_macro_f1"] = metrics["models"][out["best_member"]]["test"]["macro_f1"]
    return out


def _per_label(m: dict) -> dict[str, float]:
    return {label: v["f1"] for label, v in (m.get("per_label") or {}).items()}


def _network_predictions(member, data: EmitData, cleaner: TextCleaner, markers: bool) -> dict[str, np.ndarray]:
    """The student network's probabilities of each prediction set and of the proxy corpus."""
    out = {name: member.predict_proba(with_marker(cleaner.clean_many(ds.texts),
                                                  SET_DOMAINS.get(name, TASK_DOMAIN) if markers else None))
           for name, ds in data.prediction_sets.items()}
    if data.proxy is not None and data.proxy.labels is not None:
        out[PROXY_SET] = member.predict_proba(with_marker(cleaner.clean_many(data.proxy.texts),
                                                          OOD_DOMAIN if markers else None))
    return out


def _student_scores(data: EmitData, report, y_held: np.ndarray, held: np.ndarray, probs: dict[str, np.ndarray],
                    label_names: list[str], work: Path | None) -> dict[str, Any]:
    """The student's metrics from its probabilities (``held``: of its held-out tenth; ``probs``: set
    name -> of that set, the proxy's under ``ood_proxy``): each set with gold, the proxy;
    submissions into ``work`` (none without)."""
    out: dict[str, Any] = {"calibration": report.to_dict(),
                           "held_out": evaluate_decoded(y_held, held, report.decoder, label_names)}
    for name, ds in data.prediction_sets.items():
        if name not in probs:
            continue
        if work is not None:
            write_submission(work / f"student_submission_task-{data.task}_{name}.csv", ds.ids,
                             report.decoder.decode(probs[name]), label_names)
        if ds.labels is not None:
            m = evaluate_decoded(ds.labels, probs[name], report.decoder, label_names)
            out[name] = {"macro_f1": m["macro_f1"], "micro_f1": m.get("micro_f1"), "per_label_f1": _per_label(m)}
    if PROXY_SET in probs:
        m = evaluate_decoded(data.proxy.labels, probs[PROXY_SET], report.decoder, label_names)
        out[PROXY_SET] = {"macro_f1": m["macro_f1"], "per_label_f1": _per_label(m),
                          "note": "the proxy corpus' texts may have been transfer texts (labels unused)"}
    return out


def measure_speed(run: Path, data: EmitData, n_texts: int) -> dict[str, Any]:
    """Texts per second of the teacher's and the student's exports on the same raw test texts, in
    this process, one after the other (a ratio; absolute speeds depend on the machine)."""
    from emitlab.inference import EmotionClassifier

    ds = data.prediction_sets.get("test")
    texts = list(ds.texts[:n_texts]) if ds is not None else []
    out: dict[str, Any] = {"texts": len(texts)}
    if not texts:
        return out
    for who, path in (("teacher", run / "model"), ("student", run / STUDENT_EXPORT)):
        if not path.is_dir():
            continue
        clf = EmotionClassifier.from_pretrained(path)
        clf.predict_proba(texts[:8])  # warm-up
        t = time.perf_counter()
        clf.predict_proba(texts)
        out[f"{who}_texts_per_s"] = round(len(texts) / (time.perf_counter() - t), 1)
    if out.get("teacher_texts_per_s") and out.get("student_texts_per_s"):
        out["student_over_teacher"] = round(out["student_texts_per_s"] / out["teacher_texts_per_s"], 2)
    return out


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).is_dir() else 0



def distill_summary(result: dict) -> str:
    """Teacher and student side by side: macro-F1 per set, speed and size."""
    teacher, student = result["teacher"], result["student"]
    kept = [m for m in student.get("members", []) if m != STUDENT_MEMBER]
    rows = [("", "teacher (" + teacher["model"] + ")", "student" + "".join(" + " + m for m in kept))]
    for key in ("test", "ood_proxy"):
        if key in teacher or key in student:
            rows.append((f"{key} macro-F1", _fmt((teacher.get(key) or {}).get("macro_f1")),
                         _fmt((student.get(key) or {}).get("macro_f1"))))
    if "network_alone" in student:
        rows.append(("test macro-F1, its network alone", "", _fmt((student["network_alone"].get("test") or {})
                                                                  .get("macro_f1"))))
    speed = result.get("speed") or {}
    rows.append(("texts/s", _fmt(speed.get("teacher_texts_per_s"), 1), _fmt(speed.get("student_texts_per_s"), 1)))
    size = result.get("size_bytes") or {}
    rows.append(("size (MB)", _fmt(size.get("teacher", 0) / 1e6, 1), _fmt(size.get("student", 0) / 1e6, 1)))
    vocabulary = result.get("vocabulary") or {}
    if vocabulary.get("trimmed"):
        rows.append(("vocabulary (pieces)", "", f"{vocabulary['pieces']:,} of {vocabulary['of']:,}"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip() for r in rows)


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


__all__ = ["distill", "soft_targets", "teacher_predictions", "transfer_rows", "run_settings", "measure_speed",
           "distill_summary"]
