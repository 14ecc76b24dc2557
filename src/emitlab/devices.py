"""Where torch runs and in which precision: one place for CPU / CUDA / MPS decisions."""

from __future__ import annotations

import logging
import os

import torch

from emitlab.errors import SettingsError

log = logging.getLogger("emitlab")

def pick_device(requested: str = "auto") -> str:
    """``requested`` unless ``auto``: CUDA when available, then MPS, else CPU."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_processes_fit_devices(device: str) -> None:
    """Refuse a multi-process launch with more processes on this machine than CUDA devices.

    ``torchrun`` / ``accelerate launch`` export ``LOCAL_WORLD_SIZE``; each rank takes one GPU, and
    NCCL will not put two ranks on one GPU (it fails later with an opaque "invalid usage").
    CPU processes (``--device cpu``: gloo) have no such limit.
    """
    if device != "cuda":
        return
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    except ValueError:
        return
    gpus = torch.cuda.device_count()
    if local > gpus:
        raise SettingsError(
            f"{local} processes on this machine but {gpus} CUDA device(s): each process needs its own "
            f"GPU; launch at most {gpus} (torchrun --nproc_per_node / accelerate launch --num_processes), "
            "or pass --device cpu to train on CPU processes"
        )


def precision_flags(precision: str, device: str) -> dict[str, bool]:
    """``TrainingArguments`` flags for mixed precision. ``auto``: bf16 (else fp16) on CUDA; on the
    CPU bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX: a me5-small step
    1.57x faster, scores within the seed spread of fp32 over three seeds,
    ``benchmarks/results/bf16_cpu.json`` and ``ablation_bf16_task-A.json``), fp32 elsewhere, where
    bf16 would be emulated and slow. fp16 on CUDA only."""
    if device == "cpu" and (precision == "bf16" or (precision == "auto" and cpu_has_bf16())):
        if precision == "bf16" and not cpu_has_bf16():
            log.warning("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 autocast will be emulated and slow")
        return {"bf16": True, "fp16": False}
    if precision == "fp32" or device != "cuda":
        if precision in ("bf16", "fp16") and device != "cuda":
            log.warning("%s needs CUDA%s; training in fp32 on %s", precision,
                        "" if precision == "fp16" else " (or the CPU)", device)
        return {"bf16": False, "fp16": False}
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
