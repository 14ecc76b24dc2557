"""The lexicon member: ELIta (Emotion Lexicon for Italian) features + one logistic regression per label.

:class:`LexiconFeatures` turns a (cleaned) text into a few dozen numbers:

1. **Tokens** -- the lower-cased text is split into words (runs of letters: ``l'amore`` gives
   ``l`` and ``amore``; digits, ``_`` and ``:`` separate words, so ``:faccina_che_ride:`` gives
   three words), ELIta's emoji (variation selectors and skin tones ignored) and ``??``-runs
   (ELIta's ``????``).  Other characters are skipped.
2. **Lookup** -- each word is looked up as written, else as its ``simplemma`` lemma (``lang="it"``,
   cached).  With ``multiword`` (the default) the longest ELIta multi-word expression starting at a
   word is matched first (greedily, each of its words as written or as lemma, e.g.
   ``restò a bocca aperta`` -> ``restare_a_bocca_aperta``); the Italian names of ELIta's emoji
   are such expressions too, because emitlab's cleaner writes emoji as their names
   (``😂`` -> ``faccina con lacrime di gioia``), so an emoji counts once with its own ratings
   whether the text still holds it or its name.  A one-word emoji name (``🌹`` -> ``rosa``) is
   used only where ELIta has no entry for that word.
3. **Per text** -- over the matched items: mean and max of ELIta's nine emotion dimensions
   (gioia, tristezza, rabbia, disgusto, paura, fiducia, sorpresa, aspettativa, amore; 0..1) and
   mean, max and min of valence/arousal/dominance (rescaled from 1..9 to -1..1, so 0 is neutral
   and a text without matches gets 0 everywhere); ``log1p`` of the number of matches and of the
   number of tokens, and the share of tokens that were matched.

There is no negation handling, and ``neutrale`` (0 for every item) is not used.

:class:`LexiconMember` standardises these features (mean/std from training, stored as arrays) and
fits one logistic regression per label (:mod:`.linear`): also for labels that no ELIta dimension
names (Neutral, task B's Direction/Topic), from all the features.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emitlab.data.elita import DIMENSIONS, EMOTIONS, VAD, lexicon_bytes, read_ratings
from emitlab.errors import ModelFormatError
from emitlab.members.linear import (
    check_fit_inputs,
    fit_logistic_heads,
    load_heads,
    logistic_proba,
    read_array,
    safe_file_name,
    save_array,
    save_heads,
    spec_config,
    spec_label_names,
)
from emitlab.settings import LexiconConfig

_EMOJI_NOISE_RE = re.compile("[\ufe0f\ufe0e\U0001F3FB-\U0001F3FF]")  # variation selectors, skin tones
_WORD_RE = re.compile(r"[^\W\d_]+")
_QUESTIONS = "????"


def _norm_emoji(s: str) -> str:
    return _EMOJI_NOISE_RE.sub("", s)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


@functools.lru_cache(maxsize=1 << 18)
def lemma(word: str) -> str:
    """The ``simplemma`` lemma (Italian) of a lower-case word; cached."""
    import simplemma

    return simplemma.lemmatize(word, lang="it").lower()


class _Lexicon:
    """ELIta parsed into lookup tables (built once per process, see :func:`_lexicon`)."""

    def __init__(self, data: bytes):
        self.sha256 = hashlib.sha256(data).hexdigest()
        ratings = read_ratings(data)
        items = list(ratings)
        table = np.array([[ratings[i][d] for d in DIMENSIONS] for i in items], dtype=np.float64)
        table[:, len(EMOTIONS):] = (table[:, len(EMOTIONS):] - 5.0) / 4.0
        self.items, self.table = items, table

        self.words: dict[str, int] = {}          # one word -> item
        self.phrases: dict[tuple[str, ...], int] = {}  # several words -> item
        self.emoji: dict[str, int] = {}          # normalised emoji -> item
        emoji_names: list[tuple[list[str], int]] = []
        import emoji as emoji_lib

        for idx, item in enumerate(items):
            if item == _QUESTIONS:
                self.words[_QUESTIONS] = idx
                continue
            is_emoji = any(emoji_lib.is_emoji(ch) for ch in item)
            if is_emoji:
                self.emoji.setdefault(_norm_emoji(item), idx)
                for variant in {item, _norm_emoji(item)}:
                    name = emoji_lib.demojize(variant, language="it")
                    if name != variant:
                        emoji_names.append((_words(name.replace("_", " ")), idx))
                continue
            toks = _words(item.replace("_", " "))
            if len(toks) == 1:
                self.words.setdefault(toks[0], idx)
            elif toks:
                self.phrases.setdefault(tuple(toks), idx)
        for toks, idx in emoji_names:  # after the words, so a word's own entry wins
            if len(toks) == 1:
                self.words.setdefault(toks[0], idx)
            elif toks:
                self.phrases.setdefault(tuple(toks), idx)
        # A trie over the phrases' words: node = {word: child, None: item index at a phrase's end}.
        self.trie: dict = {}
        for toks, idx in self.phrases.items():
            node = self.trie
            for t in toks:
                node = node.setdefault(t, {})
            node[None] = idx
        alternatives = sorted(self.emoji, key=len, reverse=True)
        emoji_re = "|".join(re.escape(e) for e in alternatives)
        self.token_re = re.compile(rf"(?P<e>{emoji_re})|(?P<w>[^\W\d_]+)|(?P<q>\?\?+)")


@functools.lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    return _Lexicon(lexicon_bytes())


class LexiconFeatures:
    """ELIta features of texts: ``transform(texts) -> float64 (n, len(feature_names))`` (no fitting)."""

    def __init__(self, multiword: bool = True):
        self.multiword = multiword
        self.lexicon = _lexicon()
        self.feature_names: list[str] = (
            [f"mean_{d}" for d in DIMENSIONS] + [f"max_{d}" for d in DIMENSIONS] + [f"min_{d}" for d in VAD]
            + ["log_matches", "log_tokens", "share_matched"]
        )

    @property
    def sha256(self) -> str:
        return self.lexicon.sha256

    def tokens(self, text: str) -> list[tuple[str, str]]:
        """``(kind, token)`` pairs of one text; kind is ``"w"`` (word), ``"e"`` (emoji) or ``"q"`` (??)."""
        out = []
        for m in self.lexicon.token_re.finditer(_norm_emoji(text.lower())):
            kind = m.lastgroup
            out.append((kind, m.group(kind)))
        return out

    def match(self, text: str) -> tuple[list[int], int, int]:
        """ELIta item indices found in ``text``, the number of tokens, and how many were matched."""
        lex = self.lexicon
        toks = self.tokens(text)
        forms = [(t, lemma(t)) if k == "w" else (t, t) for k, t in toks]
        found: list[int] = []
        covered = 0
        i, n = 0, len(toks)
        while i < n:
            kind, tok = toks[i]
            if kind == "e":
                found.append(lex.emoji[tok])
                covered += 1
                i += 1
                continue
            if kind == "q":
                found.append(lex.words[_QUESTIONS])
                covered += 1
                i += 1
                continue
            if self.multiword and (tok in lex.trie or forms[i][1] in lex.trie):
                best, best_end = -1, i
                nodes = [lex.trie]
                j = i
                while nodes and j < n and toks[j][0] == "w":
                    nxt = []
                    for node in nodes:
                        for form in set(forms[j]):
                            child = node.get(form)
                            if child is not None:
                                nxt.append(child)
                    nodes = nxt
                    j += 1
                    for node in nodes:
                        if None in node:
                            best, best_end = node[None], j
                            break
                if best >= 0:
                    found.append(best)
                    covered += best_end - i
                    i = best_end
                    continue
            surface, lem = forms[i]
            idx = lex.words.get(surface)
            if idx is None:
                idx = lex.words.get(lem)
            if idx is not None:
                found.append(idx)
                covered += 1
            i += 1
        return found, n, covered

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        table = self.lexicon.table
        n_dim, n_vad = len(DIMENSIONS), len(VAD)
        out = np.zeros((len(texts), len(self.feature_names)), dtype=np.float64)
        all_idx: list[int] = []
        counts = np.zeros(len(texts), dtype=np.int64)
        for r, text in enumerate(texts):
            found, n_tok, covered = self.match(text)
            all_idx.extend(found)
            counts[r] = len(found)
            out[r, -3] = np.log1p(len(found))
            out[r, -2] = np.log1p(n_tok)
            out[r, -1] = covered / n_tok if n_tok else 0.0
        rows = np.flatnonzero(counts)
        if rows.size:
            vals = table[np.asarray(all_idx, dtype=np.int64)]
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[rows]
            out[rows, :n_dim] = np.add.reduceat(vals, starts, axis=0) / counts[rows, None]
            out[rows, n_dim:2 * n_dim] = np.maximum.reduceat(vals, starts, axis=0)
            out[rows, 2 * n_dim:2 * n_dim + n_vad] = np.minimum.reduceat(vals[:, -n_vad:], starts, axis=0)
        return out


def _simplemma_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("simplemma")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


class LexiconMember:
    """Standardised ELIta features, one (balanced) logistic regression per label."""

    kind = "lexicon"
    network = False

    @classmethod
    def for_fold(cls, context, fold: int) -> "LexiconMember":
        """The member of one fold of a run: the run's ``LexiconConfig``, the same for every fold."""
        return cls(context.config(LexiconConfig))

    def __init__(self, config: LexiconConfig | None = None):
        self.config = config or LexiconConfig()
        self.features = LexiconFeatures(multiword=self.config.multiword)
        self.label_names: list[str] = []
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.W: np.ndarray | None = None
        self.b: np.ndarray | None = None

    def _standardised(self, texts: Sequence[str]) -> np.ndarray:
        return (self.features.transform(list(texts)) - self.mean) / self.std

    def fit(self, texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str],
            mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            extra_rows: np.ndarray | None = None) -> "LexiconMember":
        texts = list(texts)
        y = check_fit_inputs(texts, labels, label_names)
        F = self.features.transform(texts)
        self.mean = F.mean(axis=0)
        std = F.std(axis=0)
        self.std = np.where(std > 1e-12, std, 1.0)
        Z = (F - self.mean) / self.std
        self.W, self.b = fit_logistic_heads(Z, y, C=self.config.C, class_weight=self.config.class_weight,
                                            mask=mask, sample_weight=sample_weight)
        self.label_names = list(label_names)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.W is None:
            raise RuntimeError("LexiconMember is not fitted")
        if len(texts) == 0:
            return np.zeros((0, len(self.b)))
        return logistic_proba(self._standardised(texts), self.W, self.b)

    @classmethod
    def mean_proba(cls, folds: Sequence["LexiconMember"], texts: Sequence[str]) -> np.ndarray:
        """The mean of ``folds``' probabilities, equal to averaging their :meth:`predict_proba`, with
        ELIta matched in each text once for every fold that matches alike (the features depend on the
        lexicon file, checked on loading, and ``multiword``; each fold has its own scaling and heads)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(folds[0].b)))
        features: dict[bool, np.ndarray] = {}
        total = np.zeros((len(texts), len(folds[0].b)))
        for fm in folds:
            key = fm.features.multiword
            if key not in features:
                features[key] = fm.features.transform(texts)
            total += logistic_proba((features[key] - fm.mean) / fm.std, fm.W, fm.b)
        return total / len(folds)

    def save(self, folder: Path) -> dict[str, Any]:
        if self.W is None:
            raise RuntimeError("LexiconMember is not fitted")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {"mean": save_array(folder, "mean.npy", self.mean), "std": save_array(folder, "std.npy", self.std)}
        files.update(save_heads(folder, self.W, self.b))
        return {"kind": self.kind, "config": asdict(self.config), "label_names": list(self.label_names),
                "files": files, "feature_names": list(self.features.feature_names),
                "lexicon_sha256": self.features.sha256, "simplemma_version": _simplemma_version()}

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], **_: Any) -> "LexiconMember":
        folder = Path(folder)
        if spec.get("kind") != cls.kind:
            raise ModelFormatError(f"{folder}: member spec kind is {spec.get('kind')!r}, expected {cls.kind!r}")
        obj = cls(spec_config(LexiconConfig, spec, folder))
        obj.label_names = spec_label_names(spec, folder)
        names = obj.features.feature_names
        if spec.get("feature_names") != names:
            raise ModelFormatError(f"{folder}: the member's lexicon features differ from this emitlab version's")
        if spec.get("lexicon_sha256") != obj.features.sha256:
            raise ModelFormatError(f"{folder}: the member was fitted with another ELIta file "
                                   f"(sha256 {spec.get('lexicon_sha256')!r}, this emitlab has {obj.features.sha256})")
        if spec.get("simplemma_version") != _simplemma_version():
            warnings.warn(f"{folder}: lexicon member fitted with simplemma {spec.get('simplemma_version')}, "
                          f"running {_simplemma_version()}: lemmas, hence probabilities, may differ slightly",
                          stacklevel=2)
        files = spec.get("files")
        if not isinstance(files, dict):
            raise ModelFormatError(f"{folder}: member spec lacks 'files'")
        obj.mean = read_array(safe_file_name(folder, files.get("mean"), "mean"), 1, (len(names),))
        std_path = safe_file_name(folder, files.get("std"), "std")
        obj.std = read_array(std_path, 1, (len(names),))
        if not (obj.std > 0).all():
            raise ModelFormatError(f"{std_path}: standard deviations must be > 0")
        obj.W, obj.b = load_heads(folder, files, len(obj.label_names), len(names))
        return obj
