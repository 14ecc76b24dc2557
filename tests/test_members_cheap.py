"""The cheap members (TF-IDF, ELIta lexicon): fit, predict, save/load without pickle, format errors."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from emitlab.data.elita import LEXICON_SHA256, lexicon_bytes
from emitlab.errors import ModelFormatError
from emitlab.labels import TASK_A_LABELS
from emitlab.members.lexicon import LexiconFeatures, LexiconMember
from emitlab.members.tfidf import TfidfMember
from emitlab.settings import BaselineConfig, LexiconConfig, TfidfConfig

from synthetic import make_rows

RESOURCES = Path(__file__).resolve().parents[1] / "src" / "emitlab" / "resources" / "elita"
MEMBERS = {"tfidf": TfidfMember, "lexicon": LexiconMember}


@pytest.fixture(scope="module")
def corpus():
    _, train, y_train, _ = make_rows(300, 0, "tr")
    _, test, y_test, _ = make_rows(60, 1, "te")
    return train, y_train, test, y_test


@pytest.fixture(scope="module")
def fitted(corpus):
    train, y, _, _ = corpus
    return {kind: cls().fit(train, y, TASK_A_LABELS) for kind, cls in MEMBERS.items()}


def _macro_f1(y, p):
    from sklearn.metrics import f1_score

    return f1_score(y, (p >= 0.5).astype(int), average="macro", zero_division=0)


def test_vendored_elita_matches_recorded_checksum():
    recorded = re.search(r"sha256 ([0-9a-f]{64})", (RESOURCES / "SOURCE.md").read_text(encoding="utf-8")).group(1)
    assert hashlib.sha256(lexicon_bytes()).hexdigest() == recorded == LEXICON_SHA256
    assert (RESOURCES / "LICENSE").read_text(encoding="utf-8").startswith("Creative Commons")
    assert "CC0 1.0 Universal" in (RESOURCES / "LICENSE").read_text(encoding="utf-8")


def test_baseline_config_alias():
    assert BaselineConfig is TfidfConfig


@pytest.mark.parametrize("kind", list(MEMBERS))
def test_fit_predict_and_learn(kind, fitted, corpus):
    _, _, test, y_test = corpus
    member = fitted[kind]
    assert member.kind == kind
    p = member.predict_proba(test)
    assert p.shape == (len(test), len(TASK_A_LABELS)) and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()
    assert _macro_f1(y_test, p) > (0.9 if kind == "tfidf" else 0.5)


@pytest.mark.parametrize("kind", list(MEMBERS))
def test_save_load_is_exact_and_pickle_free(kind, fitted, corpus, tmp_path):
    _, _, test, _ = corpus
    member = fitted[kind]
    spec = member.save(tmp_path / kind)
    spec = json.loads(json.dumps(spec))  # JSON-able, and what a caller would store
    assert spec["kind"] == kind and spec["label_names"] == TASK_A_LABELS
    names = sorted(p.name for p in (tmp_path / kind).iterdir())
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib"))]
    assert all(n.endswith((".npy", ".json")) for n in names), names
    for path in (tmp_path / kind).glob("*.npy"):
        np.load(path, allow_pickle=False)
    again = MEMBERS[kind].load(tmp_path / kind, spec)
    assert np.array_equal(again.predict_proba(test), member.predict_proba(test))


def _retype_first_column(path, value):
    vocab = json.loads(path.read_text(encoding="utf-8"))
    first = min(vocab, key=vocab.get)
    vocab[first] = value  # column 0 written as 0.0 or false: equal to 0 in Python, not an integer column
    path.write_text(json.dumps(vocab), encoding="utf-8")


def _tamper_cases(kind):
    cases = [
        ("missing", "W.npy", lambda p: p.unlink(), "missing"),
        ("truncated", "W.npy", lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable"),
        ("wrong shape", "b.npy", lambda p: np.save(p, np.zeros(3)), "shape"),
        ("pickled", "b.npy", lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True),
         "not a readable"),
        ("wrong dtype", "W.npy", lambda p: np.save(p, np.load(p).astype(np.float32)), "float64"),
    ]
    if kind == "tfidf":
        cases += [
            ("missing vocabulary", "word_vocabulary.json", lambda p: p.unlink(), "missing"),
            ("bad json", "char_vocabulary.json", lambda p: p.write_text("{oops", encoding="utf-8"), "JSON"),
            ("vocabulary size", "word_vocabulary.json",
             lambda p: p.write_text(json.dumps(dict(list(json.loads(p.read_text(encoding="utf-8")).items())[:-1])),
                                    encoding="utf-8"), "terms"),
            ("idf length", "char_idf.npy", lambda p: np.save(p, np.load(p)[:-1]), "idf values"),
            ("float column", "word_vocabulary.json", lambda p: _retype_first_column(p, 0.0), "integer column"),
            ("bool column", "char_vocabulary.json", lambda p: _retype_first_column(p, False), "integer column"),
        ]
    else:
        cases += [
            ("std length", "std.npy", lambda p: np.save(p, np.load(p)[:-1]), "shape"),
            ("zero std", "std.npy", lambda p: np.save(p, np.zeros_like(np.load(p))), "> 0"),
        ]
    return [(kind, *c) for c in cases]


@pytest.mark.parametrize("kind,case,file,tamper,words", _tamper_cases("tfidf") + _tamper_cases("lexicon"),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_tampered_folder_names_the_file(kind, case, file, tamper, words, fitted, tmp_path):
    folder = tmp_path / kind
    spec = fitted[kind].save(folder)
    tamper(folder / file)
    with pytest.raises(ModelFormatError) as err:
        MEMBERS[kind].load(folder, spec)
    message = str(err.value)
    assert file in message and words in message and "\n" not in message


@pytest.mark.parametrize("kind", list(MEMBERS))
def test_bad_specs(kind, fitted, tmp_path):
    folder = tmp_path / kind
    spec = fitted[kind].save(folder)
    cls = MEMBERS[kind]
    with pytest.raises(ModelFormatError, match="file name"):
        cls.load(folder, {**spec, "files": {**spec["files"], "W": "../W.npy"}})
    with pytest.raises(ModelFormatError, match="config"):
        cls.load(folder, {**spec, "config": {**spec["config"], "nonsense": 1}})
    with pytest.raises(ModelFormatError, match="W.npy"):  # one label too many for the stored arrays
        cls.load(folder, {**spec, "label_names": spec["label_names"] + ["Extra"]})
    if kind == "lexicon":
        with pytest.raises(ModelFormatError, match="ELIta"):
            cls.load(folder, {**spec, "lexicon_sha256": "0" * 64})


@pytest.mark.parametrize("kind", list(MEMBERS))
def test_constant_label_columns(kind, corpus, tmp_path):
    train, y, test, _ = corpus
    y = y[:, :4].copy()
    y[:, 1] = 0
    y[:, 2] = 1
    names = ["A", "never", "always", "D"]
    member = MEMBERS[kind]().fit(train, y, names)
    p = member.predict_proba(test)
    assert np.allclose(p[:, 1], 1e-6) and np.allclose(p[:, 2], 1 - 1e-6)
    assert not member.W[1].any() and not member.W[2].any() and member.W[0].any()
    spec = member.save(tmp_path / "m")
    assert np.array_equal(MEMBERS[kind].load(tmp_path / "m", spec).predict_proba(test), p)


def test_fit_checks_label_shape(corpus):
    train, y, _, _ = corpus
    with pytest.raises(ValueError, match="shape"):
        TfidfMember().fit(train, y[:, :3], TASK_A_LABELS)


def test_tfidf_uses_its_config(corpus, tmp_path):
    train, y, test, _ = corpus
    cfg = TfidfConfig(word_ngram_max=1, char_ngram_min=2, char_ngram_max=3, max_features=500, C=0.5)
    member = TfidfMember(cfg).fit(train, y, TASK_A_LABELS)
    assert member.n_features["char"] <= 500
    spec = member.save(tmp_path / "m")
    assert spec["config"]["max_features"] == 500 and spec["n_features"] == member.n_features
    again = TfidfMember.load(tmp_path / "m", spec)
    assert again.config == cfg and np.array_equal(again.predict_proba(test), member.predict_proba(test))


TEXTS_TO_SPLIT = ["", "   ", "Che bella giornata!!", "È già l'ora\tdi   andare\n\nvia... NON ci credo",
                  "ÀÉÎ ß İstanbul ǅ", "a b c", "x", "_under_score 12 3 4.5", "faccina con lacrime di gioia 😂",
                  "url @user #hashtag", "l'amore è  un'altra cosa, perché?"]


@pytest.mark.parametrize("cfg", [TfidfConfig(), TfidfConfig(word_ngram_max=1, char_ngram_min=2, char_ngram_max=3),
                                 TfidfConfig(word_ngram_max=3, char_ngram_min=3, char_ngram_max=5)],
                         ids=["default", "short", "long"])
def test_tfidf_prediction_path_equals_scikit_learn(cfg, corpus):
    """Prediction splits, counts and weighs without scikit-learn: term for term what the fitted
    ``TfidfVectorizer``'s analyzer gives, and bit for bit its ``transform``."""
    from emitlab.members.tfidf import TermSplitter, count_terms, make_vectorizer, tfidf_weigh

    train, _, test, _ = corpus
    texts = TEXTS_TO_SPLIT + list(test)
    for analyzer in ("word", "char"):
        vec = make_vectorizer(cfg, analyzer).fit(list(train) + TEXTS_TO_SPLIT[:4])
        split = TermSplitter.of(cfg, analyzer)
        sk_analyze = vec.build_analyzer()
        for text in texts:
            assert split(text) == sk_analyze(text), text
        expected = vec.transform(texts)
        got = tfidf_weigh(count_terms([split(t) for t in texts], vec.vocabulary_, len(vec.vocabulary_)), vec.idf_)
        assert got.shape == expected.shape and got.has_sorted_indices
        for part in ("indptr", "indices", "data"):
            assert np.array_equal(getattr(got, part), getattr(expected, part)), (analyzer, part)


def test_tfidf_predicts_without_importing_scikit_learn(fitted, corpus, tmp_path):
    """A saved TF-IDF member loads and predicts in a process that never imports scikit-learn (its
    import is a sizeable part of every `emitlab predict` start-up)."""
    import subprocess
    import sys

    _, _, test, _ = corpus
    spec = fitted["tfidf"].save(tmp_path / "m")
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    (tmp_path / "texts.json").write_text(json.dumps(list(test)), encoding="utf-8")
    code = ("import json, sys, numpy as np\n"
            "from pathlib import Path\n"
            "from emitlab.members import fold_mean_proba, load_member\n"
            f"d = Path({str(tmp_path)!r})\n"
            "folds = [load_member(d / 'm', json.loads((d / 'spec.json').read_text())) for _ in range(2)]\n"
            "texts = json.loads((d / 'texts.json').read_text())\n"
            "np.save(d / 'p.npy', fold_mean_proba(folds, texts))\n"
            "assert 'sklearn' not in sys.modules, sorted(m for m in sys.modules if m.startswith('sklearn'))[:3]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert np.array_equal(np.load(tmp_path / "p.npy"), fitted["tfidf"].predict_proba(test))


# --- lexicon features ----------------------------------------------------------------------------

def _feature(feats, text, name):
    return feats.transform([text])[0, feats.feature_names.index(name)]


@pytest.mark.parametrize("text,dimension", [
    ("che paura", "paura"),
    ("Ho il terrore degli esami", "paura"),
    ("che schifo, mi fa vomitare", "disgusto"),
    ("ti amo tanto amore mio", "amore"),
    ("sono così felice oggi!", "gioia"),
    ("piango da ore, che tristezza", "tristezza"),
    ("sono furioso con il governo", "rabbia"),
])
def test_lexicon_dimensions(text, dimension):
    feats = LexiconFeatures()
    assert _feature(feats, text, f"max_{dimension}") >= 0.5
    assert _feature(feats, text, f"mean_{dimension}") > 0


def test_lexicon_valence_and_empty():
    feats = LexiconFeatures()
    assert _feature(feats, "che bello, grazie!", "mean_valenza") > 0.3
    assert _feature(feats, "che schifo, vergogna", "mean_valenza") < -0.3
    X = feats.transform(["", "123 456", "xyzzy qwerty"])
    assert X.shape == (3, len(feats.feature_names)) and not X[:2].any()
    assert not X[2, :-2].any() and X[2, feats.feature_names.index("share_matched")] == 0


def test_lexicon_lemmas_multiword_and_emoji():
    feats = LexiconFeatures()
    lex = feats.lexicon
    items = lambda text: [lex.items[i] for i in feats.match(text)[0]]  # noqa: E731
    assert items("le paure") == ["paura"]  # lemma
    assert "restare_a_bocca_aperta" in items("Sono restata a bocca aperta")  # multi-word, as lemmas
    # an emoji, its name as emitlab's cleaner writes it, and the demojize form are one item
    assert items("😂") == items("faccina con lacrime di gioia") == items(":faccina_con_lacrime_di_gioia:") == ["😂"]
    assert items("❤️") == items("❤") == ["❤"]
    assert items("????") == ["????"]
    assert LexiconFeatures(multiword=False).match("faccina con lacrime di gioia")[0] != feats.match("😂")[0]


def test_lexicon_features_on_cleaned_text():
    from emitlab.data.cleaning import TextCleaner

    feats = LexiconFeatures()
    raw = "RT @mario: Che paura 😱 #terremoto https://t.co/xyz"
    cleaned = TextCleaner()(raw)
    assert np.array_equal(feats.transform([raw])[0, :-3], feats.transform([cleaned])[0, :-3])
    assert _feature(feats, cleaned, "max_paura") > 0.5


def test_lexicon_config_flags_do_not_clash_with_tfidf():
    import argparse

    from emitlab.settings_cli import add_dataclass_arguments

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, TfidfConfig)
    add_dataclass_arguments(parser, LexiconConfig)
    args = parser.parse_args(["--C", "2", "--lexicon-C", "0.5", "--no-lexicon-multiword"])
    assert vars(args) == {"tfidf.C": 2.0, "lexicon.C": 0.5, "lexicon.multiword": False}


@pytest.mark.parametrize("kind", MEMBERS)
def test_fold_mean_shares_the_work_for_the_same_numbers(kind, corpus, monkeypatch):
    """An export's fold models of one member give the mean of their own predictions, while the
    TF-IDF folds split and count each text once (no fold counts on its own) and the lexicon folds
    match ELIta once per ``multiword`` setting; folds fitted with other settings still agree."""
    from emitlab.members import fold_mean_proba

    train, y, test, _ = corpus
    other = TfidfConfig(char_ngram_max=3, word_ngram_max=1) if kind == "tfidf" else LexiconConfig(multiword=False)
    configs = [None, None, other]
    folds = [MEMBERS[kind](c).fit(train[s:s + 200], y[s:s + 200], TASK_A_LABELS) for c, s in zip(configs, (0, 50, 100))]
    expected = np.mean([fm.predict_proba(test) for fm in folds], axis=0)
    if kind == "tfidf":
        import emitlab.members.tfidf as tfidf

        for fm in folds:
            monkeypatch.setattr(fm, "features", lambda *a: pytest.fail("a fold split the texts itself"))
        calls = []
        original = tfidf.count_terms
        monkeypatch.setattr(tfidf, "count_terms", lambda *a: calls.append(1) or original(*a))
    else:
        calls = []
        original = LexiconFeatures.transform
        monkeypatch.setattr(LexiconFeatures, "transform", lambda self, texts: calls.append(1) or original(self, texts))
    np.testing.assert_allclose(fold_mean_proba(folds, test), expected, rtol=0, atol=1e-12)
    # lexicon: multiword on (two folds), off (one); tfidf: word and char n-grams counted for the two
    # folds of one config at once, and for the other fold
    assert len(calls) == (2 if kind == "lexicon" else 4)
    np.testing.assert_allclose(fold_mean_proba(folds, test), expected, rtol=0, atol=1e-12)  # cached unions
    if kind == "tfidf":
        assert len(calls) == 8
    assert fold_mean_proba(folds, []).shape == (0, len(TASK_A_LABELS))
