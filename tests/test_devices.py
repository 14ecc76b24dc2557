"""Device choice (stubbed where no GPU exists) and, on a CUDA machine, a real mixed-precision run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emitlab import devices
from emitlab.cli import main
from emitlab.devices import check_processes_fit_devices, model_device, pick_device, precision_flags
from emitlab.errors import SettingsError
from emitlab.members.transformer.member import TorchBackend

from conftest import TINY_TRAIN

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")


def test_pick_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_device("cuda") == "cuda"


def test_precision_flags(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision_flags("auto", "cuda") == {"bf16": True, "fp16": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision_flags("auto", "cuda") == {"bf16": False, "fp16": True}
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert precision_flags("auto", "cpu") == {"bf16": False, "fp16": False}  # no native bf16: fp32
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert precision_flags("auto", "cpu") == {"bf16": True, "fp16": False}   # native bf16: autocast
    assert precision_flags("fp32", "cpu") == {"bf16": False, "fp16": False}
    assert precision_flags("fp16", "cpu") == {"bf16": False, "fp16": False}  # fp16: CUDA only
    assert precision_flags("bf16", "cpu") == {"bf16": True, "fp16": False}   # bf16 autocast on the CPU, when asked
    assert precision_flags("bf16", "mps") == {"bf16": False, "fp16": False}
    assert precision_flags("fp32", "cuda") == {"bf16": False, "fp16": False}


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    """NCCL puts one rank on one GPU: two processes on a one-GPU machine fail early, by name,
    instead of NCCL's "invalid usage" mid-setup; CPU processes (gloo) and one process pass."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(SettingsError, match=r"2 processes on this machine but 1 CUDA device.*--device cpu"):
        check_processes_fit_devices("cuda")
    check_processes_fit_devices("cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    check_processes_fit_devices("cuda")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    check_processes_fit_devices("cuda")


def test_train_refuses_more_processes_than_gpus(tiny_model, emit_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    code = main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out",
                 str(tmp_path / "run"), "--device", "cuda"] + TINY_TRAIN)
    err = capsys.readouterr().err
    assert code == 2 and "emitlab: error: 2 processes on this machine but 1 CUDA device(s)" in err
    assert "Loading weights" not in err  # refused before any model is loaded


def test_predictor_keeps_the_training_device():
    """A model left on the device it was trained on is not moved back to the CPU to predict."""
    model = torch.nn.Linear(3, 2).to("meta")  # stands in for a CUDA model on a machine without one
    backend = TorchBackend(model)
    assert backend.device == torch.device("meta") and model_device(backend.model) == torch.device("meta")
    assert TorchBackend(torch.nn.Linear(3, 2), device="cpu").device == torch.device("cpu")


@cuda
def test_cuda_training_prediction_and_cpu_reload(tiny_model, emit_folder, tmp_path):
    from emitlab.cli import main
    from emitlab.inference import EmotionClassifier

    out = tmp_path / "cuda"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--device", "cuda"] + TINY_TRAIN) == 0
    m = json.loads((out / "metrics.json").read_text())
    info = m["members"]["transformer"]["training"][0]
    assert info["device"] == "cuda"
    assert info["precision"] == ({"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True})
    # the run predicted on CUDA; the export reloads on CPU and on CUDA and agrees with it
    ref = np.load(out / "predictions.npz")["transformer_test"]
    texts = [line.split(",", 1)[1] for line in (emit_folder / "emit_test_nolabel.csv").read_text().splitlines()[1:]]
    cpu = EmotionClassifier.from_pretrained(out / "model", device="cpu").predict_proba(texts)
    gpu = EmotionClassifier.from_pretrained(out / "model", device="cuda").predict_proba(texts)
    assert np.abs(cpu - ref).max() < 1e-4 and np.abs(gpu - ref).max() < 1e-4
