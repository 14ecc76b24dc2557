"""One self-contained HTML report of a run folder: tables, figures as inline PNGs, error examples.

:func:`write_report` reads what ``emitlab run`` / ``baseline`` / ``train`` left in a run folder
and writes ``report.html`` there. The file needs no server, no network and no JavaScript. A
section whose inputs are missing (no test gold, no trainer log, a single member, no
``predictions.npz``) is replaced by a note saying why.

Run folders of metrics schema 2 (``"schema": 2``: members cross-fitted, every candidate -- each
member alone, the averages, the stacker -- scored by nested cross-validation on the out-of-fold
rows) are the main input. Older folders (schema 1: ``baseline`` / ``transformer`` /
``ensemble`` on a validation split, or the single-model ``metrics.json`` of ``emitlab
baseline`` / ``train``) are read too; the sections that need schema-2 fields then say so.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from emitlab.engine.calibration import DEFAULT_THRESHOLD, Decoder, f1_threshold_curves
from emitlab.errors import RunFolderError
from emitlab.io import atomic_write_text

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: the CLI parser imports this package
    from matplotlib.figure import Figure

__all__ = ["write_report", "load_run", "render_report", "section_titles", "SECTIONS"]

DPI = 100
MAX_EXAMPLES = 8  # misclassified validation texts shown per weak label
N_WEAK = 3

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f4f5f7;margin:0}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header .meta{margin:0;opacity:.85;font-size:13px}
nav{margin-top:10px;display:flex;flex-wrap:wrap;gap:2px 16px}
nav a{color:#cfe0ff;font-size:13px;text-decoration:none;white-space:nowrap}
main{max-width:1280px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:14px 22px;margin:18px 0;
  overflow-x:auto}
h2{font-size:19px;margin:4px 0 10px;border-bottom:2px solid #e3e7ee;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}tr.best td{background:#e7f5e9;font-weight:600}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #e3e7ee}
figcaption{font-size:13px;color:#555;margin-top:4px}.muted{color:#666;font-size:13px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;font-size:14px}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;max-height:480px}
td.text{max-width:560px;white-space:pre-wrap;word-break:break-word}
.side{display:flex;flex-wrap:wrap;gap:0 28px;align-items:flex-start}
"""


class TextCell(str):
    """A long free text: escaped, in a wrapping cell."""


class Num(str):
    """An already formatted number: right-aligned."""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------- loading


def _palette(n: int) -> list[str]:
    """``n`` colours, distinct up to 26: tab10 (without its grey, kept for reference lines), tab20's light
    shades, Dark2."""
    import matplotlib

    base = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]
    light = [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i % 2 and i != 15]
    cols = base + light + list(matplotlib.colormaps["Dark2"].colors)  # 26 distinct, then again
    return [matplotlib.colors.to_hex(cols[i % len(cols)]) for i in range(n)]


@dataclass
class RunData:
    path: Path
    config: dict
    metrics: dict
    label_names: list[str]
    models: dict[str, dict]  # candidate name -> its metrics (model, combiner, calibration, validation, test...)
    best: str
    schema: int = 2
    members: list[str] = field(default_factory=list)  # member names, in the order combiner weights use
    selection: dict = field(default_factory=dict)  # {"rows": "out-of-fold" | "validation split", "n", "folds"}
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    texts: list[dict] = field(default_factory=list)
    trainer_log: list[dict] = field(default_factory=list)
    data_stats: list[dict] = field(default_factory=list)
    ensemble_search: dict = field(default_factory=dict)  # schema 1: ensemble_weights.json
    distill: dict = field(default_factory=dict)  # distill.json of `emitlab distill`: the student
    colors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.colors:
            names = list(dict.fromkeys([*self.members, *self.models]))
            self.colors = dict(zip(names, _palette(len(names))))

    # -- names and probabilities

    @property
    def oof(self) -> bool:
        return self.selection.get("rows") == "out-of-fold"

    @property
    def rows_name(self) -> str:
        """What the ``validation`` entries are: "out-of-fold" or "validation"."""
        return "out-of-fold" if self.oof else "validation"

    def split_name(self, split: str) -> str:
        if split == "ood_proxy":
            proxy = self.metrics.get("ood_proxy") or {}
            return f"OOD proxy ({proxy.get('corpus', '?')}, {proxy.get('mode', '?')})"
        return self.rows_name if split == "validation" else split

    @property
    def nested_name(self) -> str:
        return "nested out-of-fold macro-F1" if self.oof else f"nested {self.rows_name} macro-F1"

    def probs(self, model: str, split: str) -> np.ndarray | None:
        p = self.preds.get(f"{model}_{split}")
        return p if p is not None else self.preds.get(f"member:{model}_{split}")

    def gold(self, split: str) -> np.ndarray | None:
        return self.preds.get(f"y_{split}")

    @property
    def eval_split(self) -> str:
        """The split the co-occurrence is drawn on: test when its gold labels are known, else validation."""
        return "test" if self.gold("test") is not None else "validation"

    def decoder(self, model: str) -> Decoder:
        return Decoder.from_dict(self.models[model]["calibration"]["decoder"])

    def color(self, name: str) -> str:
        if name not in self.colors:  # a name first seen late still gets a stable colour of its own
            self.colors[name] = _palette(len(self.colors) + 1)[-1]
        return self.colors[name]

    def shown(self) -> list[str]:
        """The models compared side by side: every member, then the chosen combination."""
        out = [m for m in self.members if m in self.models]
        return out + ([self.best] if self.best not in out else [])

    def with_probs(self, split: str, names: list[str] | None = None) -> list[str]:
        return [m for m in (names if names is not None else self.shown())
                if m in self.models and self.probs(m, split) is not None]

    def nested(self) -> dict[str, float]:
        """Nested out-of-fold macro-F1 per candidate (empty for schema-1 folders)."""
        ens = self.metrics.get("ensemble") or {}
        out = {m: v["nested_macro_f1"] for m, v in self.models.items() if v.get("nested_macro_f1") is not None}
        return out or dict(ens.get("nested_macro_f1") or {})

    def nested_folds(self, name: str) -> list[float]:
        m = self.models.get(name, {})
        return list(m.get("nested_fold_macro_f1") or (self.metrics.get("ensemble") or {})
                    .get("nested_fold_macro_f1", {}).get(name) or [])

    def label(self, name: str) -> str:
        return f"{name} ★" if name == self.best else name


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report needs; optional files that are absent become empty values."""
    path = Path(run_dir).resolve()
    metrics = _read_json(path / "metrics.json", None)
    if metrics is None:
        raise RunFolderError(f"{path / 'metrics.json'} not found: is {path} a run folder?")
    models = metrics.get("models") or {metrics.get("model", "model"): metrics}
    first = next(iter(models.values()))
    labels = metrics.get("label_names") or first["calibration"]["decoder"]["label_names"]
    schema = int(metrics.get("schema", 1))
    if schema >= 2:
        members = list(metrics.get("members") or [])
        selection = dict(metrics.get("selection") or {})
    else:  # schema 1: the single models are the "members", the ensemble the combination
        members = [m for m in models if m != "ensemble"]
        selection = {"rows": "validation split", "n": first["validation"].get("n")}
    best = metrics.get("best_model")
    if best not in models:
        nested = {m: v.get("nested_macro_f1") for m, v in models.items()}
        key = (lambda m: nested[m]) if all(v is not None for v in nested.values()) \
            else (lambda m: models[m]["validation"]["macro_f1"])
        best = max(models, key=key)
    preds: dict[str, np.ndarray] = {}
    if (path / "predictions.npz").is_file():
        with np.load(path / "predictions.npz") as npz:
            preds = {k: npz[k] for k in npz.files}
    return RunData(
        path=path, config=_read_json(path / "config.json", {}), metrics=metrics, label_names=list(labels),
        models=models, best=best, schema=schema, members=members, selection=selection, preds=preds,
        texts=_read_json(path / "validation_texts.json", []), trainer_log=_read_json(path / "trainer_log.json", []),
        data_stats=_read_json(path / "data_stats.json", []),
        ensemble_search=_read_json(path / "ensemble_weights.json", {}),
        distill=_read_json(path / "distill.json", {}),
    )


# ----------------------------------------------------------------------------- html helpers


def _figure(**kwargs) -> Figure:
    """A matplotlib ``Figure`` (no pyplot, no display), imported here rather than with the package."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def png_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(uri: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def muted(text: str) -> str:
    return f'<p class="muted">{esc(text)}</p>'


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


def _grid(k: int, ncols: int = 5, w: float = 2.6, h: float = 2.3) -> tuple[Figure, list]:
    ncols = min(ncols, k)
    nrows = -(-k // ncols)
    fig = _figure(figsize=(max(w * ncols, 6.0), h * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[k:]:
        ax.set_visible(False)
    return fig, list(axes[:k])


def _line_style(run: RunData, model: str) -> dict:
    """The chosen combination as a wide translucent band under the members' thin lines, so that a
    combination equal to a member (all weight on it) does not hide that member's curve."""
    if model == run.best and model not in run.members:
        return {"lw": 4.0, "alpha": 0.45, "zorder": 1}
    return {"lw": 1.3, "zorder": 2}


def _model_legend(fig: Figure, run: RunData, models: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=run.color(m), label=run.label(m), **(_line_style(run, m) | {"lw": max(
        2.0, _line_style(run, m)["lw"])})) for m in models]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), frameon=False)


def _plain(v: Any) -> Any:
    """A statistic as a table cell: numbers right-aligned, short as written; structures as JSON."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, float)):
        return Num(f"{v:,}" if isinstance(v, int) else f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.1f}")
    return v if isinstance(v, str) else json.dumps(v)


def _kind(run: RunData, name: str) -> str:
    """What a candidate is, in words: "member", "average of probabilities", "stacker (C=1)"... (the
    combiner describes itself: :func:`~emitlab.engine.ensemble.describe_combiner`)."""
    from emitlab.engine.ensemble import describe_combiner

    comb = run.models[name].get("combiner")
    if comb is None:
        if run.schema < 2 and name == "ensemble":
            return "average of probabilities"
        return "member" if name in run.members or len(run.models) == 1 else "model"
    if name in run.members:
        return "member"
    return describe_combiner(comb, run.members) or "model"


def _average_weights(run: RunData, name: str) -> list[float] | None:
    """The member weights of a combiner with one weight per member, an average (schema 1: the
    transformer's weight)."""
    from emitlab.engine.ensemble import member_weights

    m = run.models[name]
    weights = member_weights(m.get("combiner"), run.members)
    if weights is not None:
        return weights
    if "weight_on_transformer" in m and run.members == ["baseline", "transformer"]:
        w = float(m["weight_on_transformer"])
        return [1.0 - w, w]
    return None


def _is_combination(run: RunData, name: str) -> bool:
    return name not in run.members and len(run.members) > 1


# ----------------------------------------------------------------------------- sections


def section_summary(run: RunData) -> str:
    sets = [s for s in ("validation", "test", "ood", "ood_proxy") if any(s in m for m in run.models.values())]
    nested = run.nested()
    header = ["model", "kind", "decoding"] + ([run.nested_name] if nested else [])
    if not nested:
        header.append("held-out val macro-F1")
    for s in sets:
        header += [f"{run.split_name(s)} macro-F1 raw@0.5", f"{run.split_name(s)} macro-F1 calibrated",
                   f"{run.split_name(s)} micro-F1"]
    rows, classes = [], []
    for name, m in run.models.items():
        cal = m["calibration"]
        label = f"{name} ★ chosen" if name == run.best else name
        if run.schema < 2 and "weight_on_transformer" in m:
            label += f" (w={m['weight_on_transformer']:.2f})"
        row: list[Any] = [label, _kind(run, name), cal["chosen"]]
        row.append(nested.get(name) if nested else cal.get("validation_heldout_macro_f1", {}).get(cal["chosen"]))
        for s in sets:
            r = m.get(s)
            row += [r["raw"]["macro_f1"], r["macro_f1"], r["micro_f1"]] if r else [None] * 3
        rows.append(row)
        classes.append("best" if name == run.best else "")
    sel = run.selection
    out = []
    if run.schema >= 2:
        folds = sel.get("folds") or {}
        fold_txt = ", ".join(f"{k}: K={v}" for k, v in folds.items())
        where = (f"the {sel.get('n', '?')} out-of-fold rows (every training text, predicted by fold models that "
                 f"never saw it; folds — {fold_txt})" if run.oof else
                 f"the {sel.get('n', '?')} rows of the validation split (a single train/validation split, "
                 "no cross-fitting)")
        out.append(muted(f"Every choice (combination, weights, thresholds, decoding rules) was made on {where}."))
    else:
        out.append(note("Schema-1 run folder (before cross-fitting): scores are on a single validation split; "
                        "there are no nested out-of-fold scores."))
    out.append(table_html(header, rows, classes))
    out.append(_extra_data_note(run))
    expl = ("raw@0.5: every label at threshold 0.5. calibrated: thresholds and decoding rules chosen on the "
            f"{run.rows_name} rows, so the calibrated {run.rows_name} score is optimistic. ")
    if nested:
        expl += (f"{run.nested_name}: each outer fold of the {run.rows_name} rows decoded with a combiner and "
                 "calibration fitted on the other folds — the honest score the choice (★) is made on.")
    else:
        expl += "held-out: the chosen decoding scored on validation halves it was not fitted on."
    out.append(muted(expl))
    export = run.metrics.get("export")
    if export:
        diff = export.get("reload_max_abs_diff")
        out.append(table_html(["export", "value"], [
            ["folder", export.get("path", "")], ["model", export.get("model", "")],
            ["members", ", ".join(export.get("members") or [])],
            ["reload check", f"max |Δp| {diff:.1e} on {export.get('reload_checked_on', '?')}"
             if diff is not None else "not checked"]]))
    return "".join(out)


def _extra_data_note(run: RunData) -> str:
    """What the extra corpora and the out-of-domain proxy were (empty when neither)."""
    parts = []
    extra = run.metrics.get("extra_data")
    if extra:
        corpora = "; ".join(
            f"{c['name']} ({c['rows']} rows"
            + (f" sampled from {c['sampled_from']}" if c.get("sampled_from") else "")
            + f", weight {c['weight']:g}"
            + (f", masked: {', '.join(c['masked_labels'])}" if c["masked_labels"] else "")
            + "".join(f", {n} dropped as equal to {s} texts" for s, n in c["dropped_equal_to_evaluation"].items() if n)
            + ")" for c in extra["corpora"])
        parts.append(f"Extra training corpora, trained on by {', '.join(extra['members'])} (no choice is made on "
                     f"their rows): {corpora}.")
    proxy = run.metrics.get("ood_proxy")
    if proxy:
        how = ("each row predicted by fold models that never saw it" if proxy["mode"] == "out-of-fold" else
               "the run's models, which never trained on it, predicting all of it")
        if proxy.get("n_untrained"):
            how += (f" ({proxy['n_untrained']} of them, with none of the --extra-data-labels, trained nothing and are "
                    "predicted by every fold model, like the test file)")
        parts.append(f"OOD proxy: macro-F1 on {proxy['n']} rows of {proxy['corpus']} (the domain of the out-of-domain "
                     f"test file), {how}, decoded with each candidate's calibration; it chooses nothing.")
    return muted(" ".join(parts)) if parts else ""


def section_candidates(run: RunData) -> str:
    nested = run.nested()
    if not nested:
        return note("metrics.json has no nested out-of-fold scores (a schema-1 run folder): no candidate chart.")
    names = [m for m in run.models if m in nested] + [m for m in nested if m not in run.models]
    scores = [nested[m] for m in names]
    fig = _figure(figsize=(max(6.0, 1.25 * len(names) + 2), 3.9), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x, scores, 0.62, color=[run.color(m) for m in names], alpha=0.85,
           edgecolor=["black" if m == run.best else "none" for m in names],
           linewidth=[2.0 if m == run.best else 0 for m in names])
    folds = {m: run.nested_folds(m) for m in names}
    everything = [*scores, *[f for m in names for f in folds[m]]]
    lo, hi = min(everything), max(everything)
    span = max(hi - lo, 0.05)
    bottom = max(0.0, lo - 0.25 * span - 0.02)
    top = hi + 0.16 * (hi - bottom) + 0.01
    for i, m in enumerate(names):
        if folds[m]:
            off = np.linspace(-0.18, 0.18, len(folds[m])) if len(folds[m]) > 1 else np.zeros(1)
            ax.plot(i + off, folds[m], "o", color="black", mfc="white", ms=5, mew=1.2, zorder=3)
        above = max([scores[i], *folds[m]])
        ax.text(i, above + 0.03 * (top - bottom), f"{scores[i]:.3f}", ha="center", va="bottom", fontsize=9,
                fontweight="bold" if m == run.best else "normal")
    ax.set_xticks(x, [run.label(m) for m in names])
    pad = max(0.0, (3 - len(names)) / 2)
    ax.set_xlim(-0.6 - pad, len(names) - 0.4 + pad)
    ax.set(ylim=(bottom, top), ylabel=run.nested_name,
           title="Every candidate, scored on rows its choices never saw")
    ax.grid(axis="y", alpha=0.3)
    cap = (f"Bars: {run.nested_name} of each candidate (each member alone and each combiner); open "
           "dots: its macro-F1 on each outer fold of the nested cross-validation. ★ / black edge: the chosen "
           "candidate (highest nested score; a tie keeps the simpler one)."
           + (f" The y axis starts at {bottom:.2f}, not 0." if bottom > 0 else ""))
    return figure_html(png_uri(fig), f"{run.nested_name} of every candidate with per-fold scores", cap)


def section_distribution(run: RunData) -> str:
    if not run.data_stats:
        return note("data_stats.json is missing: no label distribution.")
    from emitlab.data.stats import DatasetStats, plot_stats

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
    sets = [s for s in ("validation", "test") if any(s in run.models[m] for m in run.shown())]
    models = run.shown()
    k = len(run.label_names)
    fig = _figure(figsize=(max(10.0, 0.35 * k * len(models) + 2), 3.6 * len(sets) + 0.6), layout="constrained")
    axes = fig.subplots(len(sets), 1, squeeze=False).ravel()
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
            ax.bar(x + off, raw, width, color=run.color(m), alpha=0.35, hatch="//", edgecolor=run.color(m),
                   label=f"{run.label(m)} raw@0.5")
            ax.bar(x + off + width, cal, width, color=run.color(m), label=f"{run.label(m)} calibrated")
        ax.set_xticks(x, run.label_names)
        n = next((run.models[m][s].get("n") for m in models if s in run.models[m]), None)
        where = f"the {run.rows_name} rows" if s == "validation" else s
        ax.set(ylim=(0, 1.02), ylabel="F1", title=f"Per-label F1 on {where}" + (f" (n={n})" if n else ""))
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 8), frameon=False, fontsize=9)
    what = "every member" + (f" and the chosen combination ({run.best})" if run.best not in run.members else "")
    out = [figure_html(png_uri(fig), "per-label F1 of every member and of the chosen combination, raw and calibrated",
                       f"Per-label F1 of {what}. Hatched: threshold 0.5 for every label; solid: the calibrated "
                       f"decoding chosen on the {run.rows_name} rows (optimistic there). ★: the chosen model.")]
    # every candidate, calibrated, as compact tables side by side
    tables = []
    for s in sets:
        cands = [m for m in run.models if s in run.models[m]]
        rows = [[lab] + [run.models[m][s]["per_label"][lab]["f1"] for m in cands] for lab in run.label_names]
        rows.append(["macro-F1"] + [run.models[m][s]["macro_f1"] for m in cands])
        tables.append(f"<div><h3>Calibrated F1 of every candidate on {esc(run.split_name(s))}</h3>"
                      + table_html(["label"] + [run.label(m) for m in cands], rows,
                                   [""] * len(run.label_names) + ["best"]) + "</div>")
    out.append(f'<div class="side">{"".join(tables)}</div>')
    return "".join(out)


def _weights_figure(run: RunData, names: list[str]) -> str:
    """Grouped bars: one group per averaging candidate, one bar per member weight."""
    weights = {n: _average_weights(run, n) for n in names}
    fig = _figure(figsize=(max(5.5, 1.2 * len(names) * len(run.members) + 2), 3.4), layout="constrained")
    ax = fig.subplots()
    m = len(run.members)
    width = 0.8 / m
    x = np.arange(len(names))
    for i, member in enumerate(run.members):
        vals = [weights[n][i] for n in names]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), vals, width, color=run.color(member), label=member)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], padding=2, fontsize=8)
    ax.set_xticks(x, [f"{run.label(n)}\n({_kind(run, n)})" for n in names])
    ax.set(ylim=(0, 1.12), ylabel="member weight", title="Weights of the averaging combiners (same for every label)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=9, frameon=False)
    return figure_html(png_uri(fig), "member weights of the averaging combiners",
                       "One bar per member: its weight in the average (of probabilities, or of logits then a "
                       "sigmoid); the weights sum to 1 and apply to every label. ★: the chosen candidate.")


def stacker_weights(W: np.ndarray, n_labels: int, n_members: int) -> tuple[np.ndarray, np.ndarray]:
    """From the stacker's ``W`` (``L x M*L``; column ``m*L + i`` is member ``m``'s logit for label
    ``i``): ``own[j, m] = W[j, m*L + j]`` (label ``j``'s coefficient on member ``m``'s logit for ``j``)
    and ``total[j, m]`` = the sum of ``|W[j, m*L:(m+1)*L]|`` (all of member ``m``'s logits)."""
    W = np.asarray(W, dtype=float)
    k, cols = n_labels, np.arange(n_labels)
    own = np.stack([W[cols, m * k + cols] for m in range(n_members)], axis=1)
    total = np.stack([np.abs(W[:, m * k:(m + 1) * k]).sum(1) for m in range(n_members)], axis=1)
    return own, total


def _stacker_figure(run: RunData, name: str) -> str:
    comb = run.models[name]["combiner"]
    W = np.asarray(comb["W"], dtype=float)
    k, mem = len(run.label_names), run.members
    if W.shape != (k, k * len(mem)):
        return note(f"{name}: coefficient matrix of shape {W.shape}, expected {(k, k * len(mem))}: not drawn.")
    own, total = stacker_weights(W, k, len(mem))
    fig = _figure(figsize=(max(11.0, 2.2 * len(mem) + 7.5), 0.42 * k + 2.2), layout="constrained")
    ax_h, ax_b = fig.subplots(1, 2, width_ratios=[max(1.0, 0.5 * len(mem)), 1.6])
    vmax = max(float(np.abs(own).max(initial=0.0)), 1e-9)
    im = ax_h.imshow(own, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for r in range(k):
        for c in range(len(mem)):
            v = own[r, c]
            ax_h.text(c, r, f"{v:+.2f}", ha="center", va="center", fontsize=8,
                      color="white" if abs(v) > 0.6 * vmax else "black")
    ax_h.set_xticks(range(len(mem)), mem)
    ax_h.set_yticks(range(k), run.label_names)
    ax_h.set_title("coefficient on the member's own-label logit", fontsize=11)
    fig.colorbar(im, ax=ax_h, shrink=0.85, label="coefficient")
    height = 0.8 / len(mem)
    y = np.arange(k)
    for i, member in enumerate(mem):
        ax_b.barh(y - 0.4 + height * (i + 0.5), total[:, i], height, color=run.color(member), label=member)
    ax_b.set_yticks(y, run.label_names)
    ax_b.invert_yaxis()
    ax_b.set(xlabel="Σ |coefficient| over the member's logits of all labels",
             title="how much each label's stacker uses each member")
    ax_b.title.set_fontsize(11)
    ax_b.grid(axis="x", alpha=0.3)
    ax_b.legend(loc="lower right", fontsize=9)
    return figure_html(png_uri(fig), f"{name} coefficients per label and member",
                       f"{run.label(name)} (per-label logistic regression over every member's logits for every label, "
                       f"C={comb.get('C', 1.0):g}). Left: each label's coefficient on each member's logit for that "
                       "same label. Right: the sum of the absolute coefficients of that label's regression over all "
                       "of a member's logits (its own label and the co-occurring ones).")


def section_combination(run: RunData) -> str:
    if len(run.members) < 2:
        return note(f"a single member ({', '.join(run.members) or run.best}): nothing is combined.")
    best_kind = _kind(run, run.best)
    comb = run.models[run.best].get("combiner") or {}
    nested = run.nested()
    head = f"Chosen: {run.best}" + (f" — {best_kind}" if not best_kind.startswith(run.best) else "")
    if run.best in nested:
        head += f", nested out-of-fold macro-F1 {nested[run.best]:.4f}"
    w = _average_weights(run, run.best)
    if w is not None:
        head += "; weights " + ", ".join(f"{m} {x:.2f}" for m, x in zip(run.members, w))
    if run.best in run.members:
        head += ". A member alone scored best: the combinations below were candidates, not used."
    out = [f"<p><b>{esc(head)}</b></p>"]
    averages = [n for n in run.models if _is_combination(run, n) and _average_weights(run, n) is not None]
    stackers = [n for n in run.models if (run.models[n].get("combiner") or {}).get("kind") == "stacker"]
    # the chosen combiner's figure first
    order = ([("avg", averages)] if averages else []) + [("stk", s) for s in stackers]
    if comb.get("kind") == "stacker":
        order = [("stk", run.best)] + [o for o in order if o != ("stk", run.best)]
    for kind, what in order:
        if kind == "avg":
            chosen = f" ({run.best} chosen)" if run.best in what else ""
            out.append(f"<h3>Averaging combiners{chosen}</h3>" + _weights_figure(run, what))
        else:
            out.append(f"<h3>{esc(run.label(what))}{' (chosen)' if what == run.best else ''}</h3>"
                       + _stacker_figure(run, what))
    if run.ensemble_search.get("weights"):  # schema 1: the weight search of the probability average
        fig = _figure(figsize=(6, 3), layout="constrained")
        ax = fig.subplots()
        ax.plot(run.ensemble_search["weights"], run.ensemble_search["validation_heldout_macro_f1"], "o-",
                color=run.color("ensemble"))
        if "weight_on_transformer" in run.models.get("ensemble", {}):
            ax.axvline(run.models["ensemble"]["weight_on_transformer"], color="k", ls="--", lw=1, label="chosen")
            ax.legend()
        ax.set(xlabel="weight of the transformer", ylabel="held-out validation macro-F1",
               title="Ensemble weight search")
        ax.grid(alpha=0.3)
        out.append(figure_html(png_uri(fig), "validation macro-F1 against ensemble weight",
                               "Held-out validation macro-F1 of the probability average for each transformer weight."))
    if len(out) == 1:
        out.append(note("metrics.json records no combiner weights for these candidates."))
    return "".join(out)


def section_thresholds(run: RunData) -> str:
    y = run.gold("validation")
    models = run.with_probs("validation")
    if y is None or not models:
        return note("predictions.npz with validation gold and probabilities is missing: no threshold curves.")
    rows = run.rows_name
    fig, axes = _grid(len(run.label_names))
    curves = {m: f1_threshold_curves(y, run.probs(m, "validation")) for m in models}
    for j, (ax, lab) in enumerate(zip(axes, run.label_names)):
        for m in models:
            thr, f1 = curves[m]
            ok = f1[:, j] >= 0
            ax.plot(thr[ok, j], f1[ok, j], color=run.color(m), **_line_style(run, m))
            t = run.decoder(m).thresholds[j]
            pred = run.probs(m, "validation")[:, j] >= t
            denom = pred.sum() + y[:, j].sum()
            ax.plot([t], [2 * (pred & (y[:, j] > 0)).sum() / denom if denom else 0.0], "o",
                    color=run.color(m), mec="k", ms=6)
            ax.axvline(t, color=run.color(m), ls="--", lw=0.8)
        ax.axvline(DEFAULT_THRESHOLD, color="grey", ls=":", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{lab} (n={int(y[:, j].sum())})")
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.supxlabel("threshold")
    fig.supylabel(f"{rows} F1")
    _model_legend(fig, run, models)
    source = ("every training text's out-of-fold prediction (from a fold model that never saw it; for a combiner, "
              "its combination of those)" if run.oof else "the validation split")
    return figure_html(png_uri(fig), f"{rows} F1 against the decision threshold, per label",
                       f"{rows.capitalize()} F1 of each label for every threshold, computed on {source}; dot and "
                       "dashed line: the calibrated threshold (before the decoding rules); dotted grey: 0.5. "
                       "n = positives.")


def pr_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Precision, recall (from high to low thresholds, starting at recall 0 and precision 1) and average
    precision of one label, the same numbers as sklearn's ``precision_recall_curve`` (reversed) and
    ``average_precision_score``, from one sort (sklearn's input checks cost seconds over dozens of
    curves)."""
    y = np.asarray(y) > 0
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]  # the last position of each run of equal probabilities
    tp = np.cumsum(ys)[last].astype(np.float64)
    fp = np.cumsum(~ys)[last].astype(np.float64)
    n_pos = max(int(y.sum()), 1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return np.r_[1.0, precision], np.r_[0.0, recall], ap


def section_pr(run: RunData) -> str:
    y, models = run.gold("validation"), run.with_probs("validation")
    if y is None or not models:
        return note("predictions.npz with validation gold and probabilities is missing: no precision-recall curves.")
    rows = run.rows_name
    fig, axes = _grid(len(run.label_names))
    for j, (ax, lab) in enumerate(zip(axes, run.label_names)):
        if y[:, j].sum() == 0:
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", transform=ax.transAxes)
        for m in models if y[:, j].sum() else []:
            p = run.probs(m, "validation")[:, j]
            prec, rec, ap = pr_curve(y[:, j], p)
            ax.plot(rec, prec, color=run.color(m), drawstyle="steps-post", label=f"AP {ap:.2f}", **_line_style(run, m))
        ax.axhline(y[:, j].mean(), color="grey", ls=":", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=lab)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if y[:, j].sum():
            ax.legend(fontsize=7, loc="lower left", handlelength=1)
    fig.supxlabel(f"recall ({rows})")
    fig.supylabel(f"precision ({rows})")
    _model_legend(fig, run, models)
    return figure_html(png_uri(fig), f"precision-recall curves per label on the {rows} rows",
                       f"Precision-recall curves on the {len(y)} {rows} rows; AP = average precision; "
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
    if len(run.label_names) < 2:
        return note("a single label: no co-occurrence.")
    y = (np.asarray(y) > 0).astype(int)
    pred = run.decoder(run.best).decode(p).astype(int)
    gold_c, pred_c = y.T @ y, pred.T @ pred
    off = ~np.eye(len(run.label_names), dtype=bool)
    vmax = max(int(gold_c[off].max(initial=0)), int(pred_c[off].max(initial=0)), 1)
    diff = pred_c - gold_c
    dmax = max(int(np.abs(diff[off]).max(initial=0)), 1)
    k = len(run.label_names)
    fig = _figure(figsize=(14, max(3.2, 0.32 * k + 1.8)), layout="constrained")
    axes = fig.subplots(1, 3)
    im = _heatmap(axes[0], gold_c, run.label_names, "gold", "Blues", 0, vmax)
    _heatmap(axes[1], pred_c, run.label_names, f"predicted by {run.best} (calibrated)", "Blues", 0, vmax)
    fig.colorbar(im, ax=axes[:2], shrink=0.8, label="texts with both labels")
    im_d = _heatmap(axes[2], diff, run.label_names, "predicted − gold", "RdBu_r", -dmax, dmax)
    fig.colorbar(im_d, ax=axes[2], shrink=0.8, label="difference")
    name = run.split_name(split)
    return figure_html(png_uri(fig), f"gold and predicted label co-occurrence on {name}",
                       f"Number of {name} texts carrying both labels; diagonal (grey): texts with the label.")


def section_members(run: RunData) -> str:
    members = run.metrics.get("members") if run.schema >= 2 else None
    if not members:
        return note("metrics.json records no cross-fitted members (a schema-1 run folder): no fold timings.")
    timings = run.metrics.get("timings_s", {})
    plan = (run.selection.get("folds") or {})
    n_folds = max(int(v.get("folds") or 0) for v in members.values())
    header = ["member", "folds", "fold plan"] + [f"fold {i + 1} (s)" for i in range(n_folds)] + \
             ["sum of folds (s)", "mean per fold (s)", "step total (s)"]
    rows = []
    for name, info in members.items():
        secs = [float(s) for s in info.get("fold_seconds") or []]
        plan_name = "transformer" if name == "transformer" and "transformer" in plan else "default"
        row: list[Any] = [name, int(info.get("folds") or len(secs)),
                          f"{plan_name} (K={plan.get(plan_name, '?')})"]
        row += [Num(f"{s:.1f}") for s in secs] + [None] * (n_folds - len(secs))
        row += [Num(f"{sum(secs):.1f}") if secs else None, Num(f"{np.mean(secs):.1f}") if secs else None,
                _plain(timings.get(f"member_{name}"))]
        rows.append(row)
    out = [table_html(header, rows),
           muted(("Each member is fitted once per fold of its plan and predicts the fold it did not see; "
                  "test and out-of-domain probabilities are the mean of its fold models. " if run.oof else
                  "Each member is fitted once on the training part and predicts the validation split. ")
                 + "step total: the member's whole step in timings_s (fits plus predictions).")]
    # per-fold training information (the transformer's Trainer statistics)
    for name, info in members.items():
        training = info.get("training")
        if not training or not any(training):
            continue
        keys = list(dict.fromkeys(k for t in training if t for k in t))
        trows = [[k] + [_plain(t.get(k)) if t else None for t in training] for k in keys]
        out.append(f"<h3>{esc(name)}: training per fold</h3>"
                   + table_html(["statistic", *[f"fold {i + 1}" for i in range(len(training))]], trows))
    return "".join(out)


def section_training(run: RunData) -> str:
    train = [e for e in run.trainer_log if "loss" in e and "step" in e]
    evals = [e for e in run.trainer_log if "eval_macro_f1" in e and "step" in e]
    out = []
    stats = run.metrics.get("training") or next((m["training"] for m in run.models.values()
                                                 if isinstance(m.get("training"), dict)), {})
    if stats:
        out.append(table_html(["statistic", "value"], [[k, _plain(v)] for k, v in stats.items()]))
    if not train and not evals:
        return "".join(out) + note("trainer_log.json is missing or empty: no training curves.")
    fig = _figure(figsize=(13, 3.8), layout="constrained")
    ax_loss, ax_f1 = fig.subplots(1, 2)
    color = run.color("transformer") if "transformer" in run.colors else "C1"
    if train:
        ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], label="training loss", color=color)
    if any("eval_loss" in e for e in evals):
        ev = [e for e in evals if "eval_loss" in e]
        ax_loss.plot([e["step"] for e in ev], [e["eval_loss"] for e in ev], "o--", label="validation loss",
                     color="#444444")
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    ax_loss.legend()
    lr = [e for e in train if "learning_rate" in e]
    if evals:
        steps, f1 = [e["step"] for e in evals], [e["eval_macro_f1"] for e in evals]
        ax_f1.plot(steps, f1, "o-", color=color)
        b = int(np.argmax(f1))
        ax_f1.annotate(f"best {f1[b]:.3f}", (steps[b], f1[b]), textcoords="offset points", xytext=(0, 8), ha="center")
        ax_f1.margins(x=0.08)
        lo = max(0.0, min(f1) - 0.05)
        ax_f1.set_ylim(lo, max(min(1.02, max(f1) + 0.08), lo + 0.1))
        ax_f1.set(xlabel="step", ylabel="macro-F1 at 0.5", title="Validation macro-F1 (threshold 0.5)")
        right = "validation macro-F1 at each evaluation"
    elif lr:
        ax_f1.plot([e["step"] for e in lr], [e["learning_rate"] for e in lr], color=color)
        ax_f1.set(xlabel="step", ylabel="learning rate", title="Learning rate (no evaluation during training)")
        right = ("the learning rate (the fold was not evaluated while training: cross-fitted folds train for a "
                 "fixed budget and are scored out-of-fold)")
    else:
        ax_f1.set_visible(False)
        right = "no evaluation was logged"
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
    k_tr = ((run.metrics.get("members") or {}).get("transformer") or {}).get("folds") or 1
    first = " of the first transformer fold" if run.schema >= 2 and k_tr > 1 else ""
    out.append(figure_html(png_uri(fig), "training loss and validation macro-F1 or learning rate per step",
                           f"From the Trainer's log history{first}: training loss every logging step; right: {right}."))
    return "".join(out)


def section_config(run: RunData) -> str:
    config = {k: v for k, v in run.config.items() if k != "versions"}
    versions = run.config.get("versions", {})
    timings = run.metrics.get("timings_s", {})
    out = [table_html(["step", "seconds"], [[k, _plain(round(v, 1)) if isinstance(v, float) else _plain(v)]
                                             for k, v in timings.items()]) if timings
           else note("no timings recorded."),
           "<details><summary>config.json</summary>"
           f"<pre>{esc(json.dumps(config, indent=2, ensure_ascii=False))}</pre></details>"
           if config else note("config.json is missing."),
           "<h3>Versions</h3>" + (table_html(["package", "version"], [[k, v] for k, v in versions.items()])
                                  if versions else note("no versions recorded."))]
    return "".join(out)


def section_errors(run: RunData) -> str:
    y, p = run.gold("validation"), run.probs(run.best, "validation")
    if y is None or p is None or len(run.texts) != len(y):
        return note("predictions.npz or validation_texts.json is missing (or they disagree): no error examples.")
    rows_name = run.rows_name
    per_label = run.models[run.best]["validation"]["per_label"]
    weakest = sorted(run.label_names, key=lambda lab: per_label[lab]["f1"])[:N_WEAK]
    dec = run.decoder(run.best)
    pred = dec.decode(p)
    names = np.array(run.label_names)
    out = [muted(f"The {len(weakest)} labels with the lowest {rows_name} F1 for {run.best} (its {rows_name} "
                 f"predictions, decoded with its calibration); the most confident errors first (largest distance "
                 f"between probability and threshold).")]
    for lab in weakest:
        j = run.label_names.index(lab)
        wrong = np.flatnonzero(y[:, j] != pred[:, j])
        wrong = wrong[np.argsort(-np.abs(p[wrong, j] - dec.thresholds[j]), kind="stable")]
        n_fn = int((y[wrong, j] == 1).sum())
        out.append(f"<h3>{esc(lab)}: F1 {per_label[lab]['f1']:.3f}; {n_fn} missed, {len(wrong) - n_fn} false alarms "
                   f"(threshold {dec.thresholds[j]:.2f})</h3>")
        rows = [[str(run.texts[i].get("id", i)), "missed" if y[i, j] else "false alarm", TextCell(run.texts[i]["text"]),
                 ", ".join(names[y[i] > 0]) or "—", ", ".join(names[pred[i] > 0]) or "—", float(p[i, j])]
                for i in wrong[:MAX_EXAMPLES]]
        out.append(table_html(["id", "error", "text", "gold", "predicted", f"p({lab})"], rows) if rows
                   else note("no errors for this label."))
    return "".join(out)


def section_student(run: RunData) -> str:
    """Teacher and distilled student side by side (``emitlab distill``)."""
    d = run.distill
    teacher, student, speed, size = d["teacher"], d["student"], d.get("speed") or {}, d.get("size_bytes") or {}

    def f1(m: dict, key: str) -> Any:
        return (m.get(key) or {}).get("macro_f1")

    kept = [m for m in student.get("members", []) if m != "transformer"]
    name = "student" + "".join(" + " + m for m in kept)
    rows = [[f"teacher ({teacher['model']})", f1(teacher, "test"), f1(teacher, "ood_proxy"),
             speed.get("teacher_texts_per_s"), round(size.get("teacher", 0) / 1e6, 1)],
            [name, f1(student, "test"), f1(student, "ood_proxy"), speed.get("student_texts_per_s"),
             round(size.get("student", 0) / 1e6, 1)]]
    if "network_alone" in student:  # the same network without the kept members (not timed apart)
        alone = student["network_alone"]
        rows.append(["student network alone", f1(alone, "test"), f1(alone, "ood_proxy"), None, None])
    header = ["model", "test macro-F1", "OOD proxy macro-F1", f"texts/s ({speed.get('texts', 0)} test texts)",
              "size (MB)"]
    targets = d.get("targets") or {}
    out = [table_html(header, rows),
           muted(f"Student targets: gold weight {targets.get('gold_weight')} with the teacher's out-of-fold "
                 f"probabilities for {targets.get('with_teacher_out_of_fold')} training texts; transfer: "
                 f"{targets.get('transfer')}. Its epoch and calibration were chosen on "
                 f"{targets.get('held_out_for_epoch_and_calibration')} held-out training texts; speeds measured "
                 "one after the other in one process.")]
    t_lab, s_lab = (teacher.get("test") or {}).get("per_label_f1"), (student.get("test") or {}).get("per_label_f1")
    if t_lab and s_lab:
        labels = [lab for lab in run.label_names if lab in t_lab and lab in s_lab]
        fig = _figure(figsize=(8, 3), layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(labels))
        ax.bar(x - 0.2, [t_lab[lab] for lab in labels], 0.4, label=f"teacher ({teacher['model']})")
        ax.bar(x + 0.2, [s_lab[lab] for lab in labels], 0.4, label=name)
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_ylabel("test F1")
        ax.legend()
        out.append(figure_html(png_uri(fig), "per-label test F1, teacher and student",
                               "Per-label test F1 of the teacher (the run's chosen model) and the student."))
    return "".join(out)


SECTIONS = [
    ("summary", "Summary", section_summary),
    ("candidates", "Candidates: nested out-of-fold macro-F1", section_candidates),
    ("distribution", "Label distribution", section_distribution),
    ("per-label", "Per-label F1: members and chosen combination", section_per_label),
    ("combination", "The chosen combination and its weights", section_combination),
    ("thresholds", "F1 against threshold", section_thresholds),
    ("pr", "Precision-recall curves", section_pr),
    ("cooccurrence", "Label co-occurrence: gold vs predicted", section_cooccurrence),
    ("members", "Members: folds and timings", section_members),
    ("student", "Distilled student: teacher and student", section_student),
    ("training", "Training curves", section_training),
    ("errors", "Misclassified examples", section_errors),
    ("config", "Configuration, timings and versions", section_config),
]


def _title(run: RunData, sid: str, title: str) -> str:
    """Section titles that name the rows they are computed on."""
    if sid in ("thresholds", "pr", "errors"):
        return f"{title} ({run.rows_name})"
    if sid == "candidates":
        return f"Candidates: {run.nested_name}"
    return title


#: Sections shown only when the run folder holds what they draw (``emitlab distill``'s record).
OPTIONAL_SECTIONS = {"student": lambda run: bool(run.distill)}


def sections(run: RunData) -> list[tuple]:
    """The sections of this run's report, in order."""
    return [s for s in SECTIONS if OPTIONAL_SECTIONS.get(s[0], lambda run: True)(run)]


def section_titles(run: RunData) -> dict[str, str]:
    """Section id -> the title the report gives it for this run."""
    return {sid: _title(run, sid, title) for sid, title, _ in sections(run)}


def render_report(run: RunData) -> str:
    parts, links = [], []
    for sid, title, fn in sections(run):
        t = _title(run, sid, title)
        links.append(f'<a href="#{sid}">{esc(t)}</a>')
        parts.append(f'<section id="{sid}"><h2>{esc(t)}</h2>{fn(run)}</section>')
    best = run.models[run.best]
    nested = run.nested()
    headline = f"chosen: {run.best}"
    if run.best in nested:
        headline += f", nested OOF macro-F1 {nested[run.best]:.4f}"
    headline += f", {run.rows_name} macro-F1 {best['validation']['macro_f1']:.4f}"
    if "test" in best:
        headline += f", test macro-F1 {best['test']['macro_f1']:.4f}"
    task = run.metrics.get("task", "?")
    members = f" · members {', '.join(run.members)}" if run.schema >= 2 and run.members else ""
    meta = (f"task {task} · {len(run.label_names)} labels{members} · {headline} · "
            f"written {datetime.now():%Y-%m-%d %H:%M}")
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
