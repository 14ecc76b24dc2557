"""Ablation of the fine-tuning options (issue 8): one change to the transformer at a time, over seeds.

    python benchmarks/ablation.py --dry-run                  # the plan: every (line, seed) and its command
    python benchmarks/ablation.py                            # run what is missing, then write the result
    python benchmarks/ablation.py --folds 1                  # the faster 90/10 mode (best epoch on validation)
    python benchmarks/ablation.py --line baseline --line "--epochs 6" --seeds 42 43
    python benchmarks/ablation.py --collect                  # only summarise the runs already there
    python benchmarks/ablation.py --lines data --folds 1 --name ablation_data_task-A   # issue 18's lines

A *line* is a set of ``emitlab run`` flags changed from the defaults (``baseline``: none). For each
line and seed the runner calls::

    emitlab run --data $EMITLAB_DATA --task T --members transformer --folds K --transformer-folds K \\
        --seed S --no-report --out benchmarks/runs/ablation/<line>-s<seed> <line's flags> <--extra>

and ``--extra-data none`` after them when they set none of --extra-data, --extra-data-labels and
--domain-marker: the lines compare with EMit alone, not with the run profiles' extra data.

A (line, seed) whose ``metrics.json`` exists is skipped and an interrupted one is continued
(``--resume``), so the runner can be stopped and started again. ``--previous RECORD`` (an earlier
result of this tool, made with the same folds, task, data and extra flags) also skips each (line,
seed) it holds whose run folder is gone, and takes its row (and its paired proxy delta) from there,
marked ``recorded_in``: a table can grow over machines that do not keep their run folders.
``--jobs N`` runs N of them at a time, each on its share of the cores (``OMP_NUM_THREADS``), its
output in ``<run folder>.log``: on a small machine several one-thread trainings get more done per
hour than one on all cores, but then the runs' seconds say little about the lines' costs. A folder
made by another command, or by the same command when it resolved to other settings (a default or a
profile has changed since: ``emitlab run --print-config`` shows what it resolves to now), is refused
rather than mixed in. A flag starting with ``--`` and
without a space is given as ``--line=--no-freeze-word-embeddings``.

The result, ``benchmarks/results/ablation_task-<T>.json`` (``--name``), holds per line and seed the
transformer's nested out-of-fold macro-F1, its out-of-fold macro-F1, test macro-F1 at 0.5 (raw)
and calibrated, and the training seconds (all folds); per line the mean and standard deviation
(ddof=1) over seeds; and per line the delta of each mean from the reference line (``baseline``,
else the first) and whether ``|delta|`` exceeds the pooled standard deviation of the two lines
(``beyond_spread``: a change larger than the seed-to-seed spread, not a significance test). The
out-of-domain proxy (MultiEmotions-It) is scored on all of it by a line that does not train on it and
on its held-out rows only by one that does, so each line's ``ood_proxy_paired`` also holds, seed by
seed, its proxy score minus the reference run's on the same texts (the reference's predictions and
decoder, rows from the line's ``folds.json``), and their mean and std. It
records the command, machine, date, versions (``record.write_result``) and the git commit. A
markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from record import write_result  # noqa: E402

REPO = HERE.parent
DEFAULT_LINES = ["baseline", "--no-freeze-word-embeddings", "--max-length 128", "--epochs 6", "--layer-decay 0.9",
                 "--ema-decay 0.999", "--loss asl", "--multi-sample-dropout 5", "--rdrop-alpha 1.0"]
#: issue 18: ways to use the extra corpora and the rare-emotion augmentations (``--lines data``); runs with
#: MultiEmotions-It report its out-of-fold proxy score, the others its zero-shot one; XED-en as many rows as XED-it
#: has (6,550 of its 27,202: all of them would make a run several times as long), to compare the two at one size
DATA_LINES = ["baseline", "--extra-data multiemotions-it", "--extra-data multiemotions-it:0.5",
              "--extra-data multiemotions-it --domain-marker", "--extra-data multiemotions-it --extra-first-epochs 2",
              "--extra-data xed-it:0.5", "--extra-data xed-en:0.5 --extra-data-rows 6550", "--oversample-rare 3",
              "--augment-rare 2",
              "--extra-data xed-it --extra-data-labels Fear Anger Anticipation Surprise"]
LINE_SETS = {"finetune": DEFAULT_LINES, "data": DATA_LINES}
DEFAULT_SEEDS = [42, 43, 44]
#: EMit A's rarest labels (train prevalence: Fear 1.5%, Anger 6%, ...): their test F1 gets a column each
RARE_LABELS = ["Fear", "Anger", "Anticipation", "Surprise"]
#: metric name -> how to read it from a run's metrics.json (the transformer member alone)
METRICS = {
    "nested_macro_f1": lambda m: m["models"]["transformer"]["nested_macro_f1"],
    "oof_macro_f1": lambda m: m["models"]["transformer"]["validation"]["macro_f1"],
    "test_macro_f1_raw": lambda m: m["models"]["transformer"]["test"]["raw"]["macro_f1"],
    "test_macro_f1": lambda m: m["models"]["transformer"]["test"]["macro_f1"],
    # MultiEmotions-It, the out-of-domain proxy: out-of-fold when a line trains on it, else zero-shot
    "ood_proxy_macro_f1": lambda m: m["models"]["transformer"]["ood_proxy"]["macro_f1"],
    **{f"test_f1_{lab}": (lambda lab: lambda m: m["models"]["transformer"]["test"]["per_label"][lab]["f1"])(lab)
       for lab in RARE_LABELS},
    "train_seconds": lambda m: float(sum(m["members"]["transformer"]["fold_seconds"])),
}
HEADERS = {"nested_macro_f1": "nested macro-F1", "oof_macro_f1": "OOF macro-F1", "test_macro_f1_raw": "test raw",
           "test_macro_f1": "test calibrated", "ood_proxy_macro_f1": "OOD proxy",
           **{f"test_f1_{lab}": f"test F1 {lab}" for lab in RARE_LABELS}, "train_seconds": "train s"}


def default_data() -> str:
    env = os.environ.get("EMITLAB_DATA")
    return env if env else str(REPO.parent / "shared" / "data" / "emit")


def shown(path: str | Path) -> str:
    """A path as the runs see it (they run in the repository root): relative to it when inside."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def line_flags(line: str) -> list[str]:
    return [] if line.strip() in ("", "baseline") else shlex.split(line)


#: A line setting none of these trains on the task's file alone, as the reference does: ``--extra-data none``
#: turns off the run profiles' extra data (``emitlab.settings.EXTRA_DATA_DEFAULT``; runs made before it
#: existed lack the flag and resolved to the same settings).
EXTRA_DATA_FLAGS = ("--extra-data", "--extra-data-labels", "--domain-marker")
NO_EXTRA_DATA = ["--extra-data", "none"]


def no_extra_data(flags: list[str]) -> list[str]:
    """``--extra-data none`` unless ``flags`` choose what extra data to use."""
    return [] if any(f.split("=", 1)[0] in EXTRA_DATA_FLAGS for f in flags) else list(NO_EXTRA_DATA)


def line_name(line: str) -> str:
    """``--layer-decay 0.9`` -> ``layer-decay-0.9`` (the run folder's stem)."""
    flags = line_flags(line)
    if not flags:
        return "baseline"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(f.lstrip("-") for f in flags))


def git_commit() -> dict[str, Any]:
    """The checkout's commit, and whether it had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


# --------------------------------------------------------------------------------------
# Plan and runs


def read_previous(path: Path | None, args: argparse.Namespace) -> dict[str, Any] | None:
    """The earlier result ``--previous`` names, after checking it was made with this plan's folds, task,
    data and extra flags (its rows would not compare otherwise)."""
    if path is None:
        return None
    try:
        record = json.loads(Path(path).read_text())
        settings, lines = record["settings"], record["lines"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"ablation: --previous {path}: not a result of this tool ({e})") from None
    ours = {"folds": args.folds, "task": args.task, "data": args.data, "extra": args.extra}
    differ = [f"{k} {settings.get(k)!r} (here {v!r})" for k, v in ours.items() if settings.get(k) != v]
    if differ:
        raise SystemExit(f"ablation: --previous {path} was made with other settings: {', '.join(differ)}")
    return {"path": shown(path), "date": record.get("date"), "git": record.get("git"), "lines": lines}


def recorded(previous: dict[str, Any] | None, line: str, seed: int) -> dict[str, Any] | None:
    """The previous record's row of (line, seed), with its paired proxy delta, or None."""
    held = (previous or {}).get("lines", {}).get(line_name(line))
    if not held or held.get("flags") != line_flags(line) or str(seed) not in held.get("seeds", {}):
        return None
    pair = ((held.get("ood_proxy_paired") or {}).get("seeds") or {}).get(str(seed))
    where = {"record": previous["path"], "date": previous["date"], "commit": (previous["git"] or {}).get("commit")}
    row = held["seeds"][str(seed)]
    return {"row": {**row, "recorded_in": row.get("recorded_in") or where}, "pair": pair}  # the first record


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One entry per (line, seed): its run folder, its command and whether it is done (``recorded``:
    gone, but in the ``--previous`` record)."""
    previous = read_previous(getattr(args, "previous", None), args)
    out = []
    for line in args.line:
        for seed in args.seeds:
            folder = args.runs_dir / f"{line_name(line)}-s{seed}"
            command = [sys.executable, "-m", "emitlab.cli", "run", "--data", args.data, "--task", args.task,
                       "--members", "transformer", "--folds", str(args.folds), "--transformer-folds", str(args.folds),
                       "--seed", str(seed), "--no-report", "--out", shown(folder), *line_flags(line), *args.extra,
                       *no_extra_data(line_flags(line) + args.extra)]
            done = (folder / "metrics.json").is_file()
            started = folder.is_dir() and any(folder.iterdir()) and not done
            entry = {"line": line, "name": line_name(line), "seed": seed, "folder": folder, "command": command,
                     "status": "done" if done else "resume" if started else "todo"}
            entry["conflict"] = conflict(entry) if done or started else None
            held = None if done else recorded(previous, line, seed)
            if held is not None:  # a started folder is left alone: the record already has this run
                entry.update(status="recorded", previous=held, conflict=None)
            out.append(entry)
    names = [line_name(line) for line in args.line]
    if len(set(names)) != len(names):
        raise SystemExit(f"ablation: two lines give the same run-folder name ({', '.join(names)}); make them differ")
    return out


def conflict(entry: dict[str, Any]) -> str | None:
    """Why an existing run folder does not belong to this plan, or None. Compares the command
    line its config.json recorded (other folds, task, data, flags ...), then its resolved
    settings with what the planned command resolves to now (``--print-config``): the same
    command means other settings when a default or a profile changed since the run was made."""
    config = entry["folder"] / "config.json"
    if not config.is_file():
        return None
    saved = json.loads(config.read_text())
    before = [a for a in saved.get("command", [])[1:] if a != "--resume"]
    planned = entry["command"][3:]  # after "python -m emitlab.cli", as sys.argv[1:] of the run
    if planned[-2:] == NO_EXTRA_DATA and before == planned[:-2]:  # made before the profiles' extra data
        before = planned
    if before != planned:
        return f"made by `emitlab {shlex.join(before)}`"
    now = planned_settings(entry["command"])
    changed = [f"{sec}.{key} {saved.get(sec, {}).get(key)!r} (now {value!r})"
               for sec, values in now.items() for key, value in values.items()
               if saved.get(sec, {}).get(key) != value and not added_since(saved, sec, key, value)]
    return f"made with other settings: {', '.join(changed[:4])}" if changed else None


def added_since(saved: dict[str, Any], section: str, key: str, value: Any) -> bool:
    """Whether ``section.key`` is a setting added after the run was made (absent from its config.json)
    that now resolves to its default: the run behaved as that default does."""
    import dataclasses

    from emitlab.settings import GROUPS, section_name

    if key in saved.get(section, {}):
        return False
    for cls in GROUPS:
        if section_name(cls) == section:
            f = next((f for f in dataclasses.fields(cls) if f.name == key), None)
            if f is None:
                return False
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            return json.loads(json.dumps(default)) == value
    return False


def planned_settings(command: list[str]) -> dict[str, dict[str, Any]]:
    """The settings ``command`` (an ``emitlab run``) resolves to, without running it."""
    done = subprocess.run([*command, "--print-config"], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ablation: `{shlex.join(command)} --print-config` failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def run_one(entry: dict[str, Any], threads: int | None = None) -> bool:
    """Run one (line, seed); with ``threads`` (``--jobs`` > 1) on that many threads, its output
    going to ``<run folder>.log`` instead of this terminal."""
    command = list(entry["command"]) + (["--resume"] if entry["status"] == "resume" else [])
    log = entry["folder"].with_name(entry["folder"].name + ".log") if threads else None
    print(f"\n=== {entry['name']} seed {entry['seed']} ({entry['status']}): {shlex.join(command)}"
          + (f"\n    ({threads} thread(s), output in {log})" if log else ""), flush=True)
    t0 = time.time()
    if log is None:
        code = subprocess.run(command, cwd=REPO).returncode
    else:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as out:
            code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    print(f"=== {entry['name']} seed {entry['seed']}: exit {code} after {time.time() - t0:.0f} s", flush=True)
    return code == 0


def run_all(entries: list[dict[str, Any]], jobs: int = 1) -> list[str]:
    """Run every entry not done, ``jobs`` at a time in plan order; the names of those that failed."""
    todo = [e for e in entries if e["status"] not in ("done", "recorded")]
    if jobs <= 1:
        return [f"{e['name']}-s{e['seed']}" for e in todo if not run_one(e)]
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        ok = list(pool.map(lambda e: run_one(e, threads), todo))
    return [f"{e['name']}-s{e['seed']}" for e, good in zip(todo, ok) if not good]


# --------------------------------------------------------------------------------------
# Summary


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pooled_std(a: list[float], b: list[float]) -> float | None:
    """sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)); None below 2 values each."""
    if len(a) < 2 or len(b) < 2:
        return None
    (_, sa), (_, sb) = mean_std(a), mean_std(b)
    return math.sqrt(((len(a) - 1) * sa ** 2 + (len(b) - 1) * sb ** 2) / (len(a) + len(b) - 2))


def read_run(folder: Path) -> dict[str, Any] | None:
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    row: dict[str, Any] = {}
    for key, read in METRICS.items():
        try:
            row[key] = float(read(metrics))
        except (KeyError, TypeError, ValueError):
            row[key] = None
    row["run_seconds"] = (metrics.get("timings_s") or {}).get("total")
    row["precision"] = trained_precision(metrics)
    try:  # the code the run was made with (a table may gather runs of several commits)
        row["commit"] = json.loads((folder / "config.json").read_text())["git"]["commit"]
    except (OSError, ValueError, KeyError, TypeError):
        row["commit"] = None
    return row


def proxy_rows(folder: Path, reference_gold: Any) -> Any:
    """Where the out-of-domain proxy texts a run scored sit among those a reference run of the same
    seed scored (its gold labels ``reference_gold``): all of them when both predicted MultiEmotions-It
    zero-shot; when the run trained on it, its held-out rows (``folds.json``) among the reference's
    rows with one of the run's ``--extra-data-labels``, then (since the proxy keeps the rows those
    labels leave out of training) the others. None when the gold labels there are not the run's
    (another corpus before it, another split, no proxy). The gold is compared on the labels the run
    trained on: before that fix a run's proxy gold had the labels --extra-data-labels masks zeroed."""
    import numpy as np

    rows = np.arange(len(reference_gold))
    cols = slice(None)
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        gold = np.load(folder / "predictions.npz")["y_ood_proxy"]
        if metrics["ood_proxy"]["mode"] == "out-of-fold":
            keep = json.loads((folder / "config.json").read_text())["data"]["extra_data_labels"]
            untrained = rows[:0]
            if keep:
                cols = [metrics["label_names"].index(lab) for lab in keep]
                used = reference_gold[:, cols].any(1)
                rows, untrained = np.flatnonzero(used), np.flatnonzero(~used)
            folds = json.loads((folder / "folds.json").read_text())["default"]["extra"]["fold_of_row"]
            if len(folds) != len(rows):
                return None
            rows = rows[np.asarray(folds) >= 0]
            if len(gold) == len(rows) + len(untrained) and len(untrained):
                rows = np.concatenate([rows, untrained])
    except (OSError, KeyError, ValueError):
        return None
    if len(rows) != len(gold) or not (reference_gold[rows][:, cols] == gold[:, cols]).all():
        return None
    return rows


def paired_proxy(folder: Path, reference: Path) -> dict[str, float] | None:
    """A run's calibrated proxy macro-F1 and the reference run's on the same texts (see
    :func:`proxy_rows`), both against the reference's gold (the corpus' own annotation), each with
    its own decoder; the run's may be on a held-out tenth where the reference's covers the whole
    corpus, so only this pair compares like with like. None when they cannot be paired."""
    import numpy as np

    from emitlab.engine.calibration import Decoder
    from emitlab.scoring import macro_f1

    def decoder(run: Path) -> Decoder:
        metrics = json.loads((run / "metrics.json").read_text())
        return Decoder.from_dict(metrics["models"]["transformer"]["calibration"]["decoder"])

    try:
        ref = np.load(reference / "predictions.npz")
        ref_gold, ref_probs = ref["y_ood_proxy"], ref["transformer_ood_proxy"]
        rows = proxy_rows(folder, ref_gold)
        if rows is None:
            return None
        probs = np.load(folder / "predictions.npz")["transformer_ood_proxy"]
        run, ref_score = (macro_f1(ref_gold[rows], decoder(folder).decode(probs)),
                          macro_f1(ref_gold[rows], decoder(reference).decode(ref_probs[rows])))
    except (OSError, KeyError):
        return None
    return {"n": int(len(rows)), "macro_f1": float(run), "reference_macro_f1": float(ref_score),
            "delta": float(run - ref_score)}


def trained_precision(metrics: dict[str, Any]) -> str | None:
    """The precision the run's transformer trained in (``bf16``, ``fp16``, ``fp32``): ``--precision
    auto`` resolves by machine and, since 870466d, to bf16 on CPUs with native bf16, so a line run at
    another commit or on another machine may differ from its reference without saying so in its flags."""
    fits = ((metrics.get("members") or {}).get("transformer") or {}).get("training") or []
    flags = fits[0].get("precision") if fits else None
    # metrics.json keeps only the flags that are on ({"bf16": True}) or says "fp32"
    return "+".join(sorted(flags)) if isinstance(flags, dict) else flags


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per line: per seed, mean/std, and the deltas from the reference line."""
    lines: dict[str, dict[str, Any]] = {}
    for e in entries:
        line = lines.setdefault(e["name"], {"flags": line_flags(e["line"]), "seeds": {}, "missing_seeds": []})
        row = e["previous"]["row"] if e.get("previous") else read_run(e["folder"])
        if row is None:
            line["missing_seeds"].append(e["seed"])
        elif e.get("previous"):
            line["seeds"][str(e["seed"])] = row
        else:
            parallel = e["folder"].with_name(e["folder"].name + ".log").is_file()  # made with --jobs > 1
            line["seeds"][str(e["seed"])] = {**row, "run": shown(e["folder"]), "parallel": parallel}
    values = {name: {k: [r[k] for r in line["seeds"].values() if r.get(k) is not None] for k in METRICS}
              for name, line in lines.items()}
    for name, line in lines.items():
        line["n"] = len(line["seeds"])
        line["precisions"] = sorted({r["precision"] for r in line["seeds"].values() if r.get("precision")})
        line["mean"], line["std"] = {}, {}
        for k in METRICS:
            line["mean"][k], line["std"][k] = mean_std(values[name][k])
    reference = "baseline" if "baseline" in lines else next(iter(lines), None)
    folder_of: dict[str, dict[str, Path]] = {}
    for e in entries:
        if str(e["seed"]) in lines[e["name"]]["seeds"]:
            folder_of.setdefault(e["name"], {})[str(e["seed"])] = e["folder"]
    for name, line in lines.items():
        if name == reference or reference is None:
            continue
        line["delta"], line["pooled_std"], line["beyond_spread"] = {}, {}, {}
        for k in METRICS:
            m, m0 = line["mean"][k], lines[reference]["mean"][k]
            delta = None if m is None or m0 is None else m - m0
            spread = pooled_std(values[name][k], values[reference][k])
            line["delta"][k] = delta
            line["pooled_std"][k] = spread
            line["beyond_spread"][k] = None if delta is None or spread is None else abs(delta) > spread
        # the proxy scored on the same texts, seed by seed (zero-shot runs score all of them, runs that
        # train on the corpus its held-out rows only)
        ref_folders = folder_of.get(reference, {})
        pairs = {seed: paired_proxy(folder, ref_folders[seed])
                 for seed, folder in folder_of.get(name, {}).items() if seed in ref_folders}
        pairs.update({str(e["seed"]): e["previous"]["pair"] for e in entries  # as the previous record paired it
                      if e["name"] == name and e.get("previous") and pairs.get(str(e["seed"])) is None})
        pairs = {seed: p for seed, p in pairs.items() if p is not None}
        deltas = [p["delta"] for p in pairs.values()]
        mean, std = mean_std(deltas)
        line["ood_proxy_paired"] = {"seeds": pairs, "delta_mean": mean, "delta_std": std,
                                    "beyond_spread": None if std is None else abs(mean) > std}
    known = lines[reference]["precisions"] if reference is not None else []
    mixed = [name for name, line in lines.items() if known and line["precisions"] and line["precisions"] != known]
    return {"reference": reference, "lines": lines, "precision_differs": mixed}


def markdown_table(summary: dict[str, Any]) -> str:
    def cell(line: dict[str, Any], k: str) -> str:
        m, s = line["mean"][k], line["std"][k]
        if m is None:
            return "-"
        fmt = "{:.0f}" if k == "train_seconds" else "{:.4f}"
        text = fmt.format(m) + ("" if s is None else " ± " + fmt.format(s))
        delta = (line.get("delta") or {}).get(k)
        if delta is not None:
            text += (" ({:+.0f}" if k == "train_seconds" else " ({:+.4f}").format(delta)
            text += "*)" if line["beyond_spread"][k] else ")"
        return text

    def paired(line: dict[str, Any]) -> str:
        p = line.get("ood_proxy_paired") or {}
        if p.get("delta_mean") is None:
            return "-"
        text = "{:+.4f}".format(p["delta_mean"])
        text += "" if p["delta_std"] is None else " ± {:.4f}".format(p["delta_std"])
        return text + ("*" if p["beyond_spread"] else "") + f" ({len(p['seeds'])})"

    keys = list(METRICS)
    with_paired = any((line.get("ood_proxy_paired") or {}).get("delta_mean") is not None
                      for line in summary["lines"].values())
    head = ["line", "seeds", *HEADERS.values()]
    if with_paired:  # after the proxy column
        at = keys.index("ood_proxy_macro_f1") + 3
        head.insert(at, "OOD proxy, paired delta")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, line in summary["lines"].items():
        cells = [name, str(line["n"])] + [cell(line, k) for k in keys]
        if with_paired:
            cells.insert(at, paired(line))
        rows.append("| " + " | ".join(cells) + " |")
    rows.append(f"\nmean ± std over seeds (ddof=1); (delta from {summary['reference']}), * = |delta| > pooled std")
    if with_paired:
        rows.append(f"OOD proxy, paired delta: the line's proxy score minus {summary['reference']}'s on the same "
                    "texts, seed by seed (mean ± std of the differences, * = |mean| > std; in parentheses the "
                    "seeds paired)")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    epilog = __doc__.split("\n\n", 1)[1] + "".join(
        f"\nLines of --lines {name}:\n" + "\n".join(f"    {x}" for x in lines) for name, lines in LINE_SETS.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--line", action="append", default=None, metavar="FLAGS",
                   help="One line: 'baseline' or emitlab run flags ('--epochs 6', --line=--no-freeze-word-embeddings); "
                        "repeat for several; replaces the lines of --lines.")
    p.add_argument("--lines", choices=sorted(LINE_SETS), default="finetune",
                   help="A set of lines (listed below): finetune (issue 8's fine-tuning options, the default) or "
                        "data (issue 18's extra corpora and rare-emotion augmentations).")
    p.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="Seeds (default: 42 43 44).")
    p.add_argument("--folds", type=int, default=3,
                   help="K of the transformer's cross-fitting (default 3); "
                        "1 = the 90/10 split with the best epoch kept.")
    p.add_argument("--task", choices=["A", "B"], default="A", help="EMit subtask (default: A).")
    p.add_argument("--data", default=None, help="EMit folder (default: $EMITLAB_DATA, else ../shared/data/emit).")
    p.add_argument("--extra", default="", help="Flags added to every run, e.g. '--threads 2' or '--profile quick'.")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="Where the run folders go (default: benchmarks/runs/ablation).")
    p.add_argument("--name", default=None,
                   help="Result name: benchmarks/results/NAME.json (default: ablation_task-<T>).")
    p.add_argument("--jobs", type=int, default=1,
                   help="Runs at a time (default 1). With N > 1 each gets the machine's cores / N threads "
                        "(OMP_NUM_THREADS) and writes its output to <run folder>.log; on a small machine this "
                        "gets more done per hour, but the runs' seconds are then not comparable with runs made "
                        "alone.")
    p.add_argument("--previous", type=Path, default=None, metavar="RECORD",
                   help="An earlier result of this tool (same --folds, --task, --data, --extra): each (line, seed) "
                        "it holds whose run folder is gone is not run again, its row is taken from there.")
    p.add_argument("--dry-run", action="store_true",
                   help="Print the plan (status and command of every run); run nothing.")
    p.add_argument("--collect", action="store_true",
                   help="Run nothing; summarise the finished runs and write the result.")
    args = p.parse_args(argv)
    args.line = args.line or list(LINE_SETS[args.lines])
    args.extra = shlex.split(args.extra)
    data = args.data or default_data()
    args.data = data if data.startswith("hf:") else shown(data)  # the runs start in the repository root
    args.runs_dir = args.runs_dir.resolve() if args.runs_dir else HERE / "runs" / "ablation"
    args.name = args.name or f"ablation_task-{args.task}"
    if args.folds < 1:
        p.error("--folds must be >= 1")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    entries = plan(args)
    if args.dry_run:
        todo = sum(e["status"] not in ("done", "recorded") for e in entries)
        print(f"ablation: {len(args.line)} line(s) x {len(args.seeds)} seed(s) = {len(entries)} runs, {todo} to run; "
              f"data {args.data}; result benchmarks/results/{args.name}.json")
        for e in entries:
            status = "other" if e["conflict"] else e["status"]
            print(f"[{status:>6}] {e['name']} seed {e['seed']}: {shlex.join(e['command'])}"
                  + (f"\n         ! the folder is from another plan: {e['conflict']}" if e["conflict"] else ""))
        return 0
    clashes = [f"{e['folder']}: {e['conflict']}" for e in entries if e["conflict"]]
    if clashes:
        print("ablation: run folders from another plan (use another --runs-dir, or remove them):\n  "
              + "\n  ".join(clashes), file=sys.stderr)
        return 2
    failed = []
    if not args.collect:
        if not args.data.startswith("hf:") and not (REPO / args.data).exists():
            print(f"ablation: no data at {args.data} (set EMITLAB_DATA or pass --data)", file=sys.stderr)
            return 2
        failed = run_all(entries, args.jobs)
    summary = summarise(entries)
    payload = {"command": shlex.join([sys.executable, *sys.argv]), "git": git_commit(),
               "settings": {"lines": args.line, "seeds": args.seeds, "folds": args.folds, "task": args.task,
                            "data": args.data, "extra": args.extra, "runs_dir": shown(args.runs_dir),
                            "jobs": args.jobs, "previous": shown(args.previous) if args.previous else None},
               "failed": failed, **summary}
    path = write_result(args.name, payload)
    print(markdown_table(summary))
    if summary["precision_differs"]:
        said = {n: ", ".join(line["precisions"]) for n, line in summary["lines"].items()}
        print(f"ablation: WARNING: these lines trained in another precision than {summary['reference']} "
              f"({said[summary['reference']]}): " + ", ".join(f"{n} ({said[n]})" for n in summary["precision_differs"]),
              file=sys.stderr)
    print(f"result written to {path}" + (f"; {len(failed)} run(s) failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
