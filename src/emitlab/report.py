"""One self-contained HTML report of a run folder: tables, figures as inline PNGs, error examples.

:func:`write_report` reads what ``emitlab run`` (or ``emitlab baseline`` / ``emitlab train``) left
in a run folder and writes ``report.html`` there. The file needs no server, no network and no
JavaScript. A section whose inputs are missing (no test gold, no trainer log, a single model, no
``predictions.npz``) is replaced by a note saying why.
"""

from __future__ import annotations

import base64
import html
import io
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .calibration import DEFAULT_THRESHOLD, Decoder, f1_threshold_curves
from .io import atomic_write_text

__all__ = ["write_report", "load_run"]

DPI = 100
MAX_EXAMPLES = 8  # misclassified validation texts shown per weak label
N_WEAK = 3
MODEL_COLORS = {"baseline": "C0", "transformer": "C1", "ensemble": "C2"}

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f4f5f7;margin:0}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header .meta{margin:0;opacity:.85;font-size:13px}
nav{margin-top:10px}nav a{color:#cfe0ff;margin-right:14px;font-size:13px;text-decoration:none}
main{max-width:1280px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:14px 22px;margin:18px 0}
h2{font-size:19px;margin:4px 0 10px;border-bottom:2px solid #e3e7ee;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}tr.best td{background:#e7f5e9;font-weight:600}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #e3e7ee}
figcaption{font-size:13px;color:#555;margin-top:4px}.muted{color:#666;font-size:13px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;font-size:14px}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;max-height:480px}
td.text{max-width:560px;white-space:pre-wrap;word-break:break-word}
"""


class TextCell(str):
    """A long free text: escaped, in a wrapping cell."""


class Num(str):
    """An already formatted number: right-aligned."""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------- loading


@dataclass
class RunData:
    path: Path
    config: dict
    metrics: dict
    label_names: list[str]
    models: dict[str, dict]  # model name -> score_model metrics
    best: str
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    texts: list[dict] = field(default_factory=list)
    trainer_log: list[dict] = field(default_factory=list)
    data_stats: list[dict] = field(default_factory=list)
    ensemble: dict = field(default_factory=dict)

    def probs(self, model: str, split: str) -> np.ndarray | None:
        return self.preds.get(f"{model}_{split}")

    def gold(self, split: str) -> np.ndarray | None:
        return self.preds.get(f"y_{split}")

    @property
    def eval_split(self) -> str:
        """The split curves are drawn on: test when its gold labels are known, else validation."""
        return "test" if self.gold("test") is not None else "validation"

    def decoder(self, model: str) -> Decoder:
        return Decoder.from_dict(self.models[model]["calibration"]["decoder"])

    def with_probs(self, split: str) -> list[str]:
        return [m for m in self.models if self.probs(m, split) is not None]


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report needs; optional files that are absent become empty values."""
    path = Path(run_dir).resolve()
    metrics = _read_json(path / "metrics.json", None)
    if metrics is None:
        raise FileNotFoundError(f"{path / 'metrics.json'} not found: is {path} a run folder?")
    models = metrics.get("models") or {metrics.get("model", "model"): metrics}
    first = next(iter(models.values()))
    labels = metrics.get("label_names") or first["calibration"]["decoder"]["label_names"]
    best = metrics.get("best_model")
    if best not in models:
        best = max(models, key=lambda m: models[m]["validation"]["macro_f1"])
    preds: dict[str, np.ndarray] = {}
    if (path / "predictions.npz").is_file():
        with np.load(path / "predictions.npz") as npz:
            preds = {k: npz[k] for k in npz.files}
    return RunData(
        path=path, config=_read_json(path / "config.json", {}), metrics=metrics, label_names=list(labels),
        models=models, best=best, preds=preds, texts=_read_json(path / "validation_texts.json", []),
        trainer_log=_read_json(path / "trainer_log.json", []), data_stats=_read_json(path / "data_stats.json", []),
        ensemble=_read_json(path / "ensemble_weights.json", {}),
    )


# ----------------------------------------------------------------------------- html helpers


def png_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(uri: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _cell(v: Any) -> str:
    if isinstance(v, TextCell):
        return f'<td class="text">{esc(v)}</td>'
    if isinstance(v, Num):
        return f'<td class="num">{esc(v)}</td>'
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "<td>—</td>"
    if isinstance(v, (float, np.floating)):
        return f'<td class="num">{v:.4f}</td>'
    if isinstance(v, (int, np.integer)):
        return f'<td class="num">{v}</td>'
    return f"<td>{esc(v)}</td>"


def table_html(header: list[str], rows: list[list[Any]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(_cell(v) for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _color(run: RunData, model: str) -> str:
    return MODEL_COLORS.get(model, f"C{3 + list(run.models).index(model)}")


def _grid(k: int, ncols: int = 5, w: float = 2.6, h: float = 2.3) -> tuple[Figure, list]:
    ncols = min(ncols, k)
    nrows = -(-k // ncols)
    fig = Figure(figsize=(w * ncols, h * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[k:]:
        ax.set_visible(False)
    return fig, list(axes[:k])


def _model_legend(fig: Figure, run: RunData, models: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_color(run, m), lw=2, label=m) for m in models]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), frameon=False)


# ----------------------------------------------------------------------------- sections


def section_summary(run: RunData) -> str:
    sets = [s for s in ("validation", "test", "ood") if any(s in m for m in run.models.values())]
    header = ["model", "name", "calibration", "held-out val macro-F1"]
    for s in sets:
        header += [f"{s} macro-F1 raw@0.5", f"{s} macro-F1 calibrated", f"{s} micro-F1"]
    rows, classes = [], []
    for name, m in run.models.items():
        cal = m["calibration"]
        label = f"{name} ★ best" if name == run.best else name
        if "weight_on_transformer" in m:
            label += f" (w={m['weight_on_transformer']:.2f})"
        row: list[Any] = [label, m.get("model", ""), cal["chosen"], cal.get("validation_heldout_macro_f1", {}).get(cal["chosen"])]
        for s in sets:
            r = m.get(s)
            row += [r["raw"]["macro_f1"], r["macro_f1"], r["micro_f1"]] if r else [None] * 3
        rows.append(row)
        classes.append("best" if name == run.best else "")
    out = [table_html(header, rows, classes), '<p class="muted">raw@0.5: every label at threshold 0.5. calibrated: '
           'thresholds and decoding rules chosen on validation (so the calibrated validation score is optimistic; '
           'the held-out column scores the chosen variant on validation halves it was not fitted on). '
           'ensemble w: weight of the transformer in the probability average.</p>']
    if run.ensemble.get("weights"):
        fig = Figure(figsize=(6, 3), layout="constrained")
        ax = fig.subplots()
        ax.plot(run.ensemble["weights"], run.ensemble["validation_heldout_macro_f1"], "o-", color=_color(run, "ensemble"))
        if "weight_on_transformer" in run.models.get("ensemble", {}):
            ax.axvline(run.models["ensemble"]["weight_on_transformer"], color="k", ls="--", lw=1, label="chosen")
            ax.legend()
        ax.set(xlabel="weight of the transformer", ylabel="held-out validation macro-F1", title="Ensemble weight search")
        ax.grid(alpha=0.3)
        out.append(figure_html(png_uri(fig), "validation macro-F1 against ensemble weight",
                               "Validation macro-F1 of the probability average for each transformer weight."))
    return "".join(out)


def section_distribution(run: RunData) -> str:
    if not run.data_stats:
        return note("data_stats.json is missing: no label distribution.")
    from .data.stats import DatasetStats, plot_stats

    stats = [DatasetStats.from_dict(d) for d in run.data_stats]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty length histogram: "no artists with labels"
        png = plot_stats(stats, Path(tmp) / "stats.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    names = ", ".join(f"{s.name or 'dataset'} (n={s.n_texts})" for s in stats)
    caption = f"Label prevalence, co-occurrence (% of the row label's texts) and text length for {names}."
    if any(s.word_lengths.size == 0 for s in stats):
        caption += " The length histogram needs per-text word lengths (\"word_lengths\") in data_stats.json."
    return figure_html(uri, "label prevalence and co-occurrence of the datasets", caption)


def section_per_label(run: RunData) -> str:
    sets = [s for s in ("validation", "test") if any(s in m for m in run.models.values())]
    k = len(run.label_names)
    fig = Figure(figsize=(max(10.0, 1.25 * k), 3.6 * len(sets) + 0.5), layout="constrained")
    axes = fig.subplots(len(sets), 1, squeeze=False).ravel()
    models = list(run.models)
    width = 0.8 / (2 * len(models))
    x = np.arange(k)
    for ax, s in zip(axes, sets):
        for i, m in enumerate(models):
            if s not in run.models[m]:
                continue
            res = run.models[m][s]
            raw = [res["raw"]["per_label"][lab]["f1"] for lab in run.label_names]
            cal = [res["per_label"][lab]["f1"] for lab in run.label_names]
            off = -0.4 + width * (2 * i + 0.5)
            ax.bar(x + off, raw, width, color=_color(run, m), alpha=0.35, hatch="//", edgecolor=_color(run, m),
                   label=f"{m} raw@0.5")
            ax.bar(x + off + width, cal, width, color=_color(run, m), label=f"{m} calibrated")
        ax.set_xticks(x, run.label_names)
        ax.set(ylim=(0, 1.02), ylabel="F1", title=f"Per-label F1 on {s}")
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(models) * 2, frameon=False, fontsize=9)
    return figure_html(png_uri(fig), "per-label F1 of every model, raw and calibrated",
                       "Hatched: threshold 0.5 for every label; solid: calibrated decoding chosen on validation.")


def section_thresholds(run: RunData) -> str:
    y = run.gold("validation")
    models = run.with_probs("validation")
    if y is None or not models:
        return note("predictions.npz with validation gold and probabilities is missing: no threshold curves.")
    fig, axes = _grid(len(run.label_names))
    curves = {m: f1_threshold_curves(y, run.probs(m, "validation")) for m in models}
    for j, (ax, lab) in enumerate(zip(axes, run.label_names)):
        for m in models:
            thr, f1 = curves[m]
            ok = f1[:, j] >= 0
            ax.plot(thr[ok, j], f1[ok, j], color=_color(run, m), lw=1.3)
            t = run.decoder(m).thresholds[j]
            pred = run.probs(m, "validation")[:, j] >= t
            denom = pred.sum() + y[:, j].sum()
            ax.plot([t], [2 * (pred & (y[:, j] > 0)).sum() / denom if denom else 0.0], "o",
                    color=_color(run, m), mec="k", ms=6)
            ax.axvline(t, color=_color(run, m), ls="--", lw=0.8)
        ax.axvline(DEFAULT_THRESHOLD, color="grey", ls=":", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{lab} (n={int(y[:, j].sum())})")
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.supxlabel("threshold")
    fig.supylabel("validation F1")
    _model_legend(fig, run, models)
    return figure_html(png_uri(fig), "validation F1 against the decision threshold, per label",
                       "Validation F1 of each label for every threshold; dot and dashed line: the calibrated threshold "
                       "(before the decoding rules); dotted grey: 0.5.")


def section_pr(run: RunData) -> str:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    split = run.eval_split
    y, models = run.gold(split), run.with_probs(split)
    if y is None or not models:
        return note("predictions.npz with gold labels and probabilities is missing: no precision-recall curves.")
    fig, axes = _grid(len(run.label_names))
    for j, (ax, lab) in enumerate(zip(axes, run.label_names)):
        if y[:, j].sum() == 0:
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", transform=ax.transAxes)
        for m in models if y[:, j].sum() else []:
            p = run.probs(m, split)[:, j]
            prec, rec, _ = precision_recall_curve(y[:, j], p)
            ap = average_precision_score(y[:, j], p)
            ax.plot(rec, prec, color=_color(run, m), lw=1.3, drawstyle="steps-post", label=f"AP {ap:.2f}")
        ax.axhline(y[:, j].mean(), color="grey", ls=":", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=lab)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if y[:, j].sum():
            ax.legend(fontsize=7, loc="upper right", handlelength=1)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    _model_legend(fig, run, models)
    fallback = "" if split == "test" else " (test gold labels are not available)"
    return figure_html(png_uri(fig), f"precision-recall curves per label on {split}",
                       f"Precision-recall curves on {split}{fallback}; AP = average precision; "
                       "dotted grey: the label's prevalence (a random ranking).")


def _heatmap(ax, counts: np.ndarray, labels: list[str], title: str, cmap: str, vmin: float, vmax: float):
    k = len(labels)
    off = np.ma.masked_array(counts.astype(float), mask=np.eye(k, dtype=bool))
    import matplotlib

    im = ax.imshow(off, cmap=matplotlib.colormaps[cmap].with_extremes(bad="#e4e4e4"), vmin=vmin, vmax=vmax,
                   aspect="auto")
    for r in range(k):
        for c in range(k):
            v = counts[r, c]
            strong = r != c and abs(v) > 0.6 * max(abs(vmin), abs(vmax))
            ax.text(c, r, f"{v:+d}" if vmin < 0 and r != c and v else f"{v:d}", ha="center", va="center",
                    fontsize=7, color="white" if strong else ("#555" if r == c else "black"))
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=7.5)
    ax.set_yticks(range(k), labels, fontsize=7.5)
    ax.set_title(title, fontsize=11)
    return im


def section_cooccurrence(run: RunData) -> str:
    split = run.eval_split
    y, p = run.gold(split), run.probs(run.best, split)
    if y is None or p is None:
        return note(f"predictions.npz lacks gold labels or {run.best} probabilities: no co-occurrence comparison.")
    y = (np.asarray(y) > 0).astype(int)
    pred = run.decoder(run.best).decode(p).astype(int)
    gold_c, pred_c = y.T @ y, pred.T @ pred
    off = ~np.eye(len(run.label_names), dtype=bool)
    vmax = max(int(gold_c[off].max(initial=0)), int(pred_c[off].max(initial=0)), 1)
    diff = pred_c - gold_c
    dmax = max(int(np.abs(diff[off]).max(initial=0)), 1)
    fig = Figure(figsize=(14, 5), layout="constrained")
    axes = fig.subplots(1, 3)
    im = _heatmap(axes[0], gold_c, run.label_names, "gold", "Blues", 0, vmax)
    _heatmap(axes[1], pred_c, run.label_names, f"predicted by {run.best} (calibrated)", "Blues", 0, vmax)
    fig.colorbar(im, ax=axes[:2], shrink=0.8, label="texts with both labels")
    im_d = _heatmap(axes[2], diff, run.label_names, "predicted − gold", "RdBu_r", -dmax, dmax)
    fig.colorbar(im_d, ax=axes[2], shrink=0.8, label="difference")
    return figure_html(png_uri(fig), f"gold and predicted label co-occurrence on {split}",
                       f"Number of {split} texts carrying both labels; diagonal (grey): texts with the label.")


def section_training(run: RunData) -> str:
    train = [e for e in run.trainer_log if "loss" in e and "step" in e]
    evals = [e for e in run.trainer_log if "eval_macro_f1" in e and "step" in e]
    out = []
    stats = run.metrics.get("training") or next((m["training"] for m in run.models.values() if "training" in m), {})
    if stats:
        out.append(table_html(["statistic", "value"], [[k, _plain(v)] for k, v in stats.items()]))
    if not train and not evals:
        return "".join(out) + note("trainer_log.json is missing or empty: no training curves.")
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_loss, ax_f1 = fig.subplots(1, 2)
    if train:
        ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], label="training loss", color="C1")
    if any("eval_loss" in e for e in evals):
        ev = [e for e in evals if "eval_loss" in e]
        ax_loss.plot([e["step"] for e in ev], [e["eval_loss"] for e in ev], "o--", label="validation loss", color="C0")
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    ax_loss.legend()
    if evals:
        steps, f1 = [e["step"] for e in evals], [e["eval_macro_f1"] for e in evals]
        ax_f1.plot(steps, f1, "o-", color="C2")
        b = int(np.argmax(f1))
        ax_f1.annotate(f"best {f1[b]:.3f}", (steps[b], f1[b]), textcoords="offset points", xytext=(0, 8), ha="center")
        ax_f1.margins(x=0.08, y=0.15)
    ax_f1.set(xlabel="step", ylabel="macro-F1 at 0.5", title="Validation macro-F1 (threshold 0.5)")
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
    out.append(figure_html(png_uri(fig), "training loss and validation macro-F1 per step",
                           "From the Trainer's log history: training loss every logging step, validation at each evaluation."))
    return "".join(out)


def _plain(v: Any) -> Any:
    """A statistic as a table cell: numbers right-aligned, short as written; structures as JSON."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, float)):
        return Num(f"{v:,}" if isinstance(v, int) else f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.1f}")
    return v if isinstance(v, str) else json.dumps(v)


def section_config(run: RunData) -> str:
    config = {k: v for k, v in run.config.items() if k != "versions"}
    versions = run.config.get("versions", {})
    timings = run.metrics.get("timings_s", {})
    out = [table_html(["step", "seconds"], [[k, _plain(round(v, 1)) if isinstance(v, float) else _plain(v)]
                                             for k, v in timings.items()]) if timings
           else note("no timings recorded."),
           f"<details><summary>config.json</summary><pre>{esc(json.dumps(config, indent=2, ensure_ascii=False))}</pre></details>"
           if config else note("config.json is missing."),
           "<h3>Versions</h3>" + (table_html(["package", "version"], [[k, v] for k, v in versions.items()])
                                  if versions else note("no versions recorded."))]
    return "".join(out)


def section_errors(run: RunData) -> str:
    y, p = run.gold("validation"), run.probs(run.best, "validation")
    if y is None or p is None or len(run.texts) != len(y):
        return note("predictions.npz or validation_texts.json is missing (or they disagree): no error examples.")
    per_label = run.models[run.best]["validation"]["per_label"]
    weakest = sorted(run.label_names, key=lambda lab: per_label[lab]["f1"])[:N_WEAK]
    dec = run.decoder(run.best)
    pred = dec.decode(p)
    names = np.array(run.label_names)
    out = [f'<p class="muted">The {len(weakest)} labels with the lowest validation F1 for {esc(run.best)}; the most '
           f"confident errors first (largest distance between probability and threshold).</p>"]
    for lab in weakest:
        j = run.label_names.index(lab)
        wrong = np.flatnonzero(y[:, j] != pred[:, j])
        wrong = wrong[np.argsort(-np.abs(p[wrong, j] - dec.thresholds[j]), kind="stable")]
        n_fn = int((y[wrong, j] == 1).sum())
        out.append(f"<h3>{esc(lab)}: F1 {per_label[lab]['f1']:.3f}; {n_fn} missed, {len(wrong) - n_fn} false alarms "
                   f"(threshold {dec.thresholds[j]:.2f})</h3>")
        rows = [["missed" if y[i, j] else "false alarm", TextCell(run.texts[i]["text"]),
                 ", ".join(names[y[i] > 0]) or "—", ", ".join(names[pred[i] > 0]) or "—", float(p[i, j])]
                for i in wrong[:MAX_EXAMPLES]]
        out.append(table_html(["error", "text", "gold", "predicted", f"p({lab})"], rows) if rows
                   else note("no errors for this label."))
    return "".join(out)


SECTIONS = [
    ("summary", "Summary", section_summary),
    ("distribution", "Label distribution", section_distribution),
    ("per-label", "Per-label F1", section_per_label),
    ("thresholds", "F1 against threshold (validation)", section_thresholds),
    ("pr", "Precision-recall curves", section_pr),
    ("cooccurrence", "Label co-occurrence: gold vs predicted", section_cooccurrence),
    ("training", "Training curves", section_training),
    ("errors", "Misclassified validation examples", section_errors),
    ("config", "Configuration, timings and versions", section_config),
]


def render_report(run: RunData) -> str:
    parts, links = [], []
    for sid, title, fn in SECTIONS:
        links.append(f'<a href="#{sid}">{esc(title)}</a>')
        parts.append(f'<section id="{sid}"><h2>{esc(title)}</h2>{fn(run)}</section>')
    best = run.models[run.best]
    headline = f"best model: {run.best}, validation macro-F1 {best['validation']['macro_f1']:.4f}"
    if "test" in best:
        headline += f", test macro-F1 {best['test']['macro_f1']:.4f}"
    task = run.metrics.get("task", "?")
    meta = f"task {task} · {len(run.label_names)} labels · {headline} · written {datetime.now():%Y-%m-%d %H:%M}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>emitlab report: {esc(run.path.name)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{CSS}</style></head><body><header><h1>emitlab report: {esc(run.path.name)}</h1>"
            f"<p class=\"meta\">{esc(meta)}</p><nav>{''.join(links)}</nav></header>"
            f"<main>{''.join(parts)}</main></body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and return its path."""
    run = load_run(run_dir)
    return atomic_write_text(run.path / "report.html", render_report(run))
