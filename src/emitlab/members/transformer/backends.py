"""Runtimes of a saved network: each maps one padded batch of token ids to logits.

One class per ``--backend`` name, registered in :data:`emitlab.registry.BACKENDS`: ``torch``
(the :class:`~emitlab.members.transformer.model.EmotionModel` weights), ``onnx`` and ``onnx-int8``
(onnxruntime on the CPU, over the files ``emitlab export-onnx`` writes into the network folder:
:mod:`emitlab.inference.onnx_export`). A backend class has ``name``, ``file`` (the file it runs in a
network folder; ``None`` for torch) and ``load(folder, meta, device)``; loading runs no code from
the folder. Making a missing ONNX file is the exporter's job, a layer above: ``load`` here only
names the file that is missing.

torch and onnxruntime are imported where they are used: the CLI's parser reads the file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from emitlab.errors import ModelFormatError, SettingsError

if TYPE_CHECKING:
    import numpy as np
    import torch


class Backend(Protocol):
    """Maps one padded batch (``{name: int64 array (batch, seq)}``, keys from
    :data:`~emitlab.members.transformer.member.MODEL_INPUTS`) to logits ``(batch, n_labels)`` as a
    numpy array or torch tensor. Its class has ``name``, ``file`` (what it runs in a network folder,
    ``None`` for the torch weights), ``cpu_only``, ``onnx_export`` (whether ``emitlab export-onnx``
    writes its file) and ``load(folder, meta, device)``."""

    name: str

    def __call__(self, batch: dict[str, "np.ndarray"]) -> "np.ndarray | torch.Tensor": ...


class TorchBackend:
    """The PyTorch :class:`~emitlab.members.transformer.model.EmotionModel` on ``device`` (default: where
    the model already is, so a model trained on CUDA keeps predicting on CUDA)."""

    name = "torch"
    file: str | None = None
    cpu_only = False
    onnx_export = False  # its file is not written by `emitlab export-onnx`

    def __init__(self, model, device: "str | torch.device | None" = None):
        import torch

        from emitlab.devices import model_device

        self.device = torch.device(device) if device else model_device(model)
        self.model = model.eval().to(self.device)

    @classmethod
    def load(cls, folder: Path, meta: dict, device: str | None = None) -> "TorchBackend":
        from emitlab.members.transformer.model import EmotionModel

        model = EmotionModel.load(Path(folder), len(meta["labels"]), meta.get("pooling", "mean"))
        return cls(model, device or "cpu")

    def __call__(self, batch: dict[str, "np.ndarray"]) -> "torch.Tensor":
        import numpy as np
        import torch

        with torch.inference_mode():
            inputs = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)).to(self.device) for k, v in batch.items()}
            return self.model(**inputs)["logits"]


class OnnxBackend:
    """An onnxruntime session (CPU) mapping a padded batch to logits ``(batch, n_labels)``."""

    name = "onnx"
    file: str | None = "model.onnx"
    cpu_only = True
    onnx_export = True  # `emitlab export-onnx` writes its file (and loading exports it once when missing)

    def __init__(self, path: Path, name: str | None = None, threads: int | None = None):
        import onnxruntime as ort
        import torch

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.name = name or type(self).name
        self.path = Path(path)
        self.device = torch.device("cpu")
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    @classmethod
    def load(cls, folder: Path, meta: dict, device: str | None = None) -> "OnnxBackend":
        if device not in (None, "cpu"):
            raise SettingsError(f"the {cls.name} backend runs on CPU with onnxruntime; device {device!r} needs "
                                "backend 'torch'")
        path = onnx_file(folder, meta, cls.name)
        if not path.is_file():
            raise ModelFormatError(f"{path}: missing (the {cls.name} backend runs it; `emitlab export-onnx --model "
                                   f"{folder}` writes it)")
        return cls(path)

    def __call__(self, batch: dict[str, "np.ndarray"]) -> "np.ndarray":
        import numpy as np

        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise ModelFormatError(f"{self.path}: the graph needs inputs {missing} that the network's tokenizer "
                                   "does not produce (an ONNX file from another model? export it again)")
        feeds = {n: np.ascontiguousarray(batch[n], dtype=np.int64) for n in self.input_names}
        return self.session.run(["logits"], feeds)[0]


class OnnxInt8Backend(OnnxBackend):
    """The int8-quantised ONNX graph (``emitlab export-onnx --int8-scheme``)."""

    name = "onnx-int8"
    file = "model.int8.onnx"


def backend_class(name: str) -> Any:
    """The registered backend class for ``name``; a :class:`SettingsError` for an unknown one."""
    from emitlab.registry import BACKENDS

    if name not in BACKENDS:
        raise SettingsError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS.get(name)


def onnx_file(folder: Path, meta: dict, backend: str) -> Path:
    """Where ``backend``'s file is for a network folder: as recorded in its ``network.json`` (a
    name inside the folder, or an absolute path written by ``--out``) when that file exists, else
    the backend's default name inside the folder."""
    folder = Path(folder)
    recorded = ((meta.get("onnx") or {}).get("files") or {}).get(backend)
    if recorded and isinstance(recorded.get("file"), str):
        path = Path(recorded["file"])
        inside = path.is_absolute() or (folder / path).resolve().is_relative_to(folder.resolve())
        path = path if path.is_absolute() else folder / path
        if inside and path.is_file():
            return path
    file = backend_class(backend).file
    if not file:
        raise SettingsError(f"backend {backend!r} runs no file of its own")
    return folder / file
