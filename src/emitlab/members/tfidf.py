"""The TF-IDF member: word + character n-grams, one balanced logistic regression per label.

The same model as the old ``models.baseline.TfidfBaseline`` (scikit-learn's ``TfidfVectorizer``
and liblinear ``LogisticRegression`` do the fitting), but what is kept and saved are plain data:

* per analyzer (``word``, ``char``): the vocabulary as JSON (``term -> column``) and ``idf_`` as
  a float64 ``.npy``;
* the per-label weights ``W`` (L, n_word + n_char) and intercepts ``b`` (L,) as ``.npy``.

Prediction is always ``sigmoid(hstack(word.transform, char.transform) @ W.T + b)``
(:func:`.linear.logistic_proba`), before and after a save/load, so a reloaded member gives
bit-identical probabilities. An export's TF-IDF folds split each text into n-grams and count them
once for all of them (:meth:`TfidfMember.mean_proba`): only the weighing is per fold.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from itertools import chain
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
#: the ``TfidfVectorizer`` parameters that decide how a text is split into terms (not which terms count)
ANALYSIS_PARAMS = ("input", "encoding", "decode_error", "strip_accents", "lowercase", "preprocessor", "tokenizer",
                   "stop_words", "token_pattern", "ngram_range", "analyzer")


def _given_terms(terms: list[str]) -> list[str]:
    """The analyzer of a vectorizer that counts terms split beforehand (see ``TfidfMember.mean_proba``)."""
    return terms


def union_counter(group: Sequence["TfidfMember"], analyzer: str) -> tuple[Any, list[np.ndarray]]:
    """For fold models that split texts alike: a ``CountVectorizer`` that counts given terms against
    the union of their ``analyzer`` vocabularies, and for each fold the union column of each of its
    own columns (``counts[:, cols]`` are the counts its vectorizer would make). Built once per group,
    cached on its first fold."""
    from sklearn.feature_extraction.text import CountVectorizer

    key = (analyzer, tuple(id(fm) for fm in group))
    hit = group[0]._unions.get(key)
    if hit is None:
        vocabs = [fm.vectorizers[analyzer].vocabulary_ for fm in group]
        union = {term: i for i, term in enumerate(dict.fromkeys(chain.from_iterable(vocabs)))}
        columns = []
        for vocab in vocabs:
            cols = np.empty(len(vocab), dtype=np.int64)
            cols[np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))] = np.fromiter(
                map(union.__getitem__, vocab), dtype=np.int64, count=len(vocab))
            columns.append(cols)
        counter = CountVectorizer(analyzer=_given_terms, vocabulary=union, dtype=np.float64)
        hit = group[0]._unions[key] = (list(group), counter, columns)  # the folds kept: their ids stay theirs
    return hit[1], hit[2]


def make_vectorizer(config: TfidfConfig, analyzer: str, vocabulary: dict[str, int] | None = None):
    """The (unfitted) ``TfidfVectorizer`` of one analyzer; with ``vocabulary`` it is fixed."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    c = config
    if analyzer == "word":
        kind, ngrams = "word", (1, c.word_ngram_max)
    elif analyzer == "char":
        kind, ngrams = "char_wb", (c.char_ngram_min, c.char_ngram_max)
    else:
        raise ValueError(f"unknown analyzer {analyzer!r}")
    return TfidfVectorizer(analyzer=kind, ngram_range=ngrams, min_df=c.min_df, max_features=c.max_features,
                           sublinear_tf=True, lowercase=True, dtype=np.float64, vocabulary=vocabulary)


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
        self.vectorizers: dict[str, Any] = {}
        self.W: np.ndarray | None = None
        self.b: np.ndarray | None = None
        self._weighers: dict[str, Any] = {}  # analyzer -> TfidfTransformer (tfidf_of_counts)
        self._unions: dict[tuple, Any] = {}  # union_counter's cache, on a group's first fold

    # -- fitting and prediction --------------------------------------------------------------
    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The TF-IDF matrix (n, n_word + n_char) of ``texts`` (after :meth:`fit`)."""
        if not self.vectorizers:
            raise RuntimeError("TfidfMember is not fitted")
        texts = list(texts)
        return sparse.hstack([self.vectorizers[a].transform(texts) for a in ANALYZERS], format="csr")

    def analysis(self, analyzer: str) -> tuple:
        """What decides how ``analyzer`` splits a text: folds with equal keys split texts alike."""
        params = self.vectorizers[analyzer].get_params()
        return (analyzer,) + tuple(repr(params[k]) for k in ANALYSIS_PARAMS)

    @classmethod
    def mean_proba(cls, folds: Sequence["TfidfMember"], texts: Sequence[str]) -> np.ndarray:
        """The mean of ``folds``' probabilities, equal to averaging their :meth:`predict_proba`. Folds
        that split texts alike share the work: each text is split into word and char n-grams once,
        and its n-grams are counted once against the union of those folds' vocabularies
        (:func:`union_counter`); each fold takes its own vocabulary's columns of the counts and weighs
        them as its vectorizer does (:meth:`tfidf_of_counts`)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(folds[0].b)))
        blocks: dict[int, list] = {id(fm): [] for fm in folds}
        for a in ANALYZERS:
            groups: dict[tuple, list[TfidfMember]] = {}
            for fm in folds:
                groups.setdefault(fm.analysis(a), []).append(fm)
            for group in groups.values():
                counter, columns = union_counter(group, a)
                analyze = group[0].vectorizers[a].build_analyzer()
                counts = counter.transform([analyze(t) for t in texts]).tocsc()
                for fm, cols in zip(group, columns):
                    blocks[id(fm)].append(fm.tfidf_of_counts(a, counts[:, cols]))
        total = np.zeros((len(texts), len(folds[0].b)))
        for fm in folds:
            total += logistic_proba(sparse.hstack(blocks[id(fm)], format="csr"), fm.W, fm.b)
        return total / len(folds)

    def tfidf_of_counts(self, analyzer: str, counts: sparse.spmatrix) -> sparse.csr_matrix:
        """``analyzer``'s TF-IDF block of raw term ``counts`` (columns in its vocabulary's order): what its
        vectorizer (:func:`make_vectorizer`: counts, idf) does once it has counted (tf, idf and norm)."""
        from sklearn.feature_extraction.text import TfidfTransformer

        vec = self.vectorizers[analyzer]
        X = sparse.csr_matrix(counts, dtype=vec.dtype)
        X.sort_indices()
        tfidf = self._weighers.get(analyzer)
        if tfidf is None:
            tfidf = TfidfTransformer(norm=vec.norm, smooth_idf=vec.smooth_idf, sublinear_tf=vec.sublinear_tf)
            tfidf.idf_ = vec.idf_
            self._weighers[analyzer] = tfidf
        return tfidf.transform(X, copy=False)

    def fit(self, texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str],
            mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            extra_rows: np.ndarray | None = None) -> "TfidfMember":
        texts = list(texts)
        y = check_fit_inputs(texts, labels, label_names)
        self.vectorizers = {}
        blocks = []
        for a in ANALYZERS:
            vec = make_vectorizer(self.config, a)
            blocks.append(vec.fit_transform(texts))
            vars(vec).pop("stop_words_", None)  # the terms cut by max_features/min_df: unused, can be huge
            self.vectorizers[a] = vec
        self._weighers, self._unions = {}, {}
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
        return {a: len(self.vectorizers[a].vocabulary_) for a in ANALYZERS}

    # -- saving and loading ------------------------------------------------------------------
    def save(self, folder: Path) -> dict[str, Any]:
        if self.W is None:
            raise RuntimeError("TfidfMember is not fitted")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for a in ANALYZERS:
            vec = self.vectorizers[a]
            vocab = {str(term): int(col) for term, col in sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])}
            name = f"{a}_vocabulary.json"
            atomic_write_text(folder / name, json.dumps(vocab, ensure_ascii=False))
            files[f"{a}_vocabulary"] = name
            files[f"{a}_idf"] = save_array(folder, f"{a}_idf.npy", np.asarray(vec.idf_, dtype=np.float64))
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
            vec = make_vectorizer(obj.config, a, vocabulary=vocab)
            vec.idf_ = idf  # builds the inner TfidfTransformer and fixes vocabulary_
            obj.vectorizers[a] = vec
            total += n
        obj.W, obj.b = load_heads(folder, files, len(obj.label_names), total)
        return obj
