"""``emitlab distill``: a student from a tiny run's ensemble, trained on out-of-fold soft targets,
calibrated on its own held-out tenth, exported, reloaded, predicted and served like any export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emitlab.cli import main
from emitlab.distill import RESULT_FILE, STUDENT_EXPORT, soft_targets, teacher_predictions

FAST = ["--speed-texts", "16"]
#: The student of the ``distilled`` fixture (one of the tiny teacher encoder's two layers), the network alone.
STUDENT = ["--gold-weight", "0.3", "--student-layers", "1", "--keep-members", "none"]


@pytest.fixture(scope="module")
def distilled(tiny_run, emit_folder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("distill") / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    assert main(["-q", "distill", str(run), "--data", str(emit_folder), *STUDENT, *FAST]) == 0
    return run


def test_the_student_is_an_ordinary_export(distilled, capsys):
    result = json.loads((distilled / RESULT_FILE).read_text())
    assert (distilled / STUDENT_EXPORT / "emitlab.json").is_file() and (distilled / "student.zip").is_file()
    meta = json.loads((distilled / STUDENT_EXPORT / "emitlab.json").read_text())
    assert [m["kind"] for m in meta["members"]] == ["transformer"] and len(meta["members"][0]["folds"]) == 1
    assert result["export"]["reload_max_abs_diff"] < 1e-5
    assert 0 <= result["student"]["test"]["macro_f1"] <= 1 and "per_label_f1" in result["student"]["test"]
    assert result["teacher"]["test"]["macro_f1"] == json.loads((distilled / "metrics.json").read_text())[
        "models"][result["teacher"]["model"]]["test"]["macro_f1"]
    assert result["speed"]["texts"] == 16 and result["speed"]["student_texts_per_s"] > 0
    assert result["size_bytes"]["student"] > 0
    assert not result["vocabulary"]["trimmed"] and "WordPiece" in result["vocabulary"]["why"]  # tiny BERT's
    assert result["seed"] == json.loads((distilled / "config.json").read_text())["data"]["seed"]  # --seed -1
    # --student-layers 1: the tiny teacher encoder's lower layer of two, and the export keeps the cut
    fold = distilled / STUDENT_EXPORT / meta["members"][0]["folds"][0]["path"]
    assert json.loads((fold / "config.json").read_text())["num_hidden_layers"] == 1
    assert result["settings"]["train"]["num_layers"] == 1
    # predict like any export
    capsys.readouterr()
    assert main(["predict", "--model", str(distilled / STUDENT_EXPORT), "paura terrore", "amore cuore"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and all(set(r["probabilities"]) == set(meta["labels"]) for r in rows)
    # and serve
    from fastapi.testclient import TestClient

    from emitlab.inference import EmotionClassifier
    from emitlab.serving.app import create_app

    with TestClient(create_app(EmotionClassifier.from_pretrained(distilled / STUDENT_EXPORT))) as client:
        r = client.post("/predict", json={"texts": ["che schifo"]})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    # submissions of the student
    assert (distilled / "distill" / "student_submission_task-A_test.csv").is_file()


def test_report_and_compare_show_teacher_and_student(distilled, capsys):
    from emitlab.report import write_report
    from emitlab.report.compare import compare_runs

    html = write_report(distilled).read_text(encoding="utf-8")
    assert "Distilled student: teacher and student" in html and "per-label test F1, teacher and student" in html
    frame = compare_runs([distilled])
    student = frame[frame["model"] == "student"].iloc[0]
    result = json.loads((distilled / RESULT_FILE).read_text())
    assert student["test_macro_f1"] == result["student"]["test"]["macro_f1"]
    assert student["combiner"] == f"distilled from {result['teacher']['model']}"
    assert main(["compare", str(distilled)]) == 0
    assert "student" in capsys.readouterr().out


def test_soft_targets_come_only_from_out_of_fold_predictions(distilled):
    """Each training text's target is gold mixed with the teacher's out-of-fold probability; that
    probability is the chosen combination of the members' out-of-fold predictions, and each of those
    came from the one fold model whose training rows do not include the text."""
    best, arrays = teacher_predictions(distilled)
    rows, gold = arrays["validation_rows"], arrays["y_validation"]
    targets = soft_targets(gold, np.arange(len(rows)), arrays["validation"], 0.3)
    np.testing.assert_allclose(targets, 0.3 * gold + 0.7 * arrays["validation"])

    folds = json.loads((distilled / "folds.json").read_text())
    with np.load(distilled / "predictions.npz", allow_pickle=False) as z:
        member_oof = {k.split(":", 1)[1].rsplit("_", 1)[0]: z[k] for k in z.files
                      if k.startswith("member:") and k.endswith("_validation")}
    for name, oof in member_oof.items():
        fold_of = np.asarray(folds["transformer" if name == "transformer" and "transformer" in folds
                                   else "default"]["fold_of_row"])
        assert fold_of.min() == 0 and len(fold_of) == len(rows)  # every text held out by exactly one fold
        for i in range(fold_of.max() + 1):
            held = np.flatnonzero(fold_of == i)  # fold i's model trained on the rows with fold_of != i
            with np.load(distilled / "members" / name / f"fold-{i}" / "fold_predictions.npz") as z:
                np.testing.assert_allclose(oof[held], z["heldout"], atol=1e-12)  # the held rows' part is its own

    from emitlab.engine.ensemble import combiner_from_dict

    metrics = json.loads((distilled / "metrics.json").read_text())
    comb = combiner_from_dict(metrics["models"][best]["combiner"])
    members = list(metrics["members"])
    if best not in members and type(comb).__name__ == "WeightedAverage":  # the stacker's are inner-CV out-of-fold
        np.testing.assert_allclose(comb.combine([member_oof[m] for m in members]), arrays["validation"], atol=1e-9)


def test_the_test_labels_choose_nothing(distilled, emit_folder, tmp_path):
    """Shuffled test labels: the same student (training, epoch, thresholds), only its test score moves."""
    shuffled = tmp_path / "emit"
    shutil.copytree(emit_folder, shuffled)
    path = shuffled / "emit_test.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    order = np.random.default_rng(3).permutation(len(body))
    labels = [r[2:] for r in body]
    body = [r[:2] + labels[j] for r, j in zip(body, order)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header] + body)
    run = tmp_path / "run"
    shutil.copytree(distilled, run, symlinks=True, ignore=shutil.ignore_patterns("distill", "student", "student.zip",
                                                                                  RESULT_FILE))
    assert main(["-q", "distill", str(run), "--data", str(shuffled), *STUDENT, "--speed-texts", "0"]) == 0
    a = json.loads((distilled / RESULT_FILE).read_text())
    b = json.loads((run / RESULT_FILE).read_text())
    assert a["student"]["calibration"] == b["student"]["calibration"]
    assert a["student"]["held_out"] == b["student"]["held_out"]
    assert a["fit"]["global_steps"] == b["fit"]["global_steps"]
    assert a["fit"]["best_eval_macro_f1_at_0.5"] == b["fit"]["best_eval_macro_f1_at_0.5"]


def test_run_with_distill_trains_the_student_after_the_run(tiny_model, emit_folder, tmp_path, capsys):
    from conftest import TINY_TRAIN

    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--members", "tfidf", "transformer", "--folds", "2", "--transformer-folds", "2",
                 "--nested-folds", "2", "--no-report", "--distill", *TINY_TRAIN]) == 0
    assert (out / STUDENT_EXPORT / "emitlab.json").is_file() and (out / RESULT_FILE).is_file()
    assert "student" in capsys.readouterr().out
    # --student-layers auto (the default) keeps all of a two-layer encoder, and distill.json records 0 = all
    result = json.loads((out / RESULT_FILE).read_text())
    assert result["settings"]["distill"]["student_layers"] == 0 and result["settings"]["train"]["num_layers"] == 0


def test_auto_student_layers_cuts_a_sixth_of_twelve_layers_or_more(tmp_path):
    from transformers import BertConfig

    from emitlab.distill import auto_student_layers, student_layers
    from emitlab.settings import DistillConfig, TrainConfig

    assert [auto_student_layers(n) for n in (None, 2, 6, 11, 12, 18, 24)] == [0, 0, 0, 0, 10, 15, 20]
    BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=12, num_attention_heads=2,
               intermediate_size=16).save_pretrained(tmp_path)  # a config is all the rule reads
    teacher = TrainConfig(model=str(tmp_path))
    assert DistillConfig().student_layers == -1  # auto
    assert student_layers(DistillConfig(), teacher) == 10
    assert student_layers(DistillConfig(student_layers=0), teacher) == 0  # all: as asked
    assert student_layers(DistillConfig(student_layers=3), teacher) == 3
    assert student_layers(DistillConfig(student_model=str(tmp_path)), TrainConfig(model="elsewhere")) == 10


def test_the_student_predicts_on_ray_like_in_one_process(distilled, tmp_path):
    pytest.importorskip("ray.data")
    import pandas as pd

    from synthetic import make_rows

    ids, texts, _, _ = make_rows(40, 12, "r")
    inp = tmp_path / "in.csv"
    pd.DataFrame({"id": ids, "text": texts}).to_csv(inp, index=False)
    model = distilled / STUDENT_EXPORT
    assert main(["-q", "predict", "--model", str(model), "--input", str(inp), "--output",
                 str(tmp_path / "one.parquet")]) == 0
    assert main(["-q", "predict", "--engine", "ray", "--model", str(model), "--input", str(inp), "--output",
                 str(tmp_path / "ray-out"), "--ray-actors", "1", "--backend", "torch"]) == 0
    one = pd.read_parquet(tmp_path / "one.parquet").sort_values("id", ignore_index=True)
    got = pd.read_parquet(tmp_path / "ray-out").sort_values("id", ignore_index=True)
    assert got["id"].tolist() == one["id"].tolist()
    p_cols = [c for c in one.columns if c.startswith("p_")]
    assert np.abs(got[p_cols].to_numpy(float) - one[p_cols].to_numpy(float)).max() <= 1e-5


def test_a_task_b_student_gets_transfer_texts_from_the_teachers_export(tiny_model, emit_folder, extra_folder,
                                                                       tmp_path):
    """Task B runs make no zero-shot proxy predictions (the corpus has no Direction/Topic labels): the
    teacher's export predicts the proxy corpus' texts, without those equal to an evaluation text."""
    from emitlab.data.cleaning import TextCleaner
    from emitlab.data.duplicates import loose_key
    from emitlab.distill import transfer_rows
    from emitlab.inference import EmotionClassifier
    from emitlab.jobs import load_data
    from emitlab.settings import CleaningConfig, DataConfig

    from conftest import TINY_TRAIN

    out = tmp_path / "run"
    assert main(["-q", "run", "--task", "B", "--data", str(emit_folder), "--model", str(tiny_model), "--out",
                 str(out), "--extra-data-dir", str(extra_folder), "--members", "tfidf", "transformer", "--folds",
                 "2", "--transformer-folds", "2", "--nested-folds", "2", "--no-report", *TINY_TRAIN]) == 0
    assert main(["-q", "distill", str(out), "--speed-texts", "0", "--epochs", "1", "--seed", "7"]) == 0
    result = json.loads((out / RESULT_FILE).read_text())
    assert result["seed"] == 7
    assert result["student"]["test"]["per_label_f1"].keys() == {"Direction", "Topic"}
    assert "predicted by the teacher's export" in result["targets"]["transfer"]
    # the texts and targets: 90 corpus rows less the 5 equal to out-of-domain or test texts
    data = load_data(DataConfig(task="B", data=str(emit_folder), extra_data_dir=str(extra_folder)))
    cleaner = TextCleaner(CleaningConfig())
    texts, probs, _ = transfer_rows(data, {}, cleaner, False, out, str(extra_folder))
    assert result["targets"]["transfer_texts"] == len(texts) == len(probs) == 85 and probs.shape[1] == 2
    evaluation = {loose_key(t, cleaner) for ds in data.prediction_sets.values() for t in ds.texts}
    assert not evaluation & {loose_key(t, cleaner) for t in texts}
    # the targets are the teacher export's probabilities of the corpus' raw texts (kept ones, in order)
    from emitlab.data.extra import ADAPTERS, PROXY_CORPUS

    kept = [t for t in ADAPTERS[PROXY_CORPUS](extra_folder).texts if loose_key(t, cleaner) not in evaluation]
    teacher = EmotionClassifier.from_pretrained(out / "model")
    np.testing.assert_allclose(teacher.predict_proba(kept[:4]), probs[:4], atol=1e-6)


def test_a_teacher_trained_on_the_proxy_corpus_gives_its_out_of_fold_predictions(tiny_model, emit_folder,
                                                                                  extra_folder, tmp_path):
    """A run with the profiles' extra data (MultiEmotions-It, the domain marker, Fear masked) trained on
    the proxy corpus: its texts transfer with the run's out-of-fold predictions of them (held-out rows,
    then the rows left out of training), not zero-shot ones; a student distils from it end to end."""
    from emitlab.data.cleaning import TextCleaner
    from emitlab.distill import transfer_rows
    from emitlab.jobs import load_data, training_rows
    from emitlab.settings import EXTRA_DATA_DEFAULT, CleaningConfig, DataConfig

    from conftest import TINY_TRAIN

    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--extra-data-dir", str(extra_folder), "--members", "tfidf", "transformer", "--folds", "2",
                 "--transformer-folds", "2", "--nested-folds", "2", "--no-report", *TINY_TRAIN]) == 0
    saved = json.loads((out / "config.json").read_text())["data"]
    assert {k: saved[k] for k in EXTRA_DATA_DEFAULT} == EXTRA_DATA_DEFAULT  # the profiles' default applied
    _, arrays = teacher_predictions(out)
    cleaner = TextCleaner(CleaningConfig())
    data = load_data(DataConfig(data=str(emit_folder), extra_data_dir=str(extra_folder), **EXTRA_DATA_DEFAULT))
    train = training_rows(data, cleaner.clean_many(data.train.texts), cleaner, True)
    texts, probs, why = transfer_rows(data, arrays, cleaner, True, out, str(extra_folder))
    assert "out-of-fold predictions" in why and len(data.proxy_untrained) > 0
    # every comment, each once: the trained ones (all held out once in 2 folds) then those left out
    assert len(texts) == len(probs) == len(arrays["ood_proxy"]) == len(train.proxy) + len(data.proxy_untrained)
    np.testing.assert_allclose(probs, arrays["ood_proxy"])
    assert texts[: len(train.proxy)] == [train.texts[i] for i in train.proxy]  # cleaned, with their marker
    assert all(t.startswith("dominioyoutube ") for t in texts)
    # another run's predictions (other gold) do not match: nothing transfers
    other = {**arrays, "ood_proxy": arrays["ood_proxy"][:-1]}
    assert transfer_rows(data, other, cleaner, True, out, str(extra_folder))[0] == []
    assert main(["-q", "distill", str(out), "--speed-texts", "0", "--epochs", "1"]) == 0
    result = json.loads((out / RESULT_FILE).read_text())
    assert result["targets"]["transfer_texts"] == len(texts) and "out-of-fold" in result["targets"]["transfer"]


def test_transfer_corpora_add_xed_texts_and_skip_what_the_teacher_trained_on(tiny_model, emit_folder,
                                                                               extra_folder, tmp_path):
    """``--transfer-corpora``: each corpus' texts (evaluation duplicates dropped) with the teacher
    export's probabilities, corpora concatenated in the order given; a corpus the teacher trained on
    gives none (its labels were seen: its predictions are not zero-shot)."""
    from emitlab.data.cleaning import TextCleaner
    from emitlab.data.duplicates import loose_key
    from emitlab.data.extra import ADAPTERS, PROXY_CORPUS, drop_evaluation_duplicates
    from emitlab.distill import transfer_rows
    from emitlab.inference import EmotionClassifier
    from emitlab.jobs import load_data, training_rows
    from emitlab.settings import CleaningConfig, DataConfig

    from conftest import TINY_TRAIN

    def loaded(**extra):  # as distill loads it: the proxy rows equal to training texts dropped
        data = load_data(DataConfig(data=str(emit_folder), extra_data_dir=str(extra_folder), **extra))
        training_rows(data, cleaner.clean_many(data.train.texts), cleaner, False)
        return data

    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--extra-data-dir", str(extra_folder), "--extra-data", "xed-it", "--members", "tfidf",
                 "transformer", "--folds", "2", "--transformer-folds", "2", "--nested-folds", "2", "--no-report",
                 *TINY_TRAIN]) == 0
    _, arrays = teacher_predictions(out)
    cleaner = TextCleaner(CleaningConfig())
    trained = loaded(extra_data=["xed-it"])
    texts, probs, why = transfer_rows(trained, arrays, cleaner, False, out, str(extra_folder),
                                      [PROXY_CORPUS, "xed-it"])
    assert "xed-it: the teacher trained on it" in why and len(texts) == len(probs) == len(trained.proxy)
    np.testing.assert_allclose(probs, arrays["ood_proxy"])  # the run's zero-shot predictions of the proxy corpus

    # the same teacher seen as one that never trained on XED: the export predicts its texts
    plain = loaded()
    texts, probs, why = transfer_rows(plain, arrays, cleaner, False, out, str(extra_folder),
                                      [PROXY_CORPUS, "xed-it"])
    evaluation = {s: ds.texts for s, ds in plain.prediction_sets.items()}
    xed = drop_evaluation_duplicates(ADAPTERS["xed-it"](extra_folder), evaluation, lambda t: loose_key(t, cleaner))
    assert 0 < len(xed) and len(texts) == len(probs) == len(plain.proxy) + len(xed)
    assert texts[len(plain.proxy):] == cleaner.clean_many(xed.texts)
    teacher = EmotionClassifier.from_pretrained(out / "model")
    np.testing.assert_allclose(probs[len(plain.proxy):][:5], teacher.predict_proba(xed.texts[:5]), atol=1e-6)
    assert why.endswith("predicted by the teacher's export") and why.count(";") == 1

    # texts equal to training texts are dropped too: two proxy rows and one XED row made equal to
    # training texts (other case and spacing), the rest as before
    train = plain.train.texts
    plain.proxy.texts[:2] = [" " + train[0].upper(), train[1] + "  "]
    edited = tmp_path / "extra-edited"
    shutil.copytree(extra_folder, edited)
    xed_file = edited / "xed" / "it-projections.tsv"
    lines = xed_file.read_text(encoding="utf-8").splitlines()
    lines[0] = train[2].upper() + "\t" + lines[0].split("\t")[1]
    xed_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got, got_probs, why = transfer_rows(plain, arrays, cleaner, False, out, str(edited), [PROXY_CORPUS, "xed-it"])
    assert "(2 equal to training texts dropped)" in why and "(1 equal to training texts dropped)" in why
    n_proxy = len(plain.proxy) - 2
    assert len(got) == len(got_probs) == n_proxy + len(xed) - 1
    assert got[:n_proxy] == texts[2:len(plain.proxy)] and got[n_proxy:] == texts[len(plain.proxy) + 1:]
    np.testing.assert_allclose(got_probs[:n_proxy], arrays["ood_proxy"][2:])  # still aligned with their texts
    np.testing.assert_allclose(got_probs[n_proxy:], probs[len(plain.proxy) + 1:], atol=1e-6)


def _fake_run(folder: Path, best: str, weights: list[float], members=("tfidf", "lexicon", "transformer")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    average = {"kind": "average", "space": "prob", "weights": weights}
    models = {m: {} for m in members} | {"average_prob": {"combiner": average},
                                          "stacker": {"combiner": {"kind": "stacker", "C": 1.0}}}
    (folder / "metrics.json").write_text(json.dumps({"best_model": best, "members": {m: {} for m in members},
                                                     "models": models}))
    return folder


def test_keep_members_puts_the_student_in_the_place_of_the_teachers_networks(tmp_path):
    """``--keep-members``: the teacher's weighted average (chosen on out-of-fold rows) with the
    student standing in for its network members; a stacker teacher lends its run's average_prob."""
    from emitlab.distill import student_combination
    from emitlab.errors import RunFolderError

    run = _fake_run(tmp_path / "a", "average_prob", [0.5, 0.2, 0.3])
    assert student_combination(run, []) == (["transformer"], {"kind": "average", "space": "prob", "weights": [1.0]})
    names, comb = student_combination(run, ["lexicon", "tfidf"])
    assert names == ["tfidf", "lexicon", "transformer"] and comb["weights"] == pytest.approx([0.5, 0.2, 0.3])
    names, comb = student_combination(run, ["tfidf"])  # lexicon dropped, the rest renormalised
    assert names == ["tfidf", "transformer"] and comb["weights"] == pytest.approx([0.625, 0.375])
    stacked = _fake_run(tmp_path / "b", "stacker", [0.4, 0.0, 0.6])
    names, comb = student_combination(stacked, ["tfidf", "lexicon"])  # a member at weight 0 stays out
    assert names == ["tfidf", "transformer"] and comb["weights"] == pytest.approx([0.4, 0.6])
    with pytest.raises(RunFolderError, match="without a network"):
        student_combination(run, ["transformer"])
    no_network = _fake_run(tmp_path / "c", "average_prob", [0.7, 0.3, 0.0])
    with pytest.raises(RunFolderError, match="no weight"):
        student_combination(no_network, ["tfidf"])
    # auto (the default): every member without a network; the student alone where there is nothing to keep
    assert student_combination(run, ["auto"])[0] == ["tfidf", "lexicon", "transformer"]
    assert student_combination(no_network, ["auto"])[0] == ["transformer"]
    assert student_combination(_fake_run(tmp_path / "d", "transformer", [1.0], members=("transformer",)),
                               ["auto"])[0] == ["transformer"]
    assert student_combination(run, ["none"])[0] == ["transformer"]


def test_the_mix_reads_only_out_of_fold_predictions_of_training_texts(tmp_path):
    """The held-out tenth is calibrated on the kept members' out-of-fold predictions of those texts;
    a text without one (a 90/10 run) is an error, not a silent in-sample prediction."""
    from emitlab.distill import StudentMix
    from emitlab.errors import RunFolderError

    run = _fake_run(tmp_path / "r", "average_prob", [0.5, 0.0, 0.5])
    rng = np.random.default_rng(0)
    oof, test = rng.random((6, 2)), rng.random((4, 2))
    np.savez(run / "predictions.npz", validation_rows=np.array([0, 1, 2, 4, 5, 7]),
             **{"member:tfidf_validation": oof, "member:tfidf_test": test})
    mix = StudentMix(run, ["tfidf", "transformer"], {"kind": "average", "space": "prob", "weights": [0.25, 0.75]}, 8)
    student = rng.random((2, 2))
    np.testing.assert_allclose(mix(student, "train", np.array([4, 0])), 0.25 * oof[[3, 0]] + 0.75 * student)
    np.testing.assert_allclose(mix(np.ones((4, 2)), "test"), 0.25 * test + 0.75)
    assert mix.has("test") and not mix.has("ood")
    with pytest.raises(RunFolderError, match="1 held-out training texts"):
        mix(student, "train", np.array([3, 4]))  # row 3 has no out-of-fold prediction
    assert mix.missing(np.array([3, 4, 6])) == 2 and mix.missing(np.array([0, 7])) == 0  # distill checks first
    assert StudentMix(run, ["transformer"], {}, 8).missing(np.array([3])) == 0  # nothing kept: nothing missing


def test_a_student_with_the_cheap_members_beside_it_exports_and_reloads(distilled, emit_folder, tmp_path, capsys):
    """``--keep-members tfidf lexicon --reuse-student``: the saved student network, not trained again,
    exported with the run's tfidf and lexicon fold models at the teacher's weights; the export reloads
    to the probabilities scored; the network alone scores as the plain student did."""
    from sklearn.metrics import f1_score

    from emitlab.inference import EmotionClassifier
    from emitlab.jobs import load_data
    from emitlab.settings import DataConfig

    run = tmp_path / "run"
    shutil.copytree(distilled, run, symlinks=True, ignore=shutil.ignore_patterns("student", "student.zip"))
    metrics = json.loads((run / "metrics.json").read_text())  # a teacher whose average weighs every member
    metrics["best_model"] = "average_prob"
    metrics["models"]["average_prob"]["combiner"]["weights"] = [0.5, 0.2, 0.3]
    (run / "metrics.json").write_text(json.dumps(metrics))
    # another gold weight than the saved student's: refused, nothing written
    assert main(["-q", "distill", str(run), "--data", str(emit_folder), "--gold-weight", "0.9",
                 "--student-layers", "1", "--reuse-student"]) != 0
    assert "gold_weight: 0.3 then, 0.9 now" in capsys.readouterr().err and not (run / STUDENT_EXPORT).exists()
    shutil.move(run / "members" / "lexicon", tmp_path / "lexicon")  # a run folder copied without its members
    assert main(["-q", "distill", str(run), "--data", str(emit_folder), *STUDENT, "--keep-members", "tfidf",
                 "lexicon", "--reuse-student"]) != 0
    assert "no fold models of lexicon under members/lexicon" in capsys.readouterr().err
    shutil.move(tmp_path / "lexicon", run / "members" / "lexicon")
    assert main(["-q", "distill", str(run), "--data", str(emit_folder), *STUDENT[:-2], "--speed-texts", "8",
                 "--reuse-student"]) == 0  # --keep-members auto: both members the teacher's average weighs
    before = json.loads((distilled / RESULT_FILE).read_text())
    result = json.loads((run / RESULT_FILE).read_text())
    assert result["reused_student"] and result["fit"] == before["fit"] and result["targets"] == before["targets"]
    assert result["student"]["members"] == ["tfidf", "lexicon", "transformer"]
    assert result["student"]["combiner"]["weights"] == pytest.approx([0.5, 0.2, 0.3])
    alone = result["student"]["network_alone"]  # the same network, calibrated as before
    assert alone["calibration"] == before["student"]["calibration"]
    assert alone["test"]["macro_f1"] == pytest.approx(before["student"]["test"]["macro_f1"], abs=1e-12)
    meta = json.loads((run / STUDENT_EXPORT / "emitlab.json").read_text())
    assert [m["name"] for m in meta["members"]] == ["tfidf", "lexicon", "transformer"]
    assert [len(m["folds"]) for m in meta["members"]] == [3, 3, 1]  # TINY_FOLDS: 3 folds of the cheap members
    assert result["export"]["reload_max_abs_diff"] < 1e-5 and result["speed"]["student_texts_per_s"] > 0
    # the reloaded export's decoded test predictions give the scored macro-F1
    data = load_data(DataConfig(data=str(emit_folder)))
    clf = EmotionClassifier.from_pretrained(run / STUDENT_EXPORT)
    pred = clf.decoder.decode(clf.predict_proba(data.prediction_sets["test"].texts))
    assert f1_score(data.prediction_sets["test"].labels, pred, average="macro", zero_division=0) == pytest.approx(
        result["student"]["test"]["macro_f1"], abs=1e-9)


def test_a_unigram_student_is_exported_with_the_vocabulary_it_needs(tiny_run, emit_folder, tmp_path):
    """--trim-vocabulary (default) with a SentencePiece-style student (a tiny XLM-R, --student-model):
    the export holds fewer pieces and embeddings, reloads to the same numbers, and distill.json counts
    the texts with a dropped piece; --no-trim-vocabulary exports the whole vocabulary."""
    from tiny import build_tiny_roberta_family

    xlmr = build_tiny_roberta_family(tmp_path / "xlmr", "xlm-roberta")
    full_size = json.loads((xlmr / "config.json").read_text())["vocab_size"]
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    common = ["-q", "distill", str(run), "--data", str(emit_folder), "--student-model", str(xlmr),
              "--keep-members", "none", *FAST]
    assert main(common) == 0
    result = json.loads((run / RESULT_FILE).read_text())
    vocabulary = result["vocabulary"]
    assert vocabulary["trimmed"] and vocabulary["pieces"] < vocabulary["of"] == full_size

    def exported_vocab_size():
        meta = json.loads((run / STUDENT_EXPORT / "emitlab.json").read_text())
        fold = run / STUDENT_EXPORT / meta["members"][0]["folds"][0]["path"]
        return json.loads((fold / "config.json").read_text())["vocab_size"]

    assert exported_vocab_size() == vocabulary["pieces"]
    assert result["export"]["reload_max_abs_diff"] < 1e-5
    dropped = vocabulary["texts_with_dropped_pieces"]
    assert "test" in dropped and all(0 <= d["changed"] <= d["texts"] for d in dropped.values())
    assert main(common + ["--reuse-student", "--no-trim-vocabulary"]) == 0
    again = json.loads((run / RESULT_FILE).read_text())
    assert again["vocabulary"] == {"trimmed": False, "why": "--no-trim-vocabulary"}
    assert exported_vocab_size() == full_size
