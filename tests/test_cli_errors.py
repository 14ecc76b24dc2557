"""The CLI turns user errors (emitlab.errors.UserError) into one line and exit status 2; any
other exception is a bug and keeps its traceback (exit status 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emitlab import cli
from emitlab.cli import main
from emitlab.errors import DataError, ModelFormatError, RunFolderError, SettingsError, UserError


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("emitlab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------------------
# Bugs are not user errors


def test_a_plain_value_error_inside_a_command_propagates(emit_folder, monkeypatch):
    import emitlab.jobs

    def buggy(cfg):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(emitlab.jobs, "load_data", buggy)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["data", "validate", "--data", str(emit_folder)])


def test_file_not_found_and_runtime_errors_inside_a_command_propagate(emit_folder, tmp_path, monkeypatch):
    import emitlab.jobs

    for exc in (FileNotFoundError(2, "No such file or directory", "somewhere"), RuntimeError("bug")):
        def buggy(*args, exc=exc, **kwargs):
            raise exc

        monkeypatch.setattr(emitlab.jobs, "run_engine", buggy)
        with pytest.raises(type(exc)):
            main(["-q", "baseline", "--data", str(emit_folder), "--out", str(tmp_path / type(exc).__name__)])


def test_a_bug_exits_1_with_its_traceback(emit_folder):
    code = ("import sys, emitlab.cli as c\n"
            "def boom(args):\n    return 1 / 0\n"
            "c.cmd_data_validate = boom\n"
            f"sys.exit(c.main(['data', 'validate', '--data', {str(emit_folder)!r}]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    assert "Traceback" in res.stderr and "ZeroDivisionError" in res.stderr and "emitlab: error" not in res.stderr


def test_keyboard_interrupt_exits_130(emit_folder, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_data_validate", interrupted)
    assert main(["data", "validate", "--data", str(emit_folder)]) == 130
    assert "interrupted" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# User errors: one line, exit status 2 (a traceback with EMITLAB_DEBUG=1)


def test_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    assert main(["data", "validate", "--data", str(tmp_path / "nope")]) == 2
    assert "not found" in _one_line(capsys)
    monkeypatch.setenv("EMITLAB_DEBUG", "1")
    with pytest.raises(DataError, match="not found"):
        main(["data", "validate", "--data", str(tmp_path / "nope")])


def test_multi_line_user_error_is_printed_on_one_line(monkeypatch, capsys):
    def fails(args):
        raise SettingsError("first line\nsecond line")

    monkeypatch.setattr(cli, "cmd_data_validate", fails)
    assert main(["data", "validate"]) == 2
    assert "first line second line" in _one_line(capsys)


def test_user_error_classes():
    assert all(issubclass(c, UserError) for c in (DataError, SettingsError, ModelFormatError, RunFolderError))


def test_unwritable_outputs_are_user_errors(emit_folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["data", "validate", "--data", str(emit_folder), "--json", str(blocker / "report.json")]) == 2
    assert f"--json {blocker / 'report.json'}: cannot write it" in _one_line(capsys)
    assert main(["data", "stats", "--data", str(emit_folder), "--png", str(blocker / "s.png")]) == 2
    assert "--png" in _one_line(capsys)
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(blocker / "run")]) == 2
    assert f"cannot create the run folder {blocker / 'run'}" in _one_line(capsys)


def test_a_model_that_cannot_be_loaded_is_a_settings_error(emit_folder, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(missing), "--out", str(tmp_path / "run"),
                 "--report-to", "none"]) == 2
    assert f"--model (train.model) {str(missing)!r}: cannot load" in _one_line(capsys)


# --------------------------------------------------------------------------------------
# The errors raised for user mistakes are UserErrors (not plain ValueError/RuntimeError)


def test_backend_and_device_mistakes_are_settings_errors(tmp_path):
    from emitlab.inference import EmotionClassifier
    from emitlab.inference.onnx_export import load_onnx_backend
    from emitlab.members.transformer.member import load_predictor

    with pytest.raises(SettingsError, match="unknown backend 'tensorrt'"):
        EmotionClassifier.from_pretrained(tmp_path, backend="tensorrt")
    with pytest.raises(SettingsError, match="runs on CPU"):
        EmotionClassifier.from_pretrained(tmp_path, backend="onnx", device="cuda")
    with pytest.raises(SettingsError, match="unknown backend"):
        load_predictor(tmp_path, "tensorrt")
    with pytest.raises(SettingsError, match="not an ONNX backend"):
        load_onnx_backend(tmp_path, "torch")
    with pytest.raises(SettingsError, match="runs on CPU"):
        load_onnx_backend(tmp_path, "onnx", "cuda")


def test_onnx_export_mistakes_are_user_errors(emit_folder, tmp_path, capsys):
    from emitlab.inference.onnx_export import export_network_onnx, export_onnx

    out = tmp_path / "run"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out), "--folds", "1", "--export"]) == 0
    with pytest.raises(ModelFormatError, match="no transformer member"):
        export_onnx(out / "model")
    assert main(["export-onnx", "--model", str(out / "model")]) == 2
    assert "no transformer member" in _one_line(capsys)
    with pytest.raises(SettingsError, match="opset must be at least 17"):
        export_network_onnx(tmp_path, opset=13)
    with pytest.raises(SettingsError, match="unknown exporter"):
        export_network_onnx(tmp_path, exporter="tflite")


def test_onnx_files_that_cannot_be_written_are_a_model_format_error(tmp_path, monkeypatch):
    import emitlab.inference.onnx_export as onnx_export

    net = tmp_path / "fold-0"
    net.mkdir()
    (net / "network.json").write_text(json.dumps({"labels": ["Joy"]}))
    monkeypatch.setattr(onnx_export, "unwritable", lambda folder: "Permission denied")
    with pytest.raises(ModelFormatError, match=r"has no model\.onnx and it cannot be written there"):
        onnx_export.load_onnx_backend(net, "onnx")
    assert not any(net.glob("*.onnx"))


def test_unwritable_names_the_reason(tmp_path):
    from emitlab.inference.onnx_export import unwritable

    assert unwritable(tmp_path / "new") is None and (tmp_path / "new").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert unwritable(blocker / "sub")


def test_an_unknown_member_kind_in_an_export_is_a_model_format_error(tmp_path):
    from emitlab.members import load_member

    with pytest.raises(ModelFormatError, match="unknown member kind 'svm'"):
        load_member(tmp_path, {"kind": "svm"})


def test_bad_settings_in_a_saved_member_are_a_model_format_error(tmp_path):
    from emitlab.members.linear import spec_config
    from emitlab.settings import TfidfConfig

    with pytest.raises(ModelFormatError, match=str(tmp_path)):
        spec_config(TfidfConfig, {"config": {"C": "strong"}}, tmp_path)


def test_bad_cleaning_in_an_export_is_a_model_format_error(tmp_path):
    from emitlab.export import FORMAT_VERSION, META_FILE, read_meta

    meta = {"format_version": FORMAT_VERSION, "labels": ["Joy"], "decoder": {"thresholds": [0.5]}, "combiner": {},
            "members": [], "cleaning": {"urls": "sometimes"}}
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="cleaning"):
        read_meta(Path(tmp_path))
