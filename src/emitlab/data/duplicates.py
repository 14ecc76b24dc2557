"""Duplicate texts: within the training file, and between it and each test file.

Why it matters: a test text that is also a training text scores what the model memorised,
not what it learned, so test macro-F1 is optimistic by that much; duplicates within the
training file count some texts twice and, when their labels differ, cap what any model can
reach on them. Two levels are reported: ``exact`` (the same string) and ``cleaned`` (equal
after :class:`~emitlab.data.cleaning.TextCleaner`, lower-casing and whitespace folding: the
same tweet with another link or another mention; exact duplicates are counted here too).
Nothing is removed: the report says what there is, the user decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from emitlab.data.cleaning import TextCleaner
from emitlab.data.loading import EmitData, TextDataset

TEST_SETS = ("test", "test_ood", "test_nolabel", "ood_nolabel")
LEVELS = ("exact", "cleaned")
_PUNCT = re.compile(r"[\W_]+")


def cleaned_key(text: str, cleaner: TextCleaner) -> str:
    """What ``cleaned`` compares: the cleaned text, lower-cased, runs of whitespace as one space."""
    return " ".join(cleaner(text).casefold().split())


def loose_key(text: str, cleaner: TextCleaner) -> str:
    """:func:`cleaned_key` with punctuation and symbols folded into spaces: "Bellissimo!" and
    "bellissimo" are one text. What extra training corpora are checked against the evaluation
    texts with (:func:`emitlab.data.extra.drop_evaluation_duplicates`), where missing a repeat
    costs more than dropping a near one."""
    return " ".join(_PUNCT.sub(" ", cleaned_key(text, cleaner)).split())


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _index(keys: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return out


def _within(ds: TextDataset, keys: Sequence[str], examples: int, exact: bool) -> dict[str, Any]:
    groups = sorted((rows for rows in _index(keys).values() if len(rows) > 1), key=lambda r: (-len(r), r[0]))
    out: dict[str, Any] = {"groups": len(groups), "rows": sum(map(len, groups))}
    if ds.labels is not None:
        out["label_conflicts"] = sum(any((ds.labels[i] != ds.labels[rows[0]]).any() for i in rows) for rows in groups)
    if not exact:  # show what exact matching misses
        groups = [rows for rows in groups if len({ds.texts[i] for i in rows}) > 1]
    out["examples"] = [{"ids": [ds.ids[i] for i in rows[:5]], "text": _short(ds.texts[rows[0]])}
                       for rows in groups[:examples]]
    return out


def _between(train: TextDataset, train_keys: Sequence[str], other: TextDataset, other_keys: Sequence[str],
             examples: int, exact: bool) -> dict[str, Any]:
    index = _index(train_keys)
    hits = [i for i, key in enumerate(other_keys) if key in index]
    out: dict[str, Any] = {"rows": len(hits), "texts": len({other_keys[i] for i in hits})}
    if train.labels is not None and other.labels is not None and train.label_names == other.label_names:
        out["same_labels"] = sum(any((train.labels[j] == other.labels[i]).all() for j in index[other_keys[i]])
                                 for i in hits)
    if not exact:  # show what exact matching misses
        hits = [i for i in hits if other.texts[i] not in {train.texts[j] for j in index[other_keys[i]]}]
    out["examples"] = [{"id": other.ids[i], "train_ids": [train.ids[j] for j in index[other_keys[i]][:5]],
                        "text": _short(other.texts[i])} for i in hits[:examples]]
    return out


def duplicate_report(data: EmitData, cleaner: TextCleaner | None = None, examples: int = 3) -> dict[str, Any]:
    """Counts and a few examples (ids and a truncated text) of duplicate texts, as a JSON-ready dict.

    ``train``: groups of equal texts in the training file (``groups``, ``rows`` in them,
    ``label_conflicts``: groups whose labels differ). ``against_train``: per test file present,
    its ``rows`` whose text is also in the training file, the distinct ``texts`` among them
    and, for labelled files, how many of those rows carry the ``same_labels`` as a training copy.
    The ``cleaned`` counts include the exact duplicates; its ``examples`` show only those that
    differ as strings (what exact matching misses).
    """
    cleaner = cleaner or TextCleaner()
    sets = {"train": data.train} | {n: getattr(data, n) for n in TEST_SETS if getattr(data, n) is not None}
    keys = {n: {"exact": ds.texts, "cleaned": [cleaned_key(t, cleaner) for t in ds.texts]} for n, ds in sets.items()}
    train = data.train
    report: dict[str, Any] = {
        "train": {"source": train.source, "rows": len(train)}
        | {lvl: _within(train, keys["train"][lvl], examples, lvl == "exact") for lvl in LEVELS},
        "against_train": {},
    }
    for name, ds in sets.items():
        if name != "train":
            report["against_train"][name] = {"source": ds.source, "rows": len(ds)} | {
                lvl: _between(train, keys["train"][lvl], ds, keys[name][lvl], examples, lvl == "exact")
                for lvl in LEVELS}
    return report


def _ids(ids: list[str], shown: int = 3) -> str:
    return ", ".join(ids[:shown]) + (", ..." if len(ids) > shown else "")


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as lines for the terminal."""
    tr = report["train"]
    lines = []
    for lvl in LEVELS:
        d = tr[lvl]
        conflicts = f", {d['label_conflicts']} with different labels" if "label_conflicts" in d else ""
        lines.append(f"duplicates {lvl:<7} train: {d['groups']} texts repeated, {d['rows']} rows{conflicts}")
        lines += [f"    ids {_ids(e['ids'])}: {e['text']!r}" for e in d["examples"]]
    for name, entry in report["against_train"].items():
        for lvl in LEVELS:
            d = entry[lvl]
            same = f", {d['same_labels']} with the same labels" if "same_labels" in d else ""
            lines.append(f"duplicates {lvl:<7} {name} vs train: {d['rows']} of {entry['rows']} rows "
                         f"({d['texts']} distinct texts) also in train{same}")
            lines += [f"    {name} id {e['id']} = train id {_ids(e['train_ids'])}: {e['text']!r}"
                      for e in d["examples"]]
    return lines
