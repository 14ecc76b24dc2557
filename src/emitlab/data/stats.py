"""Descriptive statistics of a multilabel dataset: prevalence, co-occurrence, lengths.

Pure functions on texts + a 0/1 label matrix; loading EMit is done elsewhere.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emitlab.io import atomic_path

__all__ = ["DatasetStats", "compute_stats", "format_stats", "plot_stats"]


@dataclass
class DatasetStats:
    n_texts: int
    label_names: list[str]
    prevalence: pd.DataFrame  # index = label; columns: count, percent
    cooccurrence: pd.DataFrame  # k x k counts; diagonal = label counts
    labels_per_text: dict[int, int]  # {n_labels: n_texts}, 0 included
    length_chars: dict[str, float]
    length_words: dict[str, float]
    pos_weight: dict[str, float]  # neg / pos per label (inf when a label never occurs)
    name: str = ""
    word_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (non-finite floats become None)."""

        def num(x: Any) -> Any:
            x = float(x)
            return x if np.isfinite(x) else None

        return {
            "name": self.name,
            "n_texts": int(self.n_texts),
            "label_names": list(self.label_names),
            "prevalence": {
                lab: {"count": int(r["count"]), "percent": num(r["percent"])}
                for lab, r in self.prevalence.iterrows()
            },
            "cooccurrence": {
                lab: {c: int(v) for c, v in row.items()} for lab, row in self.cooccurrence.iterrows()
            },
            "labels_per_text": {str(k): int(v) for k, v in self.labels_per_text.items()},
            "length_chars": {k: num(v) for k, v in self.length_chars.items()},
            "length_words": {k: num(v) for k, v in self.length_words.items()},
            "pos_weight": {k: num(v) for k, v in self.pos_weight.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetStats":
        """Rebuild from :meth:`to_dict` output. The per-text word lengths are not stored there,
        so ``word_lengths`` stays empty unless ``d`` carries a ``"word_lengths"`` list."""
        names = list(d["label_names"])
        prev = d.get("prevalence", {})
        prevalence = pd.DataFrame(
            {
                "count": [int(prev.get(lab, {}).get("count", 0)) for lab in names],
                "percent": [float(prev.get(lab, {}).get("percent") or 0.0) for lab in names],
            },
            index=pd.Index(names, name="label"),
        )
        cooc_d = d.get("cooccurrence", {})
        cooc = pd.DataFrame(
            [[int(cooc_d.get(r, {}).get(c, 0)) for c in names] for r in names], index=names, columns=names
        )
        empty = _summary(np.zeros(0))
        return cls(
            n_texts=int(d["n_texts"]),
            label_names=names,
            prevalence=prevalence,
            cooccurrence=cooc,
            labels_per_text={int(k): int(v) for k, v in d.get("labels_per_text", {}).items()},
            length_chars={**empty, **{k: float(v or 0.0) for k, v in d.get("length_chars", {}).items()}},
            length_words={**empty, **{k: float(v or 0.0) for k, v in d.get("length_words", {}).items()}},
            pos_weight={k: float("inf") if v is None else float(v) for k, v in d.get("pos_weight", {}).items()},
            name=d.get("name", ""),
            word_lengths=np.asarray(d.get("word_lengths", []), dtype=int),
        )


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {k: 0.0 for k in ("min", "mean", "median", "p95", "max")}
    return {
        "min": float(values.min()),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def compute_stats(
    texts: Sequence[str], labels: np.ndarray, label_names: list[str], name: str = ""
) -> DatasetStats:
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape != (len(texts), len(label_names)):
        raise ValueError(f"labels shape {y.shape} != ({len(texts)}, {len(label_names)})")
    y = (y > 0).astype(np.int64)
    n, k = y.shape
    counts = y.sum(axis=0)
    percent = counts / n * 100 if n else np.zeros(k)
    prevalence = pd.DataFrame({"count": counts, "percent": percent}, index=pd.Index(label_names, name="label"))
    cooc = pd.DataFrame(y.T @ y, index=label_names, columns=label_names)
    per_text = np.bincount(y.sum(axis=1), minlength=k + 1)
    labels_per_text = {i: int(c) for i, c in enumerate(per_text) if c or i == 0}
    with np.errstate(divide="ignore"):
        pw = np.where(counts > 0, (n - counts) / np.maximum(counts, 1), np.inf)
    chars = np.array([len(t) for t in texts], dtype=int)
    words = np.array([len(str(t).split()) for t in texts], dtype=int)
    return DatasetStats(
        n_texts=n,
        label_names=list(label_names),
        prevalence=prevalence,
        cooccurrence=cooc,
        labels_per_text=labels_per_text,
        length_chars=_summary(chars),
        length_words=_summary(words),
        pos_weight={lab: float(w) for lab, w in zip(label_names, pw)},
        name=name,
        word_lengths=words,
    )


def format_stats(stats: DatasetStats) -> str:
    """Plain-text (no ANSI) tables: prevalence, labels per text, lengths."""
    from rich.console import Console
    from rich.table import Table

    title = f"{stats.name + ': ' if stats.name else ''}{stats.n_texts} texts"
    prev = Table(title=f"Label prevalence ({title})")
    for col in ("label", "count", "%", "pos_weight"):
        prev.add_column(col, justify="left" if col == "label" else "right")
    for lab, row in stats.prevalence.iterrows():
        prev.add_row(lab, str(int(row["count"])), f"{row['percent']:.1f}", f"{stats.pos_weight[lab]:.2f}")

    lpt = Table(title="Labels per text")
    lpt.add_column("n labels", justify="right")
    lpt.add_column("texts", justify="right")
    lpt.add_column("%", justify="right")
    for n_lab, c in sorted(stats.labels_per_text.items()):
        lpt.add_row(str(n_lab), str(c), f"{100 * c / max(stats.n_texts, 1):.1f}")

    ln = Table(title="Text length")
    ln.add_column("unit")
    for col in ("min", "mean", "median", "p95", "max"):
        ln.add_column(col, justify="right")
    for unit, d in (("chars", stats.length_chars), ("words", stats.length_words)):
        ln.add_row(unit, *(f"{d[c]:.1f}" if c in ("mean", "p95") else f"{d[c]:.0f}" for c in d))

    console = Console(file=io.StringIO(), width=100, color_system=None, force_terminal=False, record=True)
    for table in (prev, lpt, ln):
        console.print(table)
    return console.export_text(styles=False)


def plot_stats(stats_list: list[DatasetStats] | DatasetStats, path: str | Path) -> Path:
    """Write a PNG: prevalence bars, co-occurrence heatmap (first dataset), length histogram."""
    import matplotlib
    from matplotlib.figure import Figure

    if isinstance(stats_list, DatasetStats):
        stats_list = [stats_list]
    if not stats_list:
        raise ValueError("plot_stats needs at least one DatasetStats")
    first = stats_list[0]
    labels = first.label_names
    k = len(labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(17, max(6.0, 0.55 * k + 3)), dpi=120, layout="constrained")
    gs = fig.add_gridspec(2, 2, width_ratios=[0.85, 1.3], height_ratios=[3, 1])
    ax_bar = fig.add_subplot(gs[:, 0])
    ax_hm = fig.add_subplot(gs[0, 1])
    ax_len = fig.add_subplot(gs[1, 1])

    # Prevalence: horizontal grouped bars, first label on top.
    m = len(stats_list)
    height = 0.8 / m
    ypos = np.arange(k)
    colors = [f"C{i}" for i in range(m)]
    xmax = 0.0
    for i, st in enumerate(stats_list):
        pct = st.prevalence["percent"].reindex(labels).fillna(0).to_numpy()
        xmax = max(xmax, float(pct.max(initial=0)))
        ys = ypos - 0.4 + height * (i + 0.5)
        tag = st.name or f"dataset {i + 1}"
        bars = ax_bar.barh(ys, pct, height=height * 0.95, color=colors[i], label=f"{tag} (n={st.n_texts})")
        cnt = st.prevalence["count"].reindex(labels).fillna(0).to_numpy()
        ax_bar.bar_label(bars, labels=[f"{p:.1f}% ({c:.0f})" for p, c in zip(pct, cnt)], padding=3,
                         fontsize=8 if m > 1 else 9)
    ax_bar.set_yticks(ypos, labels)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, xmax * 1.3 + 1)
    ax_bar.set_xlabel("texts with label (%)")
    ax_bar.set_title("Label prevalence")
    ax_bar.grid(axis="x", alpha=0.3)
    if m > 1:
        ax_bar.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=m, frameon=False)

    # Co-occurrence: % of the row label's texts that also carry the column label.
    cooc = first.cooccurrence.to_numpy().astype(float)
    diag = np.diag(cooc).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(diag[:, None] > 0, 100 * cooc / diag[:, None], 0.0)
    masked = np.ma.masked_array(norm, mask=np.eye(k, dtype=bool))
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#d0d0d0")
    vmax = max(float(masked.max()) if masked.count() else 0.0, 1.0)
    im = ax_hm.imshow(masked, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    for r in range(k):
        for c in range(k):
            if r == c:
                ax_hm.text(c, r, f"n={int(diag[r])}", ha="center", va="center", fontsize=7, color="#444")
                continue
            v = norm[r, c]
            ax_hm.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=8,
                       color="white" if v > 0.6 * vmax else "black")
    ax_hm.set_xticks(range(k), labels, rotation=40, ha="right")
    ax_hm.set_yticks(range(k), labels)
    ax_hm.set_xlabel("co-occurring label")
    ax_hm.set_ylabel("label")
    ax_hm.set_title(f"Co-occurrence, % of row label ({first.name or 'dataset 1'}; diagonal = label count)")
    fig.colorbar(im, ax=ax_hm, label="% of row label", shrink=0.9)

    # Length histogram (words).
    for i, st in enumerate(stats_list):
        w = st.word_lengths
        if w.size:
            bins = np.arange(0, max(int(w.max()), 1) + 2)
            ax_len.hist(w, bins=bins, alpha=0.6 if m > 1 else 0.9, color=colors[i], density=m > 1,
                        label=st.name or f"dataset {i + 1}")
    ax_len.set_xlabel("text length (words)")
    ax_len.set_ylabel("density" if m > 1 else "texts")
    ax_len.set_title(f"Text length: median {first.length_words['median']:.0f} words, "
                     f"p95 {first.length_words['p95']:.0f}")
    if m > 1:
        ax_len.legend()

    names = ", ".join(f"{st.name or f'dataset {i + 1}'}: n={st.n_texts}" for i, st in enumerate(stats_list))
    fig.suptitle(f"Dataset statistics ({names})", fontsize=14)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path
