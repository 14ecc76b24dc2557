"""Extra labelled corpora beside EMit: adapters that map each one onto the task's labels.

``--extra-data SPEC`` (repeatable) names a corpus and, optionally, its weight: ``NAME[:WEIGHT]``.
``NAME`` is one of the named corpora below, read from ``--extra-data-dir`` (default
``$EMITLAB_EXTRA_DATA``, else ``../shared/data``), or the path of any CSV/JSONL/Parquet file with a
``text`` column and one 0/1 column per label it annotates (labels without a column are masked).

=====================  ====================================================  ==================
name                   files (under the extra-data folder)                   labels it annotates
=====================  ====================================================  ==================
``multiemotions-it``   ``multiemotions_it/MultiEmotions-It.tsv``              all ten (task A)
``xed-it``             ``xed/it-projections.tsv``                              8 Plutchik emotions
``xed-en``             ``xed/en-annotated.tsv`` + ``xed/neu_en.txt``           8 emotions + Neutral
=====================  ====================================================  ==================

An :class:`ExtraCorpus` holds 0/1 ``labels`` and a boolean ``mask`` of the same shape: ``mask[i, j]``
is False where the corpus does not annotate label ``j`` (XED has no Love; its Italian projections no
Neutral). A masked cell is *unknown*, not 0: every member leaves it out of its loss (the
transformer's BCE gets a zero weight there, the linear members fit each label on the rows that
annotate it). ``weight`` multiplies the corpus' rows in every loss.

**MultiEmotions-It's Love.** The corpus names Plutchik's dyads and sets *both* component columns for
each (LOVE rows have GIOIA = FIDUCIA = 1 in 554 of 560), whereas EMit's annotators mark Love mostly
alone (EMit train: 54 of 633 Love texts also carry Joy and Trust). We follow EMit's convention: a
LOVE row gets Love = 1, and Joy (Trust) only where another item of its ``EMOTIONS`` list names joy
(trust) itself or a dyad containing it (:data:`DYADS`). A row with no emotion at all is Neutral.

Extra texts equal to an evaluation text (the in-domain test file, the out-of-domain file) after
normalisation (:func:`~emitlab.data.duplicates.loose_key`: the default cleaning, lower case,
punctuation and spacing ignored) are dropped, and the counts kept
(:func:`drop_evaluation_duplicates`): 24 MultiEmotions-It rows repeat 13 short texts of EMit's
out-of-domain file ("Bellissima", "Bravissimo", "❤️❤️❤️❤️", ...).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from emitlab.errors import DataError, SettingsError
from emitlab.labels import NEUTRAL, TASK_A_LABELS

#: Folder of the extra corpora when ``--extra-data-dir`` is not given.
EXTRA_DATA_ENV = "EMITLAB_EXTRA_DATA"
DEFAULT_EXTRA_DATA_DIR = "../shared/data"

#: The corpus whose out-of-fold (or zero-shot) score stands in for EMit's out-of-domain test: the
#: same domain (YouTube/Facebook comments on music videos and ads) and annotation family.
PROXY_CORPUS = "multiemotions-it"
#: Its file, inside the extra-data folder.
PROXY_FILE = "multiemotions_it/MultiEmotions-It.tsv"

#: XED's label codes (1..8), in EMit's names.
XED_CODES = {1: "Anger", 2: "Anticipation", 3: "Disgust", 4: "Fear", 5: "Joy", 6: "Sadness", 7: "Surprise",
             8: "Trust"}

#: MultiEmotions-It's basic-emotion columns, in EMit's names.
MEI_COLUMNS = {"RABBIA": "Anger", "TREPIDAZIONE": "Anticipation", "DISGUSTO": "Disgust", "PAURA": "Fear",
               "GIOIA": "Joy", "TRISTEZZA": "Sadness", "SORPRESA": "Surprise", "FIDUCIA": "Trust"}

#: Plutchik's basic emotions and dyads (primary, secondary, tertiary) as the EMit emotions they
#: combine; the names MultiEmotions-It's ``EMOTIONS`` column uses (OPTIMIST is a variant spelling
#: there, ALARM and AGGRESSION Plutchik's other names for awe and aggressiveness).
DYADS: dict[str, tuple[str, ...]] = {
    "ANGER": ("Anger",), "ANTICIPATION": ("Anticipation",), "DISGUST": ("Disgust",), "FEAR": ("Fear",),
    "JOY": ("Joy",), "SADNESS": ("Sadness",), "SURPRISE": ("Surprise",), "TRUST": ("Trust",),
    "LOVE": ("Joy", "Trust"), "SUBMISSION": ("Trust", "Fear"), "AWE": ("Fear", "Surprise"),
    "ALARM": ("Fear", "Surprise"), "DISAPPOINTMENT": ("Surprise", "Sadness"), "DISAPPROVAL": ("Surprise", "Sadness"),
    "REMORSE": ("Sadness", "Disgust"), "CONTEMPT": ("Disgust", "Anger"), "AGGRESSIVENESS": ("Anger", "Anticipation"),
    "AGGRESSION": ("Anger", "Anticipation"), "OPTIMISM": ("Anticipation", "Joy"), "OPTIMIST": ("Anticipation", "Joy"),
    "GUILT": ("Joy", "Fear"), "CURIOSITY": ("Trust", "Surprise"), "DESPAIR": ("Fear", "Sadness"),
    "UNBELIEF": ("Surprise", "Disgust"), "ENVY": ("Sadness", "Anger"), "CYNICISM": ("Disgust", "Anticipation"),
    "PRIDE": ("Anger", "Joy"), "HOPE": ("Anticipation", "Trust"), "DELIGHT": ("Joy", "Surprise"),
    "SENTIMENTALITY": ("Trust", "Sadness"), "SHAME": ("Fear", "Disgust"), "OUTRAGE": ("Surprise", "Anger"),
    "PESSIMISM": ("Sadness", "Anticipation"), "MORBIDNESS": ("Disgust", "Joy"), "DOMINANCE": ("Anger", "Trust"),
    "ANXIETY": ("Anticipation", "Fear"),
}


#: ``--domain-marker``: the source domain of each corpus (the word a member sees before each of its texts);
#: EMit's training and test texts are tweets, its out-of-domain file is in MultiEmotions-It's domain.
TASK_DOMAIN = "twitter"
OOD_DOMAIN = "youtube"
DOMAINS = {PROXY_CORPUS: OOD_DOMAIN, "xed-it": "subtitles", "xed-en": "subtitles"}


def domain_marker(domain: str) -> str:
    """The prefix put before a cleaned text of ``domain`` (one word no text holds: ``dominioyoutube``)."""
    return f"dominio{domain} "


@dataclass
class ExtraCorpus:
    """One extra corpus on the task's labels: ``labels`` 0/1 and ``mask`` (True = annotated), both
    ``(n, n_labels)``; ``weight`` multiplies its rows in every loss; ``dropped`` counts the rows
    removed because they equal an evaluation text (per evaluation set); ``skipped_lines`` the
    lines of its file that are not rows (XED's alignment metadata); ``gold`` the corpus' own
    annotation where ``--extra-data-labels`` masks labels it annotates (None: ``labels``), what its
    rows are scored against (:attr:`annotation`); ``sampled_from`` its rows before ``--extra-data-rows``
    drew a sample (0: not sampled)."""

    name: str
    ids: list[str]
    texts: list[str]
    labels: np.ndarray
    mask: np.ndarray
    label_names: list[str]
    weight: float = 1.0
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    skipped_lines: int = 0
    gold: np.ndarray | None = None
    sampled_from: int = 0

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.mask = np.asarray(self.mask, dtype=bool)
        shape = (len(self.texts), len(self.label_names))
        gold_shape = shape if self.gold is None else np.shape(self.gold)
        if (self.labels.shape != shape or self.mask.shape != shape or gold_shape != shape
                or len(self.ids) != len(self.texts)):
            raise ValueError(f"{self.name}: labels {self.labels.shape}, mask {self.mask.shape}, gold {gold_shape}, "
                             f"{len(self.ids)} ids for {len(self.texts)} texts; expected {shape}")
        if self.gold is not None:
            self.gold = np.asarray(self.gold, dtype=np.int64)
        self.labels[~self.mask] = 0  # an unknown cell is never a positive (nor one left out of training)

    @property
    def annotation(self) -> np.ndarray:
        """The corpus' own labels (0/1), those it is scored against: ``labels`` before
        ``--extra-data-labels`` masked any it annotates."""
        return self.labels if self.gold is None else self.gold

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def domain(self) -> str:
        """Its source domain (:data:`DOMAINS`; a table file is a domain of its own, named after it)."""
        return DOMAINS.get(self.name) or re.sub(r"\W+", "", Path(self.name).stem.lower()) or "other"

    @property
    def is_proxy(self) -> bool:
        """Its rows get folds and out-of-fold predictions: the out-of-domain proxy score."""
        return self.name == PROXY_CORPUS

    def subset(self, keep: np.ndarray) -> "ExtraCorpus":
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return ExtraCorpus(self.name, [self.ids[i] for i in idx], [self.texts[i] for i in idx], self.labels[idx],
                           self.mask[idx], list(self.label_names), self.weight, self.source, dict(self.dropped),
                           self.skipped_lines, None if self.gold is None else self.gold[idx], self.sampled_from)

    def summary(self) -> dict[str, Any]:
        """What the log, ``metrics.json`` and the report say of it."""
        annotated = self.mask.any(0)
        return {"name": self.name, "source": self.source, "rows": len(self), "weight": self.weight,
                "masked_labels": [n for n, a in zip(self.label_names, annotated) if not a],
                "positives": {n: int(self.labels[:, j].sum()) for j, n in enumerate(self.label_names) if annotated[j]},
                "dropped_equal_to_evaluation": dict(self.dropped), "skipped_lines": self.skipped_lines,
                "sampled_from": self.sampled_from or None}


# --------------------------------------------------------------------------------------
# Specs


def parse_spec(spec: str) -> tuple[str, float]:
    """``"multiemotions-it:0.5"`` -> ``("multiemotions-it", 0.5)``; no weight means 1."""
    name, weight = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            name, weight = head, float(tail)
        except ValueError:  # a colon of a path ("C:/data/x.csv"), not a weight
            pass
    if not name.strip():
        raise SettingsError(f"--extra-data {spec!r}: no corpus name or file")
    if not np.isfinite(weight) or weight <= 0:
        raise SettingsError(f"--extra-data {spec!r}: the weight must be a number > 0, got {tail!r}")
    return name.strip(), float(weight)


def extra_data_dir(given: str = "") -> Path:
    """``--extra-data-dir``, else ``$EMITLAB_EXTRA_DATA``, else ``../shared/data``."""
    return Path(given or os.environ.get(EXTRA_DATA_ENV, "") or DEFAULT_EXTRA_DATA_DIR)


def load_extra(spec: str, folder: Path, label_names: Sequence[str]) -> ExtraCorpus:
    """The corpus ``spec`` names (see the module docstring), on ``label_names``."""
    name, weight = parse_spec(spec)
    if name in ADAPTERS:
        if list(label_names) != TASK_A_LABELS:
            raise SettingsError(f"--extra-data {name}: annotates EMit task A's emotions; this task's labels are "
                                f"{', '.join(label_names)}")
        corpus = ADAPTERS[name](Path(folder))
    elif Path(name).suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        corpus = _from_table(Path(name), label_names)
    else:
        raise SettingsError(f"--extra-data {spec!r}: not a known corpus ({', '.join(ADAPTERS)}) nor a "
                            ".csv/.jsonl/.parquet file")
    corpus.weight = weight
    return corpus


def _need(path: Path, corpus: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: missing ({corpus} is read from --extra-data-dir or ${EXTRA_DATA_ENV}; "
                        "see the README for where to get it)")
    return path


def _label_index() -> dict[str, int]:
    return {n: j for j, n in enumerate(TASK_A_LABELS)}


# --------------------------------------------------------------------------------------
# Adapters


def load_multiemotions_it(folder: Path) -> ExtraCorpus:
    """MultiEmotions-It (Sprugnoli 2020), CC BY-NC-SA 4.0: every label annotated; Love after EMit's
    convention (module docstring)."""
    path = _need(folder / PROXY_FILE, PROXY_CORPUS)
    rows = _read_tsv_dicts(path, ["comment", "EMOTIONS", *MEI_COLUMNS])
    at = _label_index()
    labels = np.zeros((len(rows), len(TASK_A_LABELS)), dtype=np.int64)
    texts, ids = [], []
    for i, row in enumerate(rows):
        line = i + 2  # 1-based, after the header
        text = (row["comment"] or "").strip()
        if not text:
            raise DataError(f"{path}: line {line}, column 'comment': empty text")
        for col, label in MEI_COLUMNS.items():
            value = (row[col] or "0").strip()  # one row leaves RABBIA/PAURA empty: not marked
            if value not in ("0", "1"):
                raise DataError(f"{path}: line {line}, column {col!r}: expected 0 or 1, got {value!r}")
            labels[i, at[label]] = int(value)
        items = [e.strip().upper() for e in (row["EMOTIONS"] or "").split(" - ") if e.strip()]
        unknown = [e for e in items if e not in DYADS]
        if unknown:
            raise DataError(f"{path}: line {line}, column 'EMOTIONS': unknown emotion or dyad {unknown[0]!r}")
        if "LOVE" in items:
            labels[i, at["Love"]] = 1
            implied = {e for item in items if item != "LOVE" for e in DYADS[item]}
            for label in ("Joy", "Trust"):
                labels[i, at[label]] = int(label in implied)
        if labels[i].sum() == 0:
            labels[i, at[NEUTRAL]] = 1
        texts.append(text)
        ids.append(f"mei-{i + 1}")
    return ExtraCorpus(PROXY_CORPUS, ids, texts, labels, np.ones_like(labels, dtype=bool), list(TASK_A_LABELS),
                       source=str(path))


def load_xed_it(folder: Path) -> ExtraCorpus:
    """XED's Italian projections (CC BY 4.0): 8 emotions; Love and Neutral masked. Lines that are
    not ``text<TAB>codes`` (alignment metadata in the file, 363 lines) are skipped and counted."""
    path = _need(folder / "xed" / "it-projections.tsv", "xed-it")
    texts, codes, skipped = _read_xed(path)
    return _xed_corpus("xed-it", path, texts, codes, neutral=None, skipped=skipped)


def load_xed_en(folder: Path) -> ExtraCorpus:
    """XED's English gold (CC BY 4.0) through a multilingual encoder: the 8 emotions, plus its
    neutral lines (``neu_en.txt``: Neutral = 1, every emotion 0), so Neutral is annotated; Love
    masked."""
    path = _need(folder / "xed" / "en-annotated.tsv", "xed-en")
    neutral_path = _need(folder / "xed" / "neu_en.txt", "xed-en")
    texts, codes, skipped = _read_xed(path)
    neutral = []
    with open(neutral_path, encoding="utf-8", newline="") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 2 and parts[0].strip() == "9" and parts[1].strip():
                neutral.append(parts[1].strip())
            elif line.strip():
                skipped += 1
    return _xed_corpus("xed-en", path, texts, codes, neutral=neutral, skipped=skipped)


def _read_xed(path: Path) -> tuple[list[str], list[list[int]], int]:
    texts, codes, skipped = [], [], 0
    with open(path, encoding="utf-8", newline="") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            try:
                ints = [int(c) for c in parts[1].split(",")] if len(parts) == 2 else []
            except ValueError:
                ints = []
            if not ints or not parts[0].strip() or any(c not in XED_CODES for c in ints):
                skipped += bool(line.strip())
                continue
            texts.append(parts[0].strip())
            codes.append(ints)
    if not texts:
        raise DataError(f"{path}: no line of the form 'text<TAB>codes' (codes 1-8, comma-separated)")
    return texts, codes, skipped


def _xed_corpus(name: str, path: Path, texts: list[str], codes: list[list[int]], neutral: list[str] | None,
                skipped: int) -> ExtraCorpus:
    at = _label_index()
    n = len(texts) + len(neutral or [])
    labels = np.zeros((n, len(TASK_A_LABELS)), dtype=np.int64)
    for i, cs in enumerate(codes):
        labels[i, [at[XED_CODES[c]] for c in cs]] = 1
    mask = np.ones_like(labels, dtype=bool)
    mask[:, at["Love"]] = False
    if neutral is None:
        mask[:, at[NEUTRAL]] = False
    else:
        labels[len(texts):, at[NEUTRAL]] = 1
    all_texts = texts + list(neutral or [])
    return ExtraCorpus(name, [f"{name}-{i + 1}" for i in range(n)], all_texts, labels, mask, list(TASK_A_LABELS),
                       source=str(path), skipped_lines=skipped)


def _from_table(path: Path, label_names: Sequence[str]) -> ExtraCorpus:
    """Any table with a ``text`` column (and ``id``, optional): the label columns present are
    annotated, the others masked; at least one must be present."""
    from emitlab.data.loading import dataset_from_frame
    from emitlab.data.readers import read_frame

    if not path.is_file():
        raise DataError(f"{path}: missing (--extra-data file)")
    frame = read_frame(path, str(path))
    present = [n for n in label_names if n in frame.columns]
    if not present:
        raise DataError(f"{path}: no label column; an --extra-data file needs a 'text' column and at least one "
                        f"of {', '.join(label_names)} (0/1)")
    ds = dataset_from_frame(frame, str(path), label_cols=present)
    labels = np.zeros((len(ds), len(label_names)), dtype=np.int64)
    mask = np.zeros_like(labels, dtype=bool)
    for k, n in enumerate(present):
        labels[:, list(label_names).index(n)] = ds.labels[:, k]
        mask[:, list(label_names).index(n)] = True
    return ExtraCorpus(path.name, ds.ids, ds.texts, labels, mask, list(label_names), source=str(path))


def _read_tsv_dicts(path: Path, needed: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(map(repr, missing))} in the header")
            return list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


#: The named corpora: ``--extra-data NAME`` -> adapter reading it from the extra-data folder.
ADAPTERS: dict[str, Callable[[Path], ExtraCorpus]] = {
    PROXY_CORPUS: load_multiemotions_it,
    "xed-it": load_xed_it,
    "xed-en": load_xed_en,
}


def restrict_labels(corpus: ExtraCorpus, keep: np.ndarray) -> tuple[ExtraCorpus, ExtraCorpus]:
    """``corpus`` used for the labels ``keep`` (bool per label) only (``--extra-data-labels``, e.g.
    extra rows for rare emotions): ``(used, left)``, ``used`` its rows with a positive among them,
    the other labels masked (its ``gold`` keeps the corpus' own annotation, to score those rows
    against), ``left`` the rows it drops, unchanged (the proxy corpus' are still scored)."""
    keep = np.asarray(keep, dtype=bool)
    mask = corpus.mask & keep
    used = (corpus.labels.astype(bool) & mask).any(1)
    out = corpus.subset(used)
    out.gold = corpus.annotation[used]
    out.mask = mask[used]
    out.labels[~out.mask] = 0
    return out, corpus.subset(~used)


def sample_rows(corpus: ExtraCorpus, n: int, seed: int) -> ExtraCorpus:
    """At most ``n`` rows of ``corpus`` (``--extra-data-rows``): a random sample drawn with ``seed``, in
    the corpus' order; the corpus itself when it has no more, or when ``n`` is 0."""
    if n <= 0 or len(corpus) <= n:
        return corpus
    rows = np.sort(np.random.default_rng(seed).choice(len(corpus), size=n, replace=False))
    out = corpus.subset(rows)
    out.sampled_from = len(corpus)
    return out


# --------------------------------------------------------------------------------------
# Evaluation texts


def drop_evaluation_duplicates(corpus: ExtraCorpus, evaluation: dict[str, Sequence[str]],
                               key: Callable[[str], str]) -> ExtraCorpus:
    """``corpus`` without the rows whose ``key`` equals that of any text of ``evaluation`` (set name
    -> texts); ``dropped[set name]`` counts them (a row equal to texts of two sets counts in the
    first)."""
    keep = np.ones(len(corpus), dtype=bool)
    keys = [key(t) for t in corpus.texts]
    dropped = dict(corpus.dropped)
    for set_name, texts in evaluation.items():
        seen = {key(t) for t in texts} - {""}  # a text of punctuation alone repeats nothing
        hit = keep & np.array([k in seen for k in keys], dtype=bool)
        dropped[set_name] = int(hit.sum())
        keep &= ~hit
    out = corpus.subset(keep)
    out.dropped = dropped
    return out
