"""The TF-IDF member: word + character n-grams, one balanced logistic regression per label.

scikit-learn fits it (``TfidfVectorizer`` learns the vocabulary and idf, liblinear
``LogisticRegression`` the heads); what is kept and saved are plain data:

* per analyzer (``word``, ``char``): the vocabulary as JSON (``term -> column``) and ``idf_`` as
  a float64 ``.npy``;
* the per-label weights ``W`` (L, n_word + n_char) and intercepts ``b`` (L,) as ``.npy``.

Prediction never imports scikit-learn (its import is a sizeable part of every ``emitlab predict``
start-up): :class:`TermSplitter` splits a text into terms as the fitted ``TfidfVectorizer``
does (``analyzer="word"``: tokens of two or more word characters, or ``"char_wb"``, lower-cased; the
tests check it term for term against scikit-learn's analyzer), :func:`count_terms` counts them
against the vocabulary and :func:`tfidf_weigh` does what ``TfidfTransformer`` does with those
counts (``1 + log(tf)``, times idf, rows scaled to unit L2 norm). The scores are
``sigmoid(hstack(word, char) @ W.T + b)`` (:func:`.linear.logistic_proba`), the same code before
and after a save/load, so a reloaded member gives bit-identical probabilities. An export's TF-IDF
folds split each text into n-grams and count them once for all of them (:meth:`TfidfMember.mean_proba`):
only the weighing is per fold.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import sparse

from emitlab.errors import ModelFormatError
from emitlab.io import atomic_write_text
from emitlab.members.linear import (
    check_fit_inputs,
    fit_logistic_heads,
    load_heads,
    logistic_proba,
    read_array,
    read_json,
    safe_file_name,
    save_array,
    save_heads,
    spec_config,
    spec_label_names,
)
from emitlab.settings import TfidfConfig

ANALYZERS = ("word", "char")
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")  # TfidfVectorizer's default token_pattern
_WHITE_SPACES_RE = re.compile(r"\s\s+")


@dataclass(frozen=True)
class TermSplitter:
    """How one analyzer of :func:`make_vectorizer` splits a text into terms, without scikit-learn:
    ``word`` n-grams (tokens of two or more word characters, joined by a space) or ``char``
    n-grams inside words padded with a space (scikit-learn's ``char_wb``), both lower-cased.
    Folds whose splitters are equal split texts alike (their counting is shared)."""

    analyzer: str
    ngram_range: tuple[int, int]

    @classmethod
    def of(cls, config: TfidfConfig, analyzer: str) -> "TermSplitter":
        if analyzer == "word":
            return cls("word", (1, config.word_ngram_max))
        if analyzer == "char":
            return cls("char", (config.char_ngram_min, config.char_ngram_max))
        raise ValueError(f"unknown analyzer {analyzer!r}")

    def __call__(self, text: str) -> list[str]:
        return self._words(text.lower()) if self.analyzer == "word" else self._chars(text.lower())

    def _words(self, text: str) -> list[str]:
        tokens = _TOKEN_RE.findall(text)
        lo, hi = self.ngram_range
        terms = list(tokens) if lo == 1 else []
        for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
            terms.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        return terms

    def _chars(self, text: str) -> list[str]:
        lo, hi = self.ngram_range
        terms: list[str] = []
        for word in _WHITE_SPACES_RE.sub(" ", text).split():
            w = f" {word} "
            for n in range(lo, hi + 1):
                if n >= len(w):  # a short word counts once, whole, for the first n that reaches its end
                    terms.append(w)
                    break
                terms.extend(w[i:i + n] for i in range(len(w) - n + 1))
        return terms


def count_terms(term_lists: Sequence[Sequence[str]], vocabulary: dict[str, int], n_columns: int
                ) -> sparse.csr_matrix:
    """Raw counts ``(len(term_lists), n_columns)`` float64 CSR, sorted indices, of the terms found
    in ``vocabulary`` (others are skipped)."""
    lengths = np.fromiter(map(len, term_lists), dtype=np.int64, count=len(term_lists))
    ends = np.concatenate(([0], np.cumsum(lengths)))
    ids = np.fromiter(map(vocabulary.get, chain.from_iterable(term_lists), repeat(-1)), dtype=np.int64,
                      count=int(ends[-1]))
    found = ids >= 0
    indptr = np.concatenate(([0], np.cumsum(found)))[ends]
    X = sparse.csr_matrix((np.ones(int(found.sum())), ids[found], indptr), shape=(len(term_lists), n_columns))
    X.sum_duplicates()
    return X


def tfidf_weigh(counts: sparse.spmatrix, idf: np.ndarray) -> sparse.csr_matrix:
    """``TfidfTransformer(sublinear_tf=True, norm="l2")`` with ``idf_ = idf`` on raw ``counts``:
    ``(1 + log(tf)) * idf``, each row then divided by its L2 norm (rows without terms stay 0)."""
    X = sparse.csr_matrix(counts, dtype=np.float64, copy=True)
    X.sort_indices()
    np.log(X.data, X.data)
    X.data += 1.0
    X.data *= idf[X.indices]
    squares = sparse.csr_matrix((X.data * X.data, X.indices, X.indptr), shape=X.shape)
    norms = np.sqrt(squares @ np.ones(X.shape[1]))  # summed in row order, as scikit-learn's normalize does
    norms[norms == 0.0] = 1.0
    X.data /= np.repeat(norms, np.diff(X.indptr))
    return X


def union_counter(group: Sequence["TfidfMember"], analyzer: str) -> tuple[dict[str, int], list[np.ndarray]]:
    """For fold models that split texts alike: the union of their ``analyzer`` vocabularies
    (term -> union column), and for each fold the union column of each of its own columns
    (``counts[:, cols]`` are the counts of its own vocabulary). Built once per group, cached on its
    first fold."""
    key = (analyzer, tuple(id(fm) for fm in group))
    hit = group[0]._unions.get(key)
    if hit is None:
        vocabs = [fm.vocabularies[analyzer] for fm in group]
        union = {term: i for i, term in enumerate(dict.fromkeys(chain.from_iterable(vocabs)))}
        columns = []
        for vocab in vocabs:
            cols = np.empty(len(vocab), dtype=np.int64)
            cols[np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))] = np.fromiter(
                map(union.__getitem__, vocab), dtype=np.int64, count=len(vocab))
            columns.append(cols)
        hit = group[0]._unions[key] = (list(group), union, columns)  # the folds kept: their ids stay theirs
    return hit[1], hit[2]


def make_vectorizer(config: TfidfConfig, analyzer: str):
    """The (unfitted) scikit-learn ``TfidfVectorizer`` of one analyzer, used for fitting; its
    splitting is :meth:`TermSplitter.of` ``(config, analyzer)``'s."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    c = config
    kind = {"word": "word", "char": "char_wb"}.get(analyzer)
    if kind is None:
        raise ValueError(f"unknown analyzer {analyzer!r}")
    return TfidfVectorizer(analyzer=kind, ngram_range=TermSplitter.of(c, analyzer).ngram_range, min_df=c.min_df,
                           max_features=c.max_features, sublinear_tf=True, lowercase=True, dtype=np.float64)


class TfidfMember:
    """Word + char TF-IDF features, one (balanced) logistic regression per label."""

    kind = "tfidf"
    network = False

    @classmethod
    def for_fold(cls, context, fold: int) -> "TfidfMember":
        """The member of one fold of a run: the run's ``TfidfConfig``, the same for every fold."""
        return cls(context.config(TfidfConfig))

    def __init__(self, config: TfidfConfig | None = None):
        self.config = config or TfidfConfig()
        self.label_names: list[str] = []
        self.vocabularies: dict[str, dict[str, int]] = {}  # analyzer -> term -> column
        self.idf: dict[str, np.ndarray] = {}  # analyzer -> idf per column
        self.W: np.ndarray | None = None
        self.b: np.ndarray | None = None
        self._unions: dict[tuple, Any] = {}  # union_counter's cache, on a group's first fold

    # -- fitting and prediction --------------------------------------------------------------
    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The TF-IDF matrix (n, n_word + n_char) of ``texts`` (after :meth:`fit`)."""
        if not self.vocabularies:
            raise RuntimeError("TfidfMember is not fitted")
        texts = list(texts)
        blocks = []
        for a in ANALYZERS:
            split = self.splitter(a)
            counts = count_terms([split(t) for t in texts], self.vocabularies[a], len(self.vocabularies[a]))
            blocks.append(tfidf_weigh(counts, self.idf[a]))
        return sparse.hstack(blocks, format="csr")

    def splitter(self, analyzer: str) -> TermSplitter:
        """How ``analyzer`` splits a text: folds with equal splitters split texts alike."""
        return TermSplitter.of(self.config, analyzer)

    @classmethod
    def mean_proba(cls, folds: Sequence["TfidfMember"], texts: Sequence[str]) -> np.ndarray:
        """The mean of ``folds``' probabilities, equal to averaging their :meth:`predict_proba`. Folds
        that split texts alike share the work: each text is split into word and char n-grams once,
        and its n-grams are counted once against the union of those folds' vocabularies
        (:func:`union_counter`); each fold takes its own vocabulary's columns of the counts and weighs
        them (:func:`tfidf_weigh`)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(folds[0].b)))
        blocks: dict[int, list] = {id(fm): [] for fm in folds}
        for a in ANALYZERS:
            groups: dict[TermSplitter, list[TfidfMember]] = {}
            for fm in folds:
                groups.setdefault(fm.splitter(a), []).append(fm)
            for split, group in groups.items():
                union, columns = union_counter(group, a)
                counts = count_terms([split(t) for t in texts], union, len(union)).tocsc()
                for fm, cols in zip(group, columns):
                    blocks[id(fm)].append(tfidf_weigh(counts[:, cols], fm.idf[a]))
        total = np.zeros((len(texts), len(folds[0].b)))
        for fm in folds:
            total += logistic_proba(sparse.hstack(blocks[id(fm)], format="csr"), fm.W, fm.b)
        return total / len(folds)

    def fit(self, texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str],
            mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            extra_rows: np.ndarray | None = None) -> "TfidfMember":
        texts = list(texts)
        y = check_fit_inputs(texts, labels, label_names)
        self.vocabularies, self.idf, self._unions = {}, {}, {}
        blocks = []
        for a in ANALYZERS:
            vec = make_vectorizer(self.config, a)
            blocks.append(vec.fit_transform(texts))
            self.vocabularies[a] = {str(term): int(col) for term, col in vec.vocabulary_.items()}
            self.idf[a] = np.asarray(vec.idf_, dtype=np.float64)
        X = sparse.hstack(blocks, format="csr")
        self.W, self.b = fit_logistic_heads(X, y, C=self.config.C, class_weight=self.config.class_weight,
                                            mask=mask, sample_weight=sample_weight)
        self.label_names = list(label_names)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.W is None:
            raise RuntimeError("TfidfMember is not fitted")
        if len(texts) == 0:
            return np.zeros((0, len(self.b)))
        return logistic_proba(self.features(texts), self.W, self.b)

    @property
    def n_features(self) -> dict[str, int]:
        return {a: len(self.vocabularies[a]) for a in ANALYZERS}

    # -- saving and loading ------------------------------------------------------------------
    def save(self, folder: Path) -> dict[str, Any]:
        if self.W is None:
            raise RuntimeError("TfidfMember is not fitted")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for a in ANALYZERS:
            vocab = dict(sorted(self.vocabularies[a].items(), key=lambda kv: kv[1]))
            name = f"{a}_vocabulary.json"
            atomic_write_text(folder / name, json.dumps(vocab, ensure_ascii=False))
            files[f"{a}_vocabulary"] = name
            files[f"{a}_idf"] = save_array(folder, f"{a}_idf.npy", self.idf[a])
        files.update(save_heads(folder, self.W, self.b))
        return {"kind": self.kind, "config": asdict(self.config), "label_names": list(self.label_names),
                "files": files, "n_features": self.n_features}

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], **_: Any) -> "TfidfMember":
        folder = Path(folder)
        if spec.get("kind") != cls.kind:
            raise ModelFormatError(f"{folder}: member spec kind is {spec.get('kind')!r}, expected {cls.kind!r}")
        obj = cls(spec_config(TfidfConfig, spec, folder))
        obj.label_names = spec_label_names(spec, folder)
        files = spec.get("files")
        n_features = spec.get("n_features")
        if not isinstance(files, dict) or not isinstance(n_features, dict):
            raise ModelFormatError(f"{folder}: member spec lacks 'files' or 'n_features'")
        total = 0
        for a in ANALYZERS:
            n = n_features.get(a)
            if not isinstance(n, int) or n < 1:
                raise ModelFormatError(f"{folder}: member spec n_features[{a!r}] must be a positive integer, got {n!r}")
            vpath = safe_file_name(folder, files.get(f"{a}_vocabulary"), f"{a}_vocabulary")
            vocab = read_json(vpath)
            # a JSON object's keys are strings; its values must all be integers (not bool, float or str)
            if not isinstance(vocab, dict) or (vocab and set(map(type, vocab.values())) != {int}):
                raise ModelFormatError(f"{vpath}: expected a JSON object of term -> integer column")
            if len(vocab) != n:
                raise ModelFormatError(f"{vpath}: holds {len(vocab)} terms, the spec says {n}")
            cols = np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
            if not np.array_equal(np.sort(cols), np.arange(n)):
                raise ModelFormatError(f"{vpath}: columns are not exactly 0..{n - 1}")
            ipath = safe_file_name(folder, files.get(f"{a}_idf"), f"{a}_idf")
            idf = read_array(ipath, 1)
            if idf.shape[0] != len(vocab):
                raise ModelFormatError(f"{ipath}: has {idf.shape[0]} idf values, "
                                       f"but {vpath.name} has {len(vocab)} terms")
            obj.vocabularies[a], obj.idf[a] = vocab, idf
            total += n
        obj.W, obj.b = load_heads(folder, files, len(obj.label_names), total)
        return obj
