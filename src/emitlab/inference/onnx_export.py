"""ONNX export of the transformer members of a trained model, and an onnxruntime backend for them.

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
(:func:`quantize_int8`; ``--int8-scheme``): about a quarter of the size and about twice as fast
on one CPU thread, at the price of slightly different probabilities (``benchmarks/int8.py``
compares the schemes, ``benchmarks/inference.py`` the backends).

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
BACKEND_FILES = {name: cls.file for name, cls in BACKENDS.items() if cls.file}
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
    import torch

    from emitlab.members.transformer.member import MODEL_INPUTS, load_predictor, read_network_meta

    if exporter not in EXPORTERS:
        raise SettingsError(f"unknown exporter {exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if opset < 17:
        raise SettingsError(f"--opset must be at least 17 (LayerNormalization), got {opset}")
    if int8_scheme not in INT8_SCHEMES:
        raise SettingsError(f"unknown int8 scheme {int8_scheme!r}: expected one of {', '.join(INT8_SCHEMES)}")
    folder = Path(folder)
    out_dir = Path(out_dir) if out_dir is not None else folder
    why = unwritable(out_dir)
    if why is not None:
        if out_dir.resolve() == folder.resolve():
            raise ModelFormatError(f"{folder}: cannot write the ONNX files into this network folder ({why}); copy "
                                   "the export somewhere writable, or write them elsewhere with --out DIR")
        raise SettingsError(f"--out {out_dir}: cannot write the ONNX files there ({why})")
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
    if int8:
        with atomic_path(out_dir / ONNX_INT8_FILE) as tmp:
            int8_info = quantize_int8(fp32_path, tmp, int8_scheme)
        diffs["onnx-int8"] = _max_logit_diff(predictor, out_dir / ONNX_INT8_FILE, checks)
        log.info("int8 copy written to %s", out_dir / ONNX_INT8_FILE)

    entry = {"opset": opset, "exporter": used, "inputs": names, "output": "logits", "files": {},
             "sample_max_abs_logit_diff": {}, "versions": {"torch": torch.__version__, "onnxruntime": _ort_version()}}
    previous = ((read_network_meta(folder).get("onnx") or {}).get("files") or {}).get("onnx-int8") or {}
    for backend, fname in BACKEND_FILES.items():
        path = out_dir / fname
        if path.is_file():
            entry["files"][backend] = {"file": _relative(path, folder), "bytes": path.stat().st_size}
            if backend == "onnx-int8":  # what the int8 file is (kept from the last export when not rewritten now)
                info = int8_info if int8 else {k: v for k, v in previous.items() if k in ("scheme", "weights")}
                entry["files"][backend].update(info or {"scheme": "unknown"})
            if backend in diffs:
                entry["sample_max_abs_logit_diff"][backend] = diffs[backend]
    recorded = True
    try:
        update_meta(folder, {"onnx": entry})
    except OSError as exc:
        if out_dir.resolve() == folder.resolve():
            raise
        recorded = False
        log.warning("could not record the ONNX files in %s (%s): they are in %s, but the onnx backends will not "
                    "find them there", folder / "network.json", exc, out_dir)
    result = json.loads(json.dumps(entry))
    for backend, f in result["files"].items():
        f["path"] = str((folder / f["file"]).resolve())
    result["recorded"] = recorded
    result["seconds"] = round(time.time() - t0, 2)
    return result


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


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


#: quantisation schemes of model.int8.onnx (see :func:`quantize_int8`); the first is the default
INT8_SCHEMES = ("per-token", "dynamic")
DEFAULT_INT8_SCHEME = INT8_SCHEMES[0]
#: what ``model.int8.onnx`` holds, per scheme (recorded in network.json's onnx entry)
INT8_DESCRIPTIONS = {
    "per-token": "int8 weights per output channel (every weight MatMul) with int8 activations scaled per token "
                 "(MatMulInteger); word-embedding table int8 per row; classifier and attention products fp32",
    "dynamic": "onnxruntime quantize_dynamic (QInt8 weights per tensor, activations uint8 per tensor, word "
               "embeddings per tensor)",
}


def quantize_int8(src: Path, dest: Path, scheme: str = DEFAULT_INT8_SCHEME) -> dict:
    """Write an int8 copy of the fp32 graph ``src`` into ``dest``; returns a description of it
    (recorded in ``network.json``).

    ``"per-token"`` (default): every MatMul with a constant 2-D weight becomes
    ``MatMulInteger`` on int8 weights (symmetric, one scale per output column) and uint8
    activations quantised **per token** (symmetric, one scale per row, zero point 128), the int32
    result rescaled by both scales; the word-embedding table is stored int8 with one scale per
    row. onnxruntime's dynamic quantisation (``"dynamic"``) quantises each activation with one
    range per *tensor*, i.e. per padded batch: a few tokens of a fine-tuned BERT have FFN
    activations tens of times larger than the rest, so every other token of the batch is
    quantised with a coarse step (see ``benchmarks/int8.py``).

    ``"dynamic"``: ``quantize_dynamic`` (QInt8 weights per tensor, all quantisable ops), after the
    recommended pre-processing (graph optimisation; symbolic shape inference fails on these graphs,
    so it is skipped) when it works."""
    if scheme not in INT8_SCHEMES:
        raise SettingsError(f"unknown int8 scheme {scheme!r}: expected one of {', '.join(INT8_SCHEMES)}")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix=".emitlab-quant-", dir=Path(dest).parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            with _quiet_root_logger():
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as exc:  # quantising the raw graph still works, only less well
            log.warning("quantisation pre-processing failed (%s); quantising the graph as exported", exc)
            source = Path(src)
        if scheme == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet_root_logger():  # the quantiser logs every tensor it skips at INFO on the root logger
                quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)
            return {"scheme": scheme, "weights": INT8_DESCRIPTIONS[scheme]}
        counts = _quantize_per_token(source, Path(dest))
    return {"scheme": scheme, "weights": INT8_DESCRIPTIONS[scheme], **counts}


def matmul_input_absmax(graph_path: Path, batches: list[dict]) -> dict[str, "np.ndarray"]:
    """Per-channel max |x| of the input ``x`` of every MatMul with a constant 2-D weight, over the
    real tokens (``attention_mask``) of ``batches`` (padded model inputs, e.g. training texts)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    model = onnx.load(str(graph_path))
    consts = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2}
    names = list(dict.fromkeys(n.input[0] for n in model.graph.node
                               if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in consts))
    outputs = {o.name for o in model.graph.output}
    for name in names:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    feeds_names = [i.name for i in sess.get_inputs()]
    absmax: dict[str, np.ndarray] = {}
    for batch in batches:
        values = sess.run(names, {k: np.asarray(batch[k], np.int64) for k in feeds_names})
        mask = np.asarray(batch["attention_mask"]).astype(bool)
        for name, v in zip(names, values):
            m = np.abs(v[mask] if v.ndim == 3 and v.shape[:2] == mask.shape else v.reshape(-1, v.shape[-1])).max(0)
            absmax[name] = np.maximum(absmax[name], m) if name in absmax else m
    return absmax


def _quantize_per_token(src: Path, dest: Path, keep_fp32: tuple[str, ...] = (), asymmetric: bool = False,
                        smooth: dict[str, "np.ndarray"] | None = None, alpha: float = 0.5) -> dict:
    """The ``"per-token"`` scheme of :func:`quantize_int8` as a graph rewrite (standard ONNX ops).

    ``keep_fp32``: MatMuls whose node name contains one of these strings stay fp32.
    ``asymmetric``: activations quantised per token over their own [min, max] (uint8, zero point 0,
    ``x ~ scale * q + min``; the ``min * colsum(W)`` term is added back in fp32) instead of
    symmetrically around 0: twice the resolution for one-sided inputs such as GELU outputs.
    ``smooth``: per-channel max |x| of MatMul inputs (:func:`matmul_input_absmax` on calibration
    texts): SmoothQuant's migration of activation outliers into the weights, ``x / s`` and
    ``s * W`` with ``s = absmax(x)**alpha / absmax(W rows)**(1 - alpha)``, before quantising."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    def weight(name: str):
        if name not in inits or inits[name].data_type != TensorProto.FLOAT:
            return None
        return numpy_helper.to_array(inits[name])

    new_inits, dropped, quantised_inputs = [], set(), {}
    shared = [numpy_helper.from_array(np.array(1 / 127, np.float32), "int8_pt/inv127"),
              numpy_helper.from_array(np.array(1e-12, np.float32), "int8_pt/eps"),
              numpy_helper.from_array(np.array(128, np.float32), "int8_pt/f128"),
              numpy_helper.from_array(np.array(128, np.uint8), "int8_pt/zp128"),
              numpy_helper.from_array(np.array(1 / 255, np.float32), "int8_pt/inv255"),
              numpy_helper.from_array(np.array(0, np.uint8), "int8_pt/zp0")]
    nodes, n_matmul, n_embed = [], 0, 0

    def quantised(node) -> bool:
        w = weight(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        return w is not None and w.ndim == 2 and not any(k in node.name for k in keep_fp32)

    smooth_scale: dict[str, np.ndarray] = {}
    if smooth:
        wmax: dict[str, np.ndarray] = {}
        for node in graph.node:
            if quantised(node) and node.input[0] in smooth:
                m = np.abs(weight(node.input[1])).max(1)
                x = node.input[0]
                wmax[x] = np.maximum(wmax[x], m) if x in wmax else m
        for x, m in wmax.items():
            a = np.maximum(smooth[x].astype(np.float64), 1e-5)
            smooth_scale[x] = np.clip(a ** alpha / np.maximum(m, 1e-5) ** (1 - alpha), 1e-5, 1e5).astype(np.float32)
    for node in graph.node:
        if quantised(node):
            w = weight(node.input[1])
            x = node.input[0]
            if x in smooth_scale:
                w = w * smooth_scale[x][:, None]
                if x + "/smoothed" not in quantised_inputs and x not in quantised_inputs:
                    p = f"int8_pt/smooth{len(quantised_inputs)}"
                    new_inits.append(numpy_helper.from_array(1 / smooth_scale[x], p + "/inv_s"))
                    nodes.append(helper.make_node("Mul", [x, p + "/inv_s"], [x + "/smoothed"], name=p + "/Mul"))
                x = x + "/smoothed"
            if x not in quantised_inputs and asymmetric:
                p = f"int8_pt/{len(quantised_inputs)}"
                nodes += [helper.make_node("ReduceMax", [x], [p + "/max"], name=p + "/ReduceMax", axes=[-1],
                                           keepdims=1),
                          helper.make_node("ReduceMin", [x], [p + "/min"], name=p + "/ReduceMin", axes=[-1],
                                           keepdims=1),
                          helper.make_node("Sub", [p + "/max", p + "/min"], [p + "/range"], name=p + "/Range"),
                          helper.make_node("Max", [p + "/range", "int8_pt/eps"], [p + "/range_eps"], name=p + "/Max"),
                          helper.make_node("Mul", [p + "/range_eps", "int8_pt/inv255"], [p + "/scale"],
                                           name=p + "/Scale"),
                          helper.make_node("Sub", [x, p + "/min"], [p + "/shifted"], name=p + "/Shift"),
                          helper.make_node("Div", [p + "/shifted", p + "/scale"], [p + "/scaled"], name=p + "/Div"),
                          helper.make_node("Round", [p + "/scaled"], [p + "/rounded"], name=p + "/Round"),
                          helper.make_node("Cast", [p + "/rounded"], [p + "/q"], name=p + "/Cast",
                                           to=TensorProto.UINT8)]
                quantised_inputs[x] = (p + "/q", p + "/scale", p + "/min")
            if x not in quantised_inputs:  # the query/key/value MatMuls share theirs: quantise it once
                p = f"int8_pt/{len(quantised_inputs)}"
                nodes += [helper.make_node("Abs", [x], [p + "/abs"], name=p + "/Abs"),
                          helper.make_node("ReduceMax", [p + "/abs"], [p + "/absmax"], name=p + "/ReduceMax",
                                           axes=[-1], keepdims=1),
                          helper.make_node("Max", [p + "/absmax", "int8_pt/eps"], [p + "/absmax_eps"], name=p + "/Max"),
                          helper.make_node("Mul", [p + "/absmax_eps", "int8_pt/inv127"], [p + "/scale"],
                                           name=p + "/Scale"),
                          helper.make_node("Div", [x, p + "/scale"], [p + "/scaled"], name=p + "/Div"),
                          helper.make_node("Round", [p + "/scaled"], [p + "/rounded"], name=p + "/Round"),
                          helper.make_node("Add", [p + "/rounded", "int8_pt/f128"], [p + "/shifted"], name=p + "/Add"),
                          helper.make_node("Cast", [p + "/shifted"], [p + "/q"], name=p + "/Cast",
                                           to=TensorProto.UINT8)]
                quantised_inputs[x] = (p + "/q", p + "/scale", None)
            xq, xscale, xmin = quantised_inputs[x]
            wscale = np.abs(w).max(0) / 127
            wscale[wscale == 0] = 1.0
            wq = np.clip(np.round(w / wscale), -127, 127).astype(np.int8)
            b = node.input[1]
            new_inits += [numpy_helper.from_array(wq, b + "/int8"),
                          numpy_helper.from_array(wscale.astype(np.float32), b + "/scale")]
            q, out = node.name or b, node.output[0]
            nodes += [helper.make_node("MatMulInteger", [xq, b + "/int8", "int8_pt/zp0" if xmin else "int8_pt/zp128"],
                                       [q + "/int32"], name=q + "/MatMulInteger"),
                      helper.make_node("Cast", [q + "/int32"], [q + "/float"], name=q + "/CastFloat",
                                       to=TensorProto.FLOAT),
                      helper.make_node("Mul", [q + "/float", b + "/scale"], [q + "/wscaled"], name=q + "/MulW"),
                      helper.make_node("Mul", [q + "/wscaled", xscale], [q + "/xscaled" if xmin else out],
                                       name=q + "/MulX")]
            if xmin:  # x = scale * q + min: add min * (sum over the input dimension of W) back
                new_inits.append(numpy_helper.from_array(w.sum(0).astype(np.float32), b + "/colsum"))
                nodes += [helper.make_node("Mul", [xmin, b + "/colsum"], [q + "/offset"], name=q + "/Offset"),
                          helper.make_node("Add", [q + "/xscaled", q + "/offset"], [out], name=q + "/AddOffset")]
            n_matmul += 1
            if uses[b] == 1:
                dropped.add(b)
            continue
        table = weight(node.input[0]) if node.op_type == "Gather" else None
        if table is not None and table.ndim == 2 and node.input[1] == "input_ids":  # the word-embedding table
            t, out = node.input[0], node.output[0]
            scale = np.abs(table).max(1) / 127
            scale[scale == 0] = 1.0
            q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
            new_inits += [numpy_helper.from_array(q, t + "/int8"),
                          numpy_helper.from_array(scale.astype(np.float32)[:, None], t + "/row_scale")]
            nodes += [helper.make_node("Gather", [t + "/int8", node.input[1]], [out + "/int8"],
                                       name=out + "/GatherInt8", axis=0),
                      helper.make_node("Gather", [t + "/row_scale", node.input[1]], [out + "/scale"],
                                       name=out + "/GatherScale", axis=0),
                      helper.make_node("Cast", [out + "/int8"], [out + "/float"], name=out + "/Cast",
                                       to=TensorProto.FLOAT),
                      helper.make_node("Mul", [out + "/float", out + "/scale"], [out], name=out + "/Dequantize")]
            n_embed += 1
            if uses[t] == 1:
                dropped.add(t)
            continue
        nodes.append(node)
    if not n_matmul:
        raise ModelFormatError(f"{src}: no MatMul with a constant weight to quantise (not an encoder graph?)")
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + shared + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.ClearField("value_info")  # shapes of the pre-processed graph; onnxruntime infers its own
    onnx.save(model, str(dest))
    return {"quantised_matmuls": n_matmul, "quantised_embeddings": n_embed}


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


__all__ = ["BACKEND_FILES", "INT8_SCHEMES", "OnnxBackend", "export_onnx", "load_onnx_backend", "quantize_int8",
           "register_cli"]
