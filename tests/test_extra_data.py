"""Extra training corpora (``--extra-data``): the adapters and their label conventions, masked
labels in every member, folds that keep cross-fitting honest, the out-of-domain proxy score,
and the errors for a missing or malformed corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emitlab.cli import main
from emitlab.data.cleaning import TextCleaner
from emitlab.data.duplicates import loose_key
from emitlab.data.extra import (
    drop_evaluation_duplicates,
    load_extra,
    load_multiemotions_it,
    parse_spec,
)
from emitlab.engine.crossfit import crossfit, kfold_plan, with_extra_rows
from emitlab.errors import DataError, SettingsError
from emitlab.labels import TASK_A_LABELS
from emitlab.members.linear import fit_logistic_heads
from emitlab.members.transformer.losses import AsymmetricLoss, FocalLoss, WeightedBCELoss, cell_weights, prior_log_odds
from emitlab.settings import CleaningConfig

from conftest import TINY_FOLDS, TINY_TRAIN
from synthetic import make_rows, mei_row, write_extra_folder

A = {n: j for j, n in enumerate(TASK_A_LABELS)}


def write_mei(folder, rows):
    import csv

    from synthetic import MEI_HEADER

    (folder / "multiemotions_it").mkdir(parents=True, exist_ok=True)
    with open(folder / "multiemotions_it" / "MultiEmotions-It.tsv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(MEI_HEADER)
        w.writerows(rows)
    return folder


# --------------------------------------------------------------------------------------
# Adapters


def test_multiemotions_it_follows_emits_love_convention(tmp_path):
    write_mei(tmp_path, [
        mei_row("solo amore", ["LOVE"], {"GIOIA", "FIDUCIA"}),              # the dyad's columns: cleared
        mei_row("amore e gioia", ["LOVE", "JOY"], {"GIOIA", "FIDUCIA"}),    # joy named on its own: kept
        mei_row("amore nostalgico", ["LOVE", "SENTIMENTALITY"], {"GIOIA", "FIDUCIA", "TRISTEZZA"}),  # trust+sadness
        mei_row("che rabbia", ["ANGER"], {"RABBIA"}),
        mei_row("niente", [], set()),                                       # no emotion: Neutral
        mei_row("delusione", ["DISAPPOINTMENT"], {"SORPRESA", "TRISTEZZA"}),  # a dyad without Love: as annotated
    ])
    c = load_multiemotions_it(tmp_path)
    names = [{TASK_A_LABELS[j] for j in np.flatnonzero(row)} for row in c.labels]
    assert names == [{"Love"}, {"Love", "Joy"}, {"Love", "Trust", "Sadness"}, {"Anger"}, {"Neutral"},
                     {"Surprise", "Sadness"}]
    assert c.mask.all() and c.is_proxy and c.summary()["masked_labels"] == []


def test_synthetic_corpora_map_back_to_their_labels(tmp_path):
    folder = write_extra_folder(tmp_path, n=40, seed=5)
    _, texts, y, _ = make_rows(40, 5, "x")
    mei = load_extra("multiemotions-it", folder, TASK_A_LABELS)
    assert mei.texts == texts and np.array_equal(mei.labels, y) and mei.weight == 1.0
    xed = load_extra("xed-it:0.5", folder, TASK_A_LABELS)
    assert xed.weight == 0.5 and xed.skipped_lines == 1  # the alignment-metadata line
    assert not xed.mask[:, [A["Love"], A["Neutral"]]].any() and xed.mask.sum(1).tolist() == [8] * len(xed)
    assert xed.summary()["masked_labels"] == ["Love", "Neutral"]
    assert xed.labels[:, A["Love"]].sum() == 0  # masked cells are never positives
    en = load_extra("xed-en", folder, TASK_A_LABELS)
    assert en.summary()["masked_labels"] == ["Love"] and len(en) > len(xed)
    neutral = en.labels[:, A["Neutral"]] == 1
    assert neutral.any() and en.labels[neutral].sum() == neutral.sum()  # neutral lines: Neutral alone


def test_a_table_annotates_its_label_columns_only(tmp_path):
    path = tmp_path / "more.csv"
    path.write_text("text,Fear,Anger\npaura del buio,1,0\nche rabbia,0,1\n", encoding="utf-8")
    c = load_extra(f"{path}:2", tmp_path, TASK_A_LABELS)
    assert c.weight == 2.0 and c.name == "more.csv"
    assert c.summary()["masked_labels"] == [n for n in TASK_A_LABELS if n not in ("Fear", "Anger")]
    assert c.labels[:, A["Fear"]].tolist() == [1, 0] and c.labels[:, A["Anger"]].tolist() == [0, 1]


def test_specs():
    assert parse_spec("xed-it") == ("xed-it", 1.0)
    assert parse_spec("multiemotions-it:0.25") == ("multiemotions-it", 0.25)
    assert parse_spec("C:/data/x.csv") == ("C:/data/x.csv", 1.0)  # a colon that is not a weight
    for bad in ("xed-it:0", "xed-it:-1", ":2"):
        with pytest.raises(SettingsError):
            parse_spec(bad)


def test_evaluation_duplicates_are_dropped_and_counted(tmp_path):
    write_mei(tmp_path, [mei_row("Bellissima!!", [], set()), mei_row("bellissima", [], set()),
                         mei_row("Che   PAURA", ["FEAR"], {"PAURA"}), mei_row("un testo nuovo", [], set()),
                         mei_row("!!!", [], set())])
    c = load_multiemotions_it(tmp_path)
    cleaner = TextCleaner(CleaningConfig())
    kept = drop_evaluation_duplicates(c, {"test": ["che paura"], "ood": ["Bellissima", "?"]},
                                      lambda t: loose_key(t, cleaner))
    assert kept.texts == ["un testo nuovo", "!!!"] and kept.dropped == {"test": 1, "ood": 2}
    assert kept.summary()["dropped_equal_to_evaluation"] == {"test": 1, "ood": 2}


def test_real_corpora_counts(shared_extra_dir, emit_data_dir):
    mei = load_extra("multiemotions-it", shared_extra_dir, TASK_A_LABELS)
    pos = mei.summary()["positives"]
    assert len(mei) == 3240 and pos["Love"] == 560 and pos["Neutral"] == 470 and pos["Fear"] == 66
    assert pos["Joy"] < 718 and pos["Trust"] < 1834  # Love's dyad no longer sets both (EMit's convention)
    xed = load_extra("xed-it", shared_extra_dir, TASK_A_LABELS)
    assert len(xed) == 6550 and xed.skipped_lines == 363
    import pandas as pd

    ood = pd.read_csv(emit_data_dir / "emit_test_nolabel_out_of_domain.csv")["text"].tolist()
    test = pd.read_csv(emit_data_dir / "emit_test.csv")["text"].tolist()
    cleaner = TextCleaner(CleaningConfig())
    kept = drop_evaluation_duplicates(mei, {"test": test, "ood": ood}, lambda t: loose_key(t, cleaner))
    assert kept.dropped == {"test": 0, "ood": 24} and len(kept) == 3240 - 24


# --------------------------------------------------------------------------------------
# Masks in the members


@pytest.mark.parametrize("loss", [WeightedBCELoss(torch.tensor([2.0, 1.0, 3.0])), FocalLoss(2.0, 0.25),
                                  AsymmetricLoss()])
def test_a_masked_label_gets_no_gradient(loss):
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    mask = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=bool)
    weights = torch.as_tensor(cell_weights(targets.numpy(), mask, np.array([1.0, 0.5, 1.0, 2.0])))
    loss(logits, targets, weights).backward()
    assert (logits.grad[~torch.as_tensor(mask)] == 0).all() and (logits.grad[torch.as_tensor(mask)] != 0).all()
    # flipping a masked target changes nothing; with all-ones weights the loss is the plain mean
    flipped = targets.clone()
    flipped[1, 1] = 1 - flipped[1, 1]
    assert torch.equal(loss(logits, flipped, weights), loss(logits, targets, weights))
    ones = torch.ones(4, 3)
    assert torch.allclose(loss(logits, targets, ones), loss(logits, targets))


def test_masked_statistics():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    mask = np.array([[1, 1], [1, 1], [1, 0], [1, 0]], dtype=bool)
    lo = prior_log_odds(y, mask)  # label 0: 2 of 4; label 1: 0 of the 2 annotated rows
    assert abs(lo[0]) < 1e-9 and lo[1] < -5


def test_linear_heads_fit_each_label_on_its_annotated_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    Y = (X[:, :2] > 0).astype(int)
    mask = np.ones_like(Y, dtype=bool)
    mask[40:, 1] = False
    junk = Y.copy()
    junk[40:, 1] = 1  # whatever sits in a masked cell is ignored
    W, b = fit_logistic_heads(X, junk, mask=mask)
    W1, b1 = fit_logistic_heads(X[:40], Y[:40, 1:2])
    assert np.allclose(W[1], W1[0]) and np.isclose(b[1], b1[0])
    W2, _ = fit_logistic_heads(X, Y, sample_weight=np.r_[np.ones(40), np.full(40, 3.0)])
    assert not np.allclose(W2, fit_logistic_heads(X, Y)[0])  # the weights count


# --------------------------------------------------------------------------------------
# Folds


class Recorder:
    """A member that remembers what it trained on; predicts 1 for rows it saw, else 0."""

    kind = "recorder"

    def fit(self, texts, labels, label_names, mask=None, sample_weight=None, extra_rows=None):
        self.texts, self.seen, self.mask, self.weight, self.extra = list(texts), set(texts), mask, sample_weight, \
            extra_rows
        return self

    def predict_proba(self, texts):
        return np.array([[float(t in self.seen)] * 2 for t in texts])


def test_extra_rows_train_everywhere_and_proxy_rows_get_one_out_of_fold_prediction():
    y = np.eye(2, dtype=int)[np.arange(40) % 2]
    plan = kfold_plan(y, 4, seed=0)
    fold_of = np.r_[np.full(10, -1), kfold_plan(y[:12], 4, seed=0).to_dict()["fold_of_row"]]  # 10 + 12 proxy rows
    full = with_extra_rows(plan, fold_of)
    for i, (tr, held) in enumerate(full.folds):
        assert set(range(40, 50)) <= set(tr)                       # plain extra rows: always trained on
        assert not set(held) & set(range(40, 50))                  # ... never held out
        assert set(held[held >= 50] - 50) == set(np.flatnonzero(fold_of[10:] == i))
    assert sorted(full.extra_rows.tolist()) == list(range(50, 62)) and np.array_equal(full.rows, np.arange(40))
    texts = [f"t{i}" for i in range(62)]
    labels = np.r_[y, y[:22]]
    mask = np.ones_like(labels, dtype=bool)
    mask[40:, 1] = False
    cf = crossfit("rec", lambda i: Recorder(), texts, labels, ["a", "b"], full, {}, mask=mask,
                  sample_weight=np.r_[np.ones(40), np.full(22, 0.5)])
    assert (cf.oof == 0).all() and (cf.oof_extra == 0).all()  # no row predicted by a model that saw it
    assert cf.oof_extra.shape == (12, 2)
    assert all(m.mask is not None and m.weight.min() == 0.5 for m in cf.models)
    assert all([int(t[1:]) >= 40 for t in m.texts] == list(m.extra) for m in cf.models)  # which rows are extra
    alone = crossfit("rec", lambda i: Recorder(), texts, labels, ["a", "b"], full, {}, mask=mask, use_extra=False)
    assert all(m.mask is None and not any(int(t[1:]) >= 40 for t in m.seen) for m in alone.models)
    assert full.to_dict()["extra"]["n"] == 22


# --------------------------------------------------------------------------------------
# Runs


def test_run_with_extra_data_end_to_end(tiny_model, emit_folder, extra_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report", "--extra-data", "multiemotions-it", "--extra-data", "xed-it:0.5",
                 "--extra-data-dir", str(extra_folder)] + TINY_TRAIN + TINY_FOLDS) == 0
    m = json.loads((out / "metrics.json").read_text())
    corpora = {c["name"]: c for c in m["extra_data"]["corpora"]}
    assert corpora["multiemotions-it"]["dropped_equal_to_evaluation"] == {"test": 2, "ood": 3}
    assert corpora["multiemotions-it"]["rows"] == 85 and corpora["xed-it"]["masked_labels"] == ["Love", "Neutral"]
    assert m["ood_proxy"]["mode"] == "out-of-fold" and m["ood_proxy"]["n"] == 85
    assert m["selection"]["n"] == 300  # every choice on the task's own out-of-fold rows
    for v in m["models"].values():
        assert 0 <= v["ood_proxy"]["macro_f1"] <= 1
    folds = json.loads((out / "folds.json").read_text())
    for plan in ("default", "transformer"):
        extra = np.array(folds[plan]["extra"]["fold_of_row"])
        assert len(extra) == 85 + corpora["xed-it"]["rows"]
        assert (extra[85:] == -1).all() and sorted(set(extra[:85])) == list(range(folds[plan]["k"]))
    pred = np.load(out / "predictions.npz")
    assert pred["y_ood_proxy"].shape == (85, 10) and pred["member:transformer_ood_proxy"].shape == (85, 10)
    # the proxy labels are the corpus' rows held out, in order
    _, texts, y, _ = make_rows(90, 5, "x")
    assert np.array_equal(pred["y_ood_proxy"], y[5:])


def test_zero_shot_proxy_without_extra_data(emit_folder, extra_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out), "--no-report",
                 "--extra-data-dir", str(extra_folder)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["ood_proxy"]["mode"] == "zero-shot" and m["ood_proxy"]["n"] == 85 and "extra_data" not in m
    assert m["models"]["tfidf"]["ood_proxy"]["macro_f1"] > 0.5  # the synthetic cues transfer
    out2 = tmp_path / "run2"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out2), "--no-report",
                 "--extra-data-dir", str(extra_folder), "--ood-proxy", "none"]) == 0
    assert "ood_proxy" not in json.loads((out2 / "metrics.json").read_text())


def test_extra_rows_change_the_cheap_members(emit_folder, extra_folder, tmp_path):
    runs = {}
    for name, flags in (("alone", []), ("mixed", ["--extra-data", "xed-it"]),
                        ("not-tfidf", ["--extra-data", "xed-it", "--extra-data-members", "lexicon"])):
        out = tmp_path / name
        assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out), "--no-report",
                     "--ood-proxy", "none", "--extra-data-dir", str(extra_folder)] + flags) == 0
        runs[name] = np.load(out / "predictions.npz")["member:tfidf_validation"]
    assert not np.array_equal(runs["alone"], runs["mixed"]) and np.array_equal(runs["alone"], runs["not-tfidf"])


@pytest.mark.parametrize("case", ["present", "absent", "none", "own-corpus", "own-labels", "config-file", "task-b",
                                  "baseline", "none-and-more"])
def test_run_profiles_train_on_multiemotions_it_when_present(emit_folder, extra_folder, tmp_path, capsys, case):
    """`emitlab run` (every profile) on task A trains on MultiEmotions-It with the domain marker and Fear
    masked on it when its file is in the extra-data folder and nothing else says what extra data to use;
    `--extra-data none` turns it off; a flag or config-file key of the user's replaces it whole."""
    from emitlab.settings import EXTRA_DATA_DEFAULT

    folder = tmp_path / "empty" if case == "absent" else extra_folder
    flags = {"none": ["--extra-data", "none"], "own-corpus": ["--extra-data", "xed-it"],
             "own-labels": ["--extra-data-labels", "Fear"], "task-b": ["--task", "B"],
             "config-file": ["--config", str(tmp_path / "cfg.json")],
             "none-and-more": ["--extra-data", "none", "--extra-data", "xed-it"]}.get(case, [])
    (tmp_path / "cfg.json").write_text(json.dumps({"data": {"domain_marker": False}}))
    command = "baseline" if case == "baseline" else "run"
    code = main([command, "--data", str(emit_folder), "--out", str(tmp_path / "run"), "--extra-data-dir", str(folder),
                 "--print-config", *flags])
    if case == "none-and-more":
        assert code != 0 and "--extra-data none with corpora" in capsys.readouterr().err
        return
    assert code == 0
    data = json.loads(capsys.readouterr().out)["data"]
    recipe = {k: data[k] for k in EXTRA_DATA_DEFAULT}
    if case == "present":
        assert recipe == EXTRA_DATA_DEFAULT and "Fear" not in data["extra_data_labels"]
        assert len(data["extra_data_labels"]) == len(TASK_A_LABELS) - 1
    else:
        assert data["extra_data"] == {"own-corpus": ["xed-it"]}.get(case, [])
        assert data["extra_data_labels"] == {"own-labels": ["Fear"]}.get(case, []) and not data["domain_marker"]


def test_the_run_profiles_extra_data_end_to_end(emit_folder, extra_folder, tmp_path):
    """A quick-profile run with the default extra data: MultiEmotions-It trains (out-of-fold proxy, the
    marker in the run's settings), and its metrics say so; with --extra-data none it is zero-shot."""
    out = tmp_path / "run"
    assert main(["-q", "run", "--profile", "quick", "--members", "tfidf", "lexicon", "--data", str(emit_folder),
                 "--out", str(out), "--no-report", "--extra-data-dir", str(extra_folder)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in m["extra_data"]["corpora"]] == ["multiemotions-it"]
    assert m["extra_data"]["corpora"][0]["masked_labels"] == ["Fear"] and m["ood_proxy"]["mode"] == "out-of-fold"
    assert json.loads((out / "config.json").read_text())["data"]["domain_marker"] is True
    alone = tmp_path / "alone"
    assert main(["-q", "run", "--profile", "quick", "--members", "tfidf", "lexicon", "--data", str(emit_folder),
                 "--out", str(alone), "--no-report", "--extra-data-dir", str(extra_folder),
                 "--extra-data", "none"]) == 0
    m = json.loads((alone / "metrics.json").read_text())
    assert "extra_data" not in m and m["ood_proxy"]["mode"] == "zero-shot"


@pytest.mark.parametrize("case", ["missing", "malformed", "task-b", "twice", "unknown"])
def test_clear_errors(emit_folder, tmp_path, capsys, case):
    folder = tmp_path / "extra"
    folder.mkdir()
    flags = ["--extra-data", "multiemotions-it"]
    want = str(folder / "multiemotions_it" / "MultiEmotions-It.tsv")
    if case == "malformed":
        write_mei(folder, [mei_row("ok", ["JOY"], {"GIOIA"}), mei_row("bad", ["JOY"], {"GIOIA"})])
        path = folder / "multiemotions_it" / "MultiEmotions-It.tsv"
        path.write_text(path.read_text().replace("YouTube Ad\tt\thttp://x\tbad\t0\t0\t0\t0\t1",
                                                 "YouTube Ad\tt\thttp://x\tbad\t0\t0\t0\t0\tsi"))
        want = f"{path}: line 3, column 'GIOIA'"
    elif case == "task-b":
        write_extra_folder(folder, n=20)
        flags += ["--task", "B"]
        want = "annotates EMit task A's emotions"
    elif case == "twice":
        write_extra_folder(folder, n=20)
        flags += ["--extra-data", "multiemotions-it:0.5"]
        want = "names a corpus twice"
    elif case == "unknown":
        flags = ["--extra-data", "goemotions"]
        want = "not a known corpus (multiemotions-it, xed-it, xed-en)"
    code = main(["-q", "baseline", "--data", str(emit_folder), "--out", str(tmp_path / "run"),
                 "--extra-data-dir", str(folder)] + flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and want in err, err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_errors_from_python_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="missing"):
        load_extra("xed-it", tmp_path, TASK_A_LABELS)
    (tmp_path / "x.csv").write_text("text,Other\nciao,1\n")
    with pytest.raises(DataError, match="no label column"):
        load_extra(str(tmp_path / "x.csv"), tmp_path, TASK_A_LABELS)


# --------------------------------------------------------------------------------------
# Rare emotions


def test_rare_labels_and_oversampling():
    from emitlab.data.augment import oversample_index, rare_label_mask

    y = np.zeros((20, 3), dtype=int)
    y[:, 0] = 1
    y[0, 1] = 1           # label 1 on 5% of the rows: rare
    y[1:5, 2] = 1         # label 2 on 20%: not rare
    rare = rare_label_mask(y, ["a", "b", "c"])
    assert rare.tolist() == [False, True, False]
    assert rare_label_mask(y, ["a", "b", "c"], ["c"]).tolist() == [False, False, True]
    with pytest.raises(SettingsError, match="unknown label"):
        rare_label_mask(y, ["a", "b", "c"], ["Fear"])
    idx = oversample_index(y, rare, 3)
    assert len(idx) == 22 and (idx == 0).sum() == 3 and np.array_equal(idx[:20], np.arange(20))
    mask = np.ones_like(y, dtype=bool)
    mask[0, 1] = False  # a masked positive is not a positive
    assert len(oversample_index(y, rare, 3, mask)) == 20
    assert np.array_equal(oversample_index(y, rare, 1), np.arange(20))


def test_extra_rows_for_some_labels_only(tmp_path):
    from emitlab.data.extra import restrict_labels

    folder = write_extra_folder(tmp_path, n=40, seed=5)
    c = load_extra("xed-it", folder, TASK_A_LABELS)
    keep = np.isin(TASK_A_LABELS, ["Fear", "Anger"])
    r, left = restrict_labels(c, keep)
    assert (r.mask.any(0) == keep).all() and len(r) < len(c) and len(r) + len(left) == len(c)
    assert r.labels[:, keep].any(1).all()  # every row kept holds one of those labels
    assert not left.labels[:, keep].any() and np.array_equal(left.mask, c.mask[~np.isin(c.ids, r.ids)])
    assert not r.labels[:, ~keep].any()  # trained on those labels only, but scored on its own annotation:
    assert np.array_equal(r.annotation, c.labels[np.isin(c.ids, r.ids)]) and r.annotation[:, ~keep].any()
    assert np.array_equal(r.subset(np.arange(3)).annotation, r.annotation[:3])


def test_extra_data_rows_samples_the_corpora_but_the_proxy(emit_folder, extra_folder, tmp_path):
    """--extra-data-rows N: at most N rows of each extra corpus, drawn with the seed (the same seed, the
    same rows), said in metrics.json; MultiEmotions-It, the proxy, stays whole."""
    from emitlab.data.extra import sample_rows

    c = load_extra("xed-it", extra_folder, TASK_A_LABELS)
    s = sample_rows(c, 10, seed=1)
    assert len(s) == 10 and s.sampled_from == len(c) and set(s.ids) < set(c.ids)
    assert [c.ids.index(i) for i in s.ids] == sorted(c.ids.index(i) for i in s.ids)  # the corpus' order
    assert np.array_equal(s.labels, c.labels[[c.ids.index(i) for i in s.ids]])
    assert sample_rows(c, 10, seed=1).ids == s.ids and sample_rows(c, 10, seed=2).ids != s.ids
    assert sample_rows(c, 0, seed=1) is c and sample_rows(c, len(c), seed=1) is c
    out = tmp_path / "run"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out), "--no-report",
                 "--extra-data-dir", str(extra_folder), "--extra-data", "xed-it", "--extra-data", "multiemotions-it",
                 "--extra-data-rows", "10"]) == 0
    corpora = {c["name"]: c for c in json.loads((out / "metrics.json").read_text())["extra_data"]["corpora"]}
    assert corpora["xed-it"]["rows"] <= 10 and corpora["xed-it"]["sampled_from"] == len(c)
    assert corpora["multiemotions-it"]["sampled_from"] is None and corpora["multiemotions-it"]["rows"] > 10


def test_a_proxy_corpus_used_for_some_labels_is_scored_on_its_own_gold(emit_folder, extra_folder, tmp_path):
    """--extra-data-labels trains on MultiEmotions-It's rows for those labels only, but its proxy score
    stays on its own annotation: Fear's gold kept on the rows held out, and the rows it leaves out of
    training (Fear alone) predicted by the fold models and scored too."""
    keep = [n for n in TASK_A_LABELS if n != "Fear"]
    out = tmp_path / "run"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out), "--no-report",
                 "--extra-data", "multiemotions-it", "--extra-data-labels", *keep,
                 "--extra-data-dir", str(extra_folder)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    _, _, y, _ = make_rows(90, 5, "x")  # the corpus' rows; the first 5 equal evaluation texts
    fear_only = (y[:, A["Fear"]] == 1) & (y.sum(1) == 1)
    first = np.arange(len(y)) < 5
    used, untrained = np.flatnonzero(~fear_only & ~first), np.flatnonzero(fear_only & ~first)
    p = m["ood_proxy"]
    assert p["mode"] == "out-of-fold" and p["n_untrained"] == len(untrained) > 0
    assert p["n"] == p["n_out_of_fold"] + p["n_untrained"] == 85
    assert p["dropped_equal_to_evaluation"] == {"test": 2, "ood": 3}  # of the corpus, both parts
    fold_of = np.array(json.loads((out / "folds.json").read_text())["default"]["extra"]["fold_of_row"])
    expected = np.concatenate([y[used[fold_of >= 0]], y[untrained]])
    pred = np.load(out / "predictions.npz")
    assert np.array_equal(pred["y_ood_proxy"], expected) and pred["member:tfidf_ood_proxy"].shape == expected.shape
    assert expected[: p["n_out_of_fold"], A["Fear"]].any()  # Fear beside another label on a held-out row
    assert m["models"]["tfidf"]["ood_proxy"]["per_label"]["Fear"]["support"] == int(expected[:, A["Fear"]].sum())
    from emitlab.report import write_report

    write_report(out)  # and the report says how those rows were predicted
    assert f"({len(untrained)} of them, with none of the --extra-data-labels" in (out / "report.html").read_text()


def test_oversampling_in_the_transformer(tiny_model, emit_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report", "--ood-proxy", "none", "--oversample-rare", "3", "--rare-labels", "Fear",
                 *TINY_TRAIN, "--epochs", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    info = m["members"]["transformer"]["training"][0]
    folds = json.loads((out / "folds.json").read_text())
    trained = [i for i, f in enumerate(folds["default"]["fold_of_row"]) if f == -1]
    from emitlab.data.loading import load_emit

    y = load_emit(emit_folder).train.labels[trained]
    assert info["training_rows"] == len(trained) + 2 * int(y[:, A["Fear"]].sum())


def test_domain_marker(emit_folder, extra_folder, tmp_path, capsys):
    """--domain-marker: each text starts with its source's word (a feature the linear members see); the
    out-of-domain file is predicted as youtube (MultiEmotions-It's domain), the export as twitter unless
    told otherwise, and it reproduces the run's probabilities for both."""
    import pandas as pd

    from emitlab.inference import EmotionClassifier

    out = tmp_path / "run"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out), "--no-report",
                 "--extra-data", "multiemotions-it", "--extra-data", "xed-it", "--extra-data-dir", str(extra_folder),
                 "--domain-marker", "--export"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "model" / "emitlab.json").read_text())
    assert meta["domain_marker"]["default"] == "twitter"
    assert set(meta["domain_marker"]["markers"]) == {"twitter", "youtube", "subtitles"}
    vocab = json.loads((out / "members" / "tfidf" / "fold-0" / "word_vocabulary.json").read_text())
    assert {"dominiotwitter", "dominioyoutube", "dominiosubtitles"} <= set(vocab)
    assert m["export"]["reload_max_abs_diff"] == 0.0  # the test file, as twitter
    pred = np.load(out / "predictions.npz")
    clf = EmotionClassifier.from_pretrained(out / "model")
    ood = pd.read_csv(emit_folder / "emit_test_nolabel_out_of_domain.csv")["text"].tolist()
    as_twitter = clf.predict_proba(ood)
    clf.set_domain("youtube")
    assert np.array_equal(clf.predict_proba(ood), pred[f"{m['best_model']}_ood"])
    assert not np.array_equal(as_twitter, pred[f"{m['best_model']}_ood"])
    assert main(["predict", "--model", str(out / "model"), "--domain", "reddit", "ciao"]) == 2
    assert "knows the domains subtitles, twitter, youtube" in capsys.readouterr().err
    assert main(["predict", "--model", str(out / "model"), "--domain", "youtube", "ciao"]) == 0


def test_elita_word_swap():
    from emitlab.data.augment import EmotionWordSwap, augment_rare_rows

    swap = EmotionWordSwap(TASK_A_LABELS)
    assert {"Fear", "Anger", "Love"} <= set(swap.pools) and "Neutral" not in swap.pools
    assert "paura" in swap.members["Fear"] and "terrore" in swap.members["Fear"]
    rng = np.random.default_rng(0)
    out = swap.swap("Ho PAURA, Paura del buio!", ["Fear"], rng)
    words = out.split()
    assert out != "Ho PAURA, Paura del buio!" and words[0] == "Ho" and out.endswith("!")
    assert words[2].rstrip(",")[0].isupper() and words[2].rstrip(",").lower() in swap.members["Fear"]
    assert swap.swap("oggi piove", ["Fear"], rng) is None          # no emotion word: no copy
    assert swap.swap("ho paura", ["Neutral"], rng) is None         # a label without a pool
    texts = ["ho paura del buio", "oggi piove", "che rabbia furioso"]
    y = np.zeros((3, 10), dtype=int)
    y[0, A["Fear"]] = y[1, A["Fear"]] = y[2, A["Anger"]] = 1
    rare = np.isin(TASK_A_LABELS, ["Fear"])
    new, source = augment_rare_rows(texts, y, TASK_A_LABELS, rare, 3, seed=1)
    assert set(source) == {0} and 1 <= len(new) <= 3 and len(set(new)) == len(new) and texts[0] not in new
    again, _ = augment_rare_rows(texts, y, TASK_A_LABELS, rare, 3, seed=1)
    assert again == new  # seeded


def test_swapped_copies_in_the_transformer(tiny_model, emit_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report", "--ood-proxy", "none", "--augment-rare", "2", "--rare-labels", "Fear", "Anger",
                 *TINY_TRAIN, "--epochs", "1"]) == 0
    info = json.loads((out / "metrics.json").read_text())["members"]["transformer"]["training"][0]
    folds = json.loads((out / "folds.json").read_text())
    trained = [i for i, f in enumerate(folds["default"]["fold_of_row"]) if f == -1]
    from emitlab.data.loading import load_emit

    y = load_emit(emit_folder).train.labels[trained]
    rare_rows = int(y[:, [A["Fear"], A["Anger"]]].any(1).sum())
    assert len(trained) + rare_rows <= info["training_rows"] <= len(trained) + 2 * rare_rows  # the cues swap


def test_two_stages(tiny_model, emit_folder, extra_folder, tmp_path):
    """--extra-first-epochs: the extra rows train first, alone, then the task's rows; the member kept is
    the second stage's, chosen (90/10 mode) on the task's validation rows only."""
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report", "--extra-data", "xed-it", "--extra-data-dir", str(extra_folder),
                 "--extra-first-epochs", "1", *TINY_TRAIN]) == 0
    m = json.loads((out / "metrics.json").read_text())
    info = m["members"]["transformer"]["training"][0]
    folds = json.loads((out / "folds.json").read_text())
    n_task = sum(f == -1 for f in folds["default"]["fold_of_row"])
    n_extra = m["extra_data"]["corpora"][0]["rows"]
    assert info["stage_1"]["rows"] == n_extra and info["training_rows"] == n_task
    assert info["stage_1"]["global_steps"] == -(-n_extra // 16)  # 1 epoch of batches of 16
    assert (out / "work" / "transformer" / "fold-0" / "stage-1" / "trainer_log.json").is_file()
    assert not (out / "work" / "transformer" / "fold-0" / "stage-1" / "checkpoints").exists()
    assert m["models"]["transformer"]["validation"]["macro_f1"] > 0.3
