"""ONNX export of the transformer members of a trained model (the onnxruntime backends that run the
files are in :mod:`emitlab.members.transformer.backends`).

    emitlab export-onnx --model runs/full/model          # model.onnx + model.int8.onnx per network
    emitlab predict --model runs/full/model --backend onnx-int8 "Che bella giornata!"

    >>> export_onnx(Path("runs/full/model"))
    >>> EmotionClassifier.from_pretrained("runs/full/model", backend="onnx")

The graph holds the network up to the **logits** only (encoder, pooling, linear layer). The
sigmoid, the thresholds and the decoding rules stay in Python, so that every backend shares them
and the ONNX probabilities match the torch ones. Inputs are ``input_ids``, ``attention_mask`` and,
only when the tokenizer produces it, ``token_type_ids`` (int64, dynamic batch and sequence axes);
the output is ``logits`` (float32, ``(batch, n_labels)``).

``model.int8.onnx`` is the same graph with int8 weights and int8 activations quantised on the fly
(:func:`emitlab.inference.quantize.quantize_int8`; ``--int8-scheme``): about a quarter of the size
and about twice as fast on one CPU thread, at the price of slightly different probabilities
(``benchmarks/int8.py`` compares the schemes, ``benchmarks/inference.py`` the backends).

Each transformer fold model of an export is a network folder (``members/<member>/fold-<i>``);
its files are written into that folder by default and listed under ``"onnx"`` in its
``network.json`` with their sizes and the largest logit difference from torch measured at export.
The cheap members (TF-IDF, lexicon) need no ONNX: they are a sparse product in numpy.

``--out DIR`` (``export_onnx(..., out=DIR)``) writes the files under ``DIR/<member>/fold-<i>``
instead, to ship the graphs elsewhere (another runtime, another machine). They are recorded in
each ``network.json`` by absolute path when the export is writable, so the onnx backends use
them while they stay there; a moved ``DIR``, or a read-only export (nothing recorded), is not
found, and the backends then look for (or write) the files inside the network folders.

Exporter: torch 2.13 has two. The TorchScript tracer (``torch.onnx.export(..., dynamo=False)``)
needs nothing beyond torch, exports a BERT in about a second and gives a graph whose batch and
sequence axes are dynamic; it is deprecated but still shipped, so it is the default. The
``torch.export``-based one (``dynamo=True``) needs the ``onnxscript`` package and is much slower
to export; it is used when asked for (``exporter="dynamo"``) or when the tracer fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from emitlab.errors import ModelFormatError, SettingsError
from emitlab.inference.quantize import DEFAULT_INT8_SCHEME, INT8_SCHEMES, quantize_int8
from emitlab.io import atomic_path, atomic_write_json
from emitlab.members.transformer.backends import OnnxBackend, OnnxInt8Backend, backend_class, onnx_file
from emitlab.registry import BACKENDS

# torch, numpy, onnxruntime and the members are imported where they are used: the CLI
# builds its parser (and so imports this module) on every call and must stay quick.
if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from emitlab.members.transformer.member import EncoderPredictor

log = logging.getLogger("emitlab")

ONNX_FILE = OnnxBackend.file
ONNX_INT8_FILE = OnnxInt8Backend.file
#: backend name -> default file name in a network folder, for every registered backend that runs a file
BACKEND_FILES = {name: cls.file for name, cls in BACKENDS.items() if getattr(cls, "onnx_export", False)}
DEFAULT_OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")

# Texts of very different lengths: the example batch is padded, so the traced graph keeps the
# attention-mask path (a batch without padding could let a tracer drop it).
_SAMPLE_TEXTS = [
    "Che bella giornata, sono felicissimo! 😂 #evviva @user",
    "no",
    "Non ci posso credere, che vergogna: hanno rimandato di nuovo tutto a domani e nessuno ci ha "
    "detto niente. Che rabbia, davvero, non se ne può più di questa gente. https://example.com",
    "Ti voglio bene ❤️",
]


def logits_only(model: "nn.Module") -> "nn.Module":
    """``EmotionModel`` as a module returning the logits tensor (not a dict), ready for tracing."""
    from torch import nn

    class LogitsOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return self.model(input_ids, attention_mask, token_type_ids)["logits"]

    return LogitsOnly().eval()


# --------------------------------------------------------------------------------------
# Export


def export_onnx(model_dir: Path, out: Path | None = None, int8: bool = True, opset: int = DEFAULT_OPSET,
                exporter: str = "auto", int8_scheme: str = "per-token") -> list[dict]:
    """Export every transformer network of ``model_dir`` (an export folder or its .zip, or one
    network folder) to ``model.onnx`` and, with ``int8``, ``model.int8.onnx`` inside that
    network's folder (or under ``out/<member>/fold-<i>``; ``out`` itself for one network folder).
    Returns one entry per network (``"network"``: its folder relative to the export)."""
    folders = network_folders(model_dir)
    if not folders:
        raise ModelFormatError(f"{model_dir}: no transformer member to export (the cheap members run in numpy)")
    results = []
    for rel, folder in folders:
        dest = Path(out) / out_subfolder(rel) if out is not None else folder
        results.append(export_network_onnx(folder, dest, int8, opset, exporter, int8_scheme) | {"network": rel})
    return results


def out_subfolder(rel: str) -> str:
    """Where a network's files go under ``--out``: ``members/<member>/fold-<i>`` -> ``<member>/fold-<i>``."""
    parts = Path(rel).parts
    return str(Path(*parts[1:])) if len(parts) > 1 and parts[0] == "members" else rel


def network_folders(path: Path) -> list[tuple[str, Path]]:
    """``(relative name, folder)`` of every transformer network in an export, or the folder itself."""
    from emitlab.members.transformer.member import NETWORK_FILE

    path = Path(path)
    if (path / NETWORK_FILE).is_file():
        return [(".", path)]
    from emitlab.export import read_meta, resolve_export

    folder = resolve_export(path)
    meta = read_meta(folder)
    return [(fold["path"], folder / fold["path"]) for m in meta["members"] if m["kind"] == "transformer"
            for fold in m["folds"]]


def export_network_onnx(folder: Path, out_dir: Path | None = None, int8: bool = True, opset: int = DEFAULT_OPSET,
                        exporter: str = "auto", int8_scheme: str = "per-token") -> dict:
    """Export one network folder into ``out_dir`` (default: the folder itself). Every file is
    written to a temporary name and renamed into place; the folder's ``network.json`` gets an
    ``"onnx"`` entry listing the files present in ``out_dir`` (relative names inside the folder,
    absolute ones elsewhere). When ``out_dir`` is elsewhere and the folder is read-only, the files
    are written but not recorded (``"recorded": false`` in the result)."""
    from emitlab.members.transformer.member import MODEL_INPUTS, load_predictor

    folder = Path(folder)
    out_dir = _checked_destination(folder, out_dir, opset, exporter, int8_scheme)
    t0 = time.time()
    predictor, model = load_predictor(folder, "torch", "cpu")
    model = model.float().eval()
    (_, sample), = list(predictor.padded_batches(_SAMPLE_TEXTS, batch_size=len(_SAMPLE_TEXTS)))
    names = [k for k in MODEL_INPUTS if k in sample]  # the order of LogitsOnly.forward's parameters
    wrapper = logits_only(model)
    fp32_path = out_dir / ONNX_FILE
    with atomic_path(fp32_path) as tmp:
        used, opset = _export_graph(wrapper, sample, names, tmp, opset, exporter)
    log.info("ONNX graph (%s exporter, opset %d) written to %s in %.1f s", used, opset, fp32_path, time.time() - t0)

    checks = [_SAMPLE_TEXTS, _SAMPLE_TEXTS[1:2], _SAMPLE_TEXTS[::-1] * 3]
    diffs = {"onnx": _max_logit_diff(predictor, fp32_path, checks)}
    if diffs["onnx"] > 1e-3:
        log.warning("the ONNX graph's logits differ from torch by up to %.2e: check the export", diffs["onnx"])
    int8_info = None
    if int8:
        with atomic_path(out_dir / ONNX_INT8_FILE) as tmp:
            int8_info = quantize_int8(fp32_path, tmp, int8_scheme)
        diffs["onnx-int8"] = _max_logit_diff(predictor, out_dir / ONNX_INT8_FILE, checks)
        log.info("int8 copy written to %s", out_dir / ONNX_INT8_FILE)

    entry = _onnx_entry(folder, out_dir, {"opset": opset, "exporter": used, "inputs": names}, diffs, int8_info)
    recorded = _record_entry(folder, out_dir, entry)
    result = json.loads(json.dumps(entry))
    for backend, f in result["files"].items():
        f["path"] = str((folder / f["file"]).resolve())
    result["recorded"] = recorded
    result["seconds"] = round(time.time() - t0, 2)
    return result


def _checked_destination(folder: Path, out_dir: Path | None, opset: int, exporter: str, int8_scheme: str) -> Path:
    """Refuse unknown settings and an ``out_dir`` (default ``folder``) that cannot be written; returns it."""
    if exporter not in EXPORTERS:
        raise SettingsError(f"unknown exporter {exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if opset < 17:
        raise SettingsError(f"--opset must be at least 17 (LayerNormalization), got {opset}")
    if int8_scheme not in INT8_SCHEMES:
        raise SettingsError(f"unknown int8 scheme {int8_scheme!r}: expected one of {', '.join(INT8_SCHEMES)}")
    out_dir = Path(out_dir) if out_dir is not None else folder
    why = unwritable(out_dir)
    if why is not None:
        if out_dir.resolve() == folder.resolve():
            raise ModelFormatError(f"{folder}: cannot write the ONNX files into this network folder ({why}); copy "
                                   "the export somewhere writable, or write them elsewhere with --out DIR")
        raise SettingsError(f"--out {out_dir}: cannot write the ONNX files there ({why})")
    return out_dir


def _onnx_entry(folder: Path, out_dir: Path, graph: dict, diffs: dict[str, float], int8_info: dict | None) -> dict:
    """The ``"onnx"`` entry of ``folder``'s ``network.json``: ``graph`` (opset, exporter, inputs) and
    every backend file present in ``out_dir``, with its size and measured logit difference. The int8
    file says what it is: ``int8_info`` when it was written now, else what the last export recorded."""
    import torch

    from emitlab.members.transformer.member import read_network_meta

    entry = {**graph, "output": "logits", "files": {}, "sample_max_abs_logit_diff": {},
             "versions": {"torch": torch.__version__, "onnxruntime": _ort_version()}}
    previous = ((read_network_meta(folder).get("onnx") or {}).get("files") or {}).get("onnx-int8") or {}
    for backend, fname in BACKEND_FILES.items():
        path = out_dir / fname
        if path.is_file():
            entry["files"][backend] = {"file": _relative(path, folder), "bytes": path.stat().st_size}
            if backend == "onnx-int8":  # what the int8 file is (kept from the last export when not rewritten now)
                info = int8_info
                if info is None:
                    info = {k: v for k, v in previous.items() if k in ("scheme", "weights")}
                entry["files"][backend].update(info or {"scheme": "unknown"})
            if backend in diffs:
                entry["sample_max_abs_logit_diff"][backend] = diffs[backend]
    return entry


def _record_entry(folder: Path, out_dir: Path, entry: dict) -> bool:
    """Write ``entry`` into ``folder``'s ``network.json``; False (with a warning) when ``out_dir`` is
    elsewhere and the folder cannot be written (inside the folder that is an error)."""
    try:
        update_meta(folder, {"onnx": entry})
    except OSError as exc:
        if out_dir.resolve() == folder.resolve():
            raise
        log.warning("could not record the ONNX files in %s (%s): they are in %s, but the onnx backends will not "
                    "find them there", folder / "network.json", exc, out_dir)
        return False
    return True


def _export_graph(wrapper: "nn.Module", sample: dict[str, "np.ndarray"], names: list[str], path: Path, opset: int,
                  exporter: str) -> tuple[str, int]:
    """Trace ``wrapper`` into ``path``; returns the exporter and the opset used."""
    import torch

    args = tuple(torch.from_numpy(sample[n]) for n in names)
    if exporter in ("auto", "torchscript"):
        try:
            with _quiet_export():
                torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                                  dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names},
                                                "logits": {0: "batch"}},
                                  opset_version=opset, do_constant_folding=True)
            return "torchscript", opset
        except Exception as exc:  # e.g. a torch without the TorchScript exporter
            if exporter == "torchscript":
                raise
            log.warning("TorchScript ONNX export failed (%s); trying the torch.export-based exporter", exc)
    if importlib.util.find_spec("onnxscript") is None:
        raise SettingsError("the torch.export-based ONNX exporter (--exporter dynamo, or auto after the TorchScript "
                            "exporter failed) needs the onnxscript package: pip install onnxscript")
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    opset = max(opset, 18)  # the lowest opset this exporter writes without a conversion step
    with _quiet_export():
        torch.onnx.export(wrapper, args, str(path), dynamo=True, input_names=names, output_names=["logits"],
                          dynamic_shapes={n: {0: batch, 1: seq} for n in names}, opset_version=opset,
                          external_data=False, verbose=False)
    return "dynamo", opset


@contextlib.contextmanager
def _quiet_export():
    """Tracer and deprecation warnings are expected here; keep them out of the user's console."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("onnx export: %s: %s", w.category.__name__, w.message)


def _max_logit_diff(predictor: EncoderPredictor, onnx_path: Path, batches: list[list[str]]) -> float:
    """Largest |logit_onnx - logit_torch| over ``batches`` (each a padded batch of its own shape)."""
    import numpy as np
    import torch

    engine = OnnxBackend(onnx_path)
    diff = 0.0
    for texts in batches:
        for _, batch in predictor.padded_batches(texts, batch_size=len(texts)):
            ref = torch.as_tensor(predictor.engine(batch)).float().numpy()
            diff = max(diff, float(np.abs(engine(batch) - ref).max()))
    return diff


def update_meta(folder: Path, updates: dict) -> dict:
    """Read ``network.json``, apply ``updates`` (top-level keys) and replace the file atomically."""
    from emitlab.members.transformer.member import NETWORK_FILE, read_network_meta

    meta = read_network_meta(folder)
    meta.update(updates)
    atomic_write_json(Path(folder) / NETWORK_FILE, meta)
    return meta


def unwritable(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (created if missing), or None when they can."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(prefix=".emitlab-probe-", dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# --------------------------------------------------------------------------------------
# Backend files


def load_onnx_backend(folder: Path, backend: str, device: str | None = None) -> OnnxBackend:
    """The backend ``backend`` (``"onnx"`` or ``"onnx-int8"``) of a network folder, exporting its
    ONNX file first when it is missing (:func:`ensure_backend_file`)."""
    from emitlab.members.transformer.member import read_network_meta

    ensure_backend_file(folder, backend, device)
    return backend_class(backend).load(folder, read_network_meta(folder), device)


def ensure_backend_file(folder: Path, backend: str, device: str | None = None) -> None:
    """Export the ONNX file that ``backend`` runs into the network ``folder`` when it is missing
    (once: the folder keeps it); nothing for a backend that runs no file of its own (torch)."""
    from emitlab.members.transformer.member import read_network_meta

    if backend not in BACKENDS or backend not in BACKEND_FILES:
        raise SettingsError(f"not an ONNX backend: {backend!r} (expected one of {', '.join(BACKEND_FILES)})")
    if device not in (None, "cpu"):
        raise SettingsError(f"the {backend} backend runs on CPU with onnxruntime; device {device!r} needs backend "
                            "'torch'")
    path = onnx_file(folder, read_network_meta(folder), backend)
    if path.is_file():
        return
    log.warning("%s has no %s: exporting it now (once; `emitlab export-onnx --model` does this ahead of time)",
                folder, path.name)
    advice = ("copy the export somewhere writable and load the copy, or run `emitlab export-onnx --model` on it "
              "once where it can be written")
    why = unwritable(folder)
    if why is not None:
        raise ModelFormatError(f"{folder}: has no {path.name} and it cannot be written there ({why}); {advice}")
    try:
        export_network_onnx(folder, folder, int8=(backend == "onnx-int8"))
    except OSError as exc:
        raise ModelFormatError(f"{folder}: could not write {path.name} there ({exc}); {advice}") from exc


# --------------------------------------------------------------------------------------
# CLI


EPILOG = """\
examples:
  emitlab export-onnx --model runs/me5/model
  emitlab export-onnx --model runs/me5/model.zip --no-int8
  emitlab predict --model runs/me5/model --backend onnx-int8 "Che bella giornata!"

The graph computes the logits only; sigmoid, thresholds and decoding stay in emitlab, so
'predict --backend onnx' gives the same probabilities as the torch backend (to ~1e-6)."""


def cmd_export_onnx(args: argparse.Namespace) -> int:
    results = export_onnx(Path(args.model), Path(args.out) if args.out else None, int8=not args.no_int8,
                          opset=args.opset, exporter=args.exporter, int8_scheme=args.int8_scheme)
    for result in results:
        for backend, f in result["files"].items():
            diff = result["sample_max_abs_logit_diff"].get(backend)
            note = f"  max |logit - torch| {diff:.1e} on sample texts" if diff is not None else ""
            print(f"{result['network']}  {backend:<10} {f['path']}  {f['bytes'] / 2**20:.1f} MiB{note}")
    unrecorded = [r["network"] for r in results if not r.get("recorded", True)]
    print(f"recorded under 'onnx' in each network's network.json ({results[0]['exporter']} exporter, "
          f"opset {results[0]['opset']})" if not unrecorded else
          f"NOT recorded for {', '.join(unrecorded)} (its network.json could not be written): the onnx backends "
          f"will not use these files")
    return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``export-onnx`` subcommand to the ``emitlab`` command line."""
    p = subparsers.add_parser(
        "export-onnx", help="Export a trained model to ONNX (fp32 + int8) for onnxruntime.",
        description="Write model.onnx (the network up to the logits, dynamic batch and sequence axes) and "
                    "model.int8.onnx (int8 dynamic quantisation) for every transformer fold model of an export, "
                    "and list them in that network's network.json. Use them with "
                    "'emitlab predict|serve --backend onnx|onnx-int8'.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Export folder or its .zip (runs/<run>/model).")
    p.add_argument("--out", default=None,
                   help="Write the ONNX files under OUT/<member>/fold-<i> instead of inside each network folder "
                        "(default), e.g. to ship them to another runtime. They are recorded in network.json by "
                        "absolute path when the export is writable, so the onnx backends find them while they stay "
                        "there.")
    p.add_argument("--no-int8", action="store_true", help="Skip the int8 quantised copy.")
    p.add_argument("--int8-scheme", choices=INT8_SCHEMES, default=DEFAULT_INT8_SCHEME,
                   help="How model.int8.onnx is quantised: per-token (default; int8 weights per output channel, "
                        "activations scaled per token: close to fp32) or dynamic (onnxruntime's quantize_dynamic, "
                        "one activation range per batch: slightly faster, probabilities off by up to ~0.5 on a "
                        "fine-tuned me5-small).")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, at least 17 (default: {DEFAULT_OPSET}).")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="torch exporter: torchscript (default via auto), or dynamo (needs onnxscript); "
                        "auto falls back to dynamo when torchscript fails.")
    p.set_defaults(func=cmd_export_onnx)
    return p


__all__ = ["BACKEND_FILES", "OnnxBackend", "export_onnx", "load_onnx_backend", "register_cli"]
