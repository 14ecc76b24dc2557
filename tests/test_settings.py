"""One check for every settings group (emitlab.settings.check_settings): from Python, flags and
config files alike, before any work starts; config-file errors name the file."""

from __future__ import annotations

import dataclasses
import json

import pytest

from emitlab import settings
from emitlab.cli import main
from emitlab.errors import SettingsError, UserError
from emitlab.settings import (
    GROUPS,
    CalibrationConfig,
    CleaningConfig,
    DataConfig,
    EnsembleConfig,
    LexiconConfig,
    RunConfig,
    TfidfConfig,
    TrainConfig,
    check_settings,
)

# --------------------------------------------------------------------------------------
# Python use: every group checks its values when it is made


@pytest.mark.parametrize("cls, values, message", [
    # types, from the annotations
    (TrainConfig, {"epochs": "4"}, "--epochs (train.epochs) must be a number, got '4' (str)"),
    (TrainConfig, {"epochs": True}, "must be a number, got True (bool)"),
    (TrainConfig, {"learning_rate": float("nan")}, "must be a finite number"),
    (TrainConfig, {"batch_size": 16.0}, "--batch-size (train.batch_size) must be a whole number, got 16.0 (float)"),
    (TrainConfig, {"group_by_length": "yes"}, "must be true or false"),
    (TrainConfig, {"model": 5}, "--model (train.model) must be a string"),
    (DataConfig, {"label_cols": "Joy"}, "--label-cols (data.label_cols) must be a list of strings, got 'Joy'"),
    (DataConfig, {"label_cols": ["Joy", 1]}, "must be a list of strings"),
    (CleaningConfig, {"enabled": 1}, "--clean (cleaning.enabled) must be true or false"),
    # choices (for lists: every element, each once)
    (TrainConfig, {"pooling": "bogus"}, "--pooling (train.pooling) must be one of 'mean', 'cls', got 'bogus'"),
    (CalibrationConfig, {"thresholds": "nope"}, "calibration.thresholds) must be one of 'auto', 'per_label'"),
    (TfidfConfig, {"class_weight": "auto"}, "tfidf.class_weight) must be one of 'balanced', 'none'"),
    (EnsembleConfig, {"combiners": ["average", "vote"]},
     "ensemble.combiners) must be one of 'average', 'stacker', got 'vote'"),
    (RunConfig, {"members": ["tfidf", "tfidf"]}, "names 'tfidf' more than once"),
    (RunConfig, {"members": []}, "run.members) must hold at least 1"),
    # ranges
    (TrainConfig, {"epochs": 0}, "--epochs (train.epochs) must be > 0, got 0.0"),
    (TrainConfig, {"batch_size": 0}, "train.batch_size) must be >= 1"),
    (TrainConfig, {"eval_batch_size": 0}, "train.eval_batch_size) must be >= 1"),
    (TrainConfig, {"max_length": 7}, "train.max_length) must be >= 8"),
    (TrainConfig, {"learning_rate": 0.0}, "train.learning_rate) must be > 0"),
    (TrainConfig, {"head_learning_rate": -1e-3}, "train.head_learning_rate) must be > 0"),
    (TrainConfig, {"weight_decay": -0.1}, "train.weight_decay) must be >= 0"),
    (TrainConfig, {"warmup_ratio": 1.0}, "train.warmup_ratio) must be in [0, 1), got 1.0"),
    (TrainConfig, {"dropout": 1.0}, "train.dropout) must be in [0, 1)"),
    (TrainConfig, {"focal_alpha": 1.0}, "train.focal_alpha) must be < 1 (<= 0 = off)"),
    (TrainConfig, {"eval_steps": -5}, "train.eval_steps) must be >= 0 (0 = once per epoch)"),
    (TrainConfig, {"save_total_limit": 0}, "train.save_total_limit) must be >= 1"),
    (TrainConfig, {"logging_steps": 0}, "train.logging_steps) must be >= 1"),
    (DataConfig, {"val_fraction": 0.0}, "--val-fraction (data.val_fraction) must be in (0, 1)"),
    (DataConfig, {"val_fraction": 1}, "data.val_fraction) must be in (0, 1)"),
    (DataConfig, {"seed": -1}, "--seed (data.seed) must be in [0, 4294967295]"),
    (RunConfig, {"folds": 0}, "--folds (run.folds) must be >= 1"),
    (RunConfig, {"transformer_folds": -1}, "run.transformer_folds) must be >= 0"),
    (EnsembleConfig, {"nested_folds": 1}, "ensemble.nested_folds) must be >= 2"),
    (EnsembleConfig, {"stacker_C": 0.0}, "--stacker-C (ensemble.stacker_C) must be > 0"),
    (CalibrationConfig, {"repeats": 0}, "calibration.repeats) must be >= 1"),
    (TfidfConfig, {"C": 0}, "--C (tfidf.C) must be > 0"),
    (LexiconConfig, {"C": -1.0}, "--lexicon-C (lexicon.C) must be > 0"),
    (TfidfConfig, {"max_features": 0}, "tfidf.max_features) must be >= 1"),
    (TfidfConfig, {"word_ngram_max": 0}, "tfidf.word_ngram_max) must be >= 1"),
    (TfidfConfig, {"char_ngram_min": 0}, "tfidf.char_ngram_min) must be >= 1"),
    (TfidfConfig, {"min_df": 0}, "tfidf.min_df) must be >= 1"),
    (CleaningConfig, {"max_repeat_chars": -1}, "cleaning.max_repeat_chars) must be >= 0 (0 = off)"),
    # between fields
    (TfidfConfig, {"char_ngram_min": 7}, "--char-ngram-min (tfidf.char_ngram_min) must be <= --char-ngram-max"),
])
def test_bad_values_are_settings_errors(cls, values, message):
    with pytest.raises(SettingsError) as exc:
        cls(**values)
    assert message in str(exc.value)
    assert isinstance(exc.value, UserError)


def test_defaults_pass_and_values_are_normalised():
    for cls in GROUPS:
        check_settings(cls())
    cfg = TrainConfig(epochs=4, learning_rate=1)  # an int is a fine float, and becomes one
    assert isinstance(cfg.epochs, float) and cfg.epochs == 4.0 and isinstance(cfg.learning_rate, float)
    assert DataConfig(label_cols=("Joy", "Sadness")).label_cols == ["Joy", "Sadness"]
    assert TfidfConfig(char_ngram_min=3, char_ngram_max=3).char_ngram_max == 3
    # values that look odd but are allowed: off switches and bounds themselves
    TrainConfig(focal_alpha=-1.0, max_steps=-1, eval_steps=0, early_stopping_patience=0, threads=0, layer_decay=1.0,
                warmup_ratio=0.0, dropout=0.0)
    DataConfig(seed=0)
    EnsembleConfig(combiners=[], weight_step=0.0)


def test_every_numeric_field_that_needs_a_range_has_one():
    """A new numeric setting has to say its range (or be listed here as unbounded on purpose)."""
    unbounded = {("train", "max_steps")}  # any value <= 0 means 'use the epochs'
    for cls in GROUPS:
        hints = settings.type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float) and (settings.section_name(cls), f.name) not in unbounded:
                assert {"min", "max", "gt", "lt"} & set(f.metadata), f"{cls.__name__}.{f.name} has no range"


def test_train_config_keeps_its_rules_between_fields():
    with pytest.raises(SettingsError, match="multi-sample-dropout 4 .* needs --dropout > 0"):
        TrainConfig(multi_sample_dropout=4, dropout=0.0)


def test_cleaning_config_lives_in_settings_and_is_re_exported():
    from emitlab.data import cleaning

    assert cleaning.CleaningConfig is settings.CleaningConfig
    assert CleaningConfig.from_dict(CleaningConfig(lowercase=True).to_dict()) == CleaningConfig(lowercase=True)
    with pytest.raises(SettingsError, match="unknown key"):
        CleaningConfig.from_dict({"colour": "blu"})
    assert CleaningConfig in GROUPS


# --------------------------------------------------------------------------------------
# Config files and flags, through the command line


def _run(tmp_path, capsys, *args):
    """``emitlab baseline`` with ``args``; returns (exit status, stderr)."""
    code = main(["-q", "baseline", "--out", str(tmp_path / "run"), *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("train:\n  pooling: bogus\n", "train.pooling must be one of 'mean', 'cls', got 'bogus'"),
    ("train:\n  epochs: \"4\"\n", "train.epochs must be a number, got '4' (str)"),
    ("calibration:\n  thresholds: nope\n", "calibration.thresholds must be one of"),
    ("run:\n  profile: huge\n", "run.profile must be one of 'full', 'best', 'quick', got 'huge'"),
    ("ensemble:\n  combiners: average\n", "ensemble.combiners must be a list of strings"),
    ("data:\n  val_fraction: 1.5\n", "data.val_fraction must be in (0, 1), got 1.5"),
    ("trian:\n  epochs: 2\n", "unknown section(s) 'trian' (did you mean 'train'?)"),
    ("train:\n  epoch: 2\n", "section 'train' has unknown key(s) 'epoch' (did you mean 'epochs'?)"),
    ("train: 3\n", "section 'train' must be a mapping of settings"),
    ("- train\n", "expected a mapping of sections"),
    ("train:\n  epochs: [1\n", "not valid YAML"),
])
def test_bad_config_file_is_one_line_naming_the_file(emit_folder, tmp_path, capsys, text, message):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    code, err = _run(tmp_path, capsys, "--data", str(emit_folder), "--config", str(cfg))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"emitlab: error: {cfg}") and message in err, err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_bad_json_config_and_missing_config(emit_folder, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"train": {"epochs": 3,}}')
    code, err = _run(tmp_path, capsys, "--data", str(emit_folder), "--config", str(cfg))
    assert code == 2 and f"{cfg}: not valid JSON" in err
    code, err = _run(tmp_path, capsys, "--data", str(emit_folder), "--config", str(tmp_path / "none.yaml"))
    assert code == 2 and f"--config {tmp_path / 'none.yaml'}: no such file" in err
    code, err = _run(tmp_path, capsys, "--data", str(emit_folder), "--config", str(tmp_path))
    assert code == 2 and f"--config {tmp_path}: cannot read it" in err
    assert not (tmp_path / "run").exists()


def test_bad_flag_value_is_refused_before_any_work(emit_folder, tmp_path, capsys):
    code, err = _run(tmp_path, capsys, "--data", str(emit_folder), "--val-fraction", "1.5")
    assert code == 2 and "--val-fraction (data.val_fraction) must be in (0, 1), got 1.5" in err
    code, err = _run(tmp_path, capsys, "--data", str(emit_folder), "--char-ngram-min", "8")
    assert code == 2 and "--char-ngram-min (tfidf.char_ngram_min) must be <= --char-ngram-max" in err
    assert not (tmp_path / "run").exists()


def test_good_config_file_values_are_used(emit_folder, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data": {"data": str(emit_folder)}, "run": {"folds": 1},
                               "train": {"epochs": 2}, "tfidf": {"C": 2}, "cleaning": None}))
    out = tmp_path / "run"
    assert main(["-q", "baseline", "--config", str(cfg), "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["epochs"] == 2.0 and saved["tfidf"]["C"] == 2.0 and saved["run"]["folds"] == 1


def test_print_config_shows_the_resolved_settings_and_does_nothing_else(emit_folder, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"tfidf": {"C": 2}}))
    assert main(["run", "--data", str(emit_folder), "--profile", "best", "--config", str(cfg),
                 "--learning-rate", "3e-5", "--out", str(out), "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["transformer_folds"] == settings.PROFILES["best"]["run"]["transformer_folds"]
    assert shown["train"]["epochs"] == settings.PROFILES["best"]["train"]["epochs"]
    assert shown["tfidf"]["C"] == 2.0 and shown["train"]["learning_rate"] == 3e-5
    assert list(shown) == [settings.section_name(c) for c in settings.GROUPS]
    assert not out.exists()  # nothing loaded, trained or written
    # the same sections as the config.json a real run saves
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out)]) == 0
    capsys.readouterr()
    saved = json.loads((out / "config.json").read_text())
    assert main(["baseline", "--data", str(emit_folder), "--out", str(out), "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {k: saved[k] for k in shown}


def test_settings_module_holds_every_group_and_the_cli_machinery_moved():
    import importlib
    import importlib.util

    assert importlib.util.find_spec("emitlab.config") is None  # renamed to settings_cli
    cli = importlib.import_module("emitlab.settings_cli")
    assert callable(cli.read_config_file) and callable(cli.build_configs) and callable(cli.add_dataclass_arguments)
    from emitlab.io import to_jsonable

    assert to_jsonable(RunConfig(members=["tfidf"])) == {"profile": "full", "members": ["tfidf"], "folds": 5,
                                                        "transformer_folds": 3,
                                                        "extra_data_members": ["tfidf", "lexicon", "transformer"],
                                                        "report": True, "distill": False}
    assert {c.__module__ for c in GROUPS} == {"emitlab.settings"}
