"""int8 copies of an exported fp32 ONNX graph (``model.int8.onnx``, see :mod:`emitlab.inference.onnx_export`).

    >>> quantize_int8(Path("fold-0/model.onnx"), Path("fold-0/model.int8.onnx"))        # per-token
    >>> quantize_int8(Path("fold-0/model.onnx"), Path("/tmp/dynamic.onnx"), "dynamic")

Two schemes (:data:`INT8_SCHEMES`; ``--int8-scheme``): ``per-token`` (default), a graph rewrite in
standard ONNX ops with int8 weights per output channel and int8 activations scaled per token
(:func:`_quantize_per_token`), and ``dynamic``, onnxruntime's ``quantize_dynamic``. The int8 file
is about a quarter of the size and about twice as fast on one CPU thread, at the price of
slightly different probabilities (``benchmarks/int8.py`` compares the schemes and the options of
the per-token rewrite: asymmetric activations, SmoothQuant, MatMuls kept fp32).

numpy, onnx and onnxruntime are imported where they are used: the CLI builds its parser (and so
imports this module through :mod:`~emitlab.inference.onnx_export`) on every call.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from emitlab.errors import ModelFormatError, SettingsError

if TYPE_CHECKING:
    import numpy as np
    from onnx import GraphProto, NodeProto, TensorProto

log = logging.getLogger("emitlab")

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


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


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


# --------------------------------------------------------------------------------------
# The per-token scheme: a graph rewrite


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
    import onnx

    model = onnx.load(str(src))
    rewrite = _PerTokenRewrite(model.graph, keep_fp32, asymmetric)
    if smooth:
        rewrite.smooth_scale = rewrite.smoothing_scales(smooth, alpha)
    for node in model.graph.node:
        rewrite.visit(node)
    if not rewrite.n_matmul:
        raise ModelFormatError(f"{src}: no MatMul with a constant weight to quantise (not an encoder graph?)")
    rewrite.replace_graph()
    onnx.save(model, str(dest))
    return {"quantised_matmuls": rewrite.n_matmul, "quantised_embeddings": rewrite.n_embed}


def _shared_constants() -> list["TensorProto"]:
    """The scalars every rewritten MatMul refers to (``int8_pt/...``), stored once."""
    import numpy as np
    from onnx import numpy_helper

    return [numpy_helper.from_array(np.array(1 / 127, np.float32), "int8_pt/inv127"),
            numpy_helper.from_array(np.array(1e-12, np.float32), "int8_pt/eps"),
            numpy_helper.from_array(np.array(128, np.float32), "int8_pt/f128"),
            numpy_helper.from_array(np.array(128, np.uint8), "int8_pt/zp128"),
            numpy_helper.from_array(np.array(1 / 255, np.float32), "int8_pt/inv255"),
            numpy_helper.from_array(np.array(0, np.uint8), "int8_pt/zp0")]


class _PerTokenRewrite:
    """One pass of :func:`_quantize_per_token` over ``graph``: :meth:`visit` every node in order
    (it collects the new nodes and initialisers), then :meth:`replace_graph`."""

    def __init__(self, graph: "GraphProto", keep_fp32: tuple[str, ...], asymmetric: bool):
        self.graph = graph
        self.keep_fp32 = keep_fp32
        self.asymmetric = asymmetric
        self.inits = {t.name: t for t in graph.initializer}
        self.uses: dict[str, int] = {}  # how many node inputs read each name
        for node in graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.nodes: list[NodeProto] = []  # the rewritten graph's nodes, in order
        self.new_inits: list[TensorProto] = []
        self.dropped: set[str] = set()  # fp32 initialisers no node reads any more
        #: activation -> (its uint8 tensor, its scale, its per-token min or None when symmetric)
        self.quantised_inputs: dict[str, tuple[str, str, str | None]] = {}
        self.smooth_scale: dict[str, np.ndarray] = {}  # activation -> SmoothQuant's s
        self.n_matmul = self.n_embed = 0

    def weight(self, name: str) -> "np.ndarray | None":
        """The fp32 initialiser ``name`` as an array, or None when it is not one."""
        from onnx import TensorProto, numpy_helper

        if name not in self.inits or self.inits[name].data_type != TensorProto.FLOAT:
            return None
        return numpy_helper.to_array(self.inits[name])

    def quantised(self, node: "NodeProto") -> bool:
        """Whether ``node`` is a MatMul by a constant 2-D weight that is to be quantised."""
        w = self.weight(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        return w is not None and w.ndim == 2 and not any(k in node.name for k in self.keep_fp32)

    def smoothing_scales(self, smooth: dict[str, "np.ndarray"], alpha: float) -> dict[str, "np.ndarray"]:
        """SmoothQuant's per-channel ``s`` of every quantised MatMul input that ``smooth`` measured."""
        import numpy as np

        wmax: dict[str, np.ndarray] = {}
        for node in self.graph.node:
            if self.quantised(node) and node.input[0] in smooth:
                m = np.abs(self.weight(node.input[1])).max(1)
                x = node.input[0]
                wmax[x] = np.maximum(wmax[x], m) if x in wmax else m
        scales = {}
        for x, m in wmax.items():
            a = np.maximum(smooth[x].astype(np.float64), 1e-5)
            scales[x] = np.clip(a ** alpha / np.maximum(m, 1e-5) ** (1 - alpha), 1e-5, 1e5).astype(np.float32)
        return scales

    def visit(self, node: "NodeProto") -> None:
        """Rewrite a quantised MatMul or the word-embedding Gather; keep any other node as it is."""
        if self.quantised(node):
            self.matmul(node)
            return
        table = self.weight(node.input[0]) if node.op_type == "Gather" else None
        if table is not None and table.ndim == 2 and node.input[1] == "input_ids":  # the word-embedding table
            self.embedding(node, table)
            return
        self.nodes.append(node)

    def matmul(self, node: "NodeProto") -> None:
        """``x @ W`` -> MatMulInteger on the per-token uint8 ``x`` and the per-column int8 ``W``."""
        w = self.weight(node.input[1])
        x = node.input[0]
        if x in self.smooth_scale:
            x, w = self.smoothed(x, w)
        xq, xscale, xmin = self.quantised_input(x)
        self.integer_matmul(node, w, xq, xscale, xmin)
        self.n_matmul += 1
        if self.uses[node.input[1]] == 1:
            self.dropped.add(node.input[1])

    def smoothed(self, x: str, w: "np.ndarray") -> tuple[str, "np.ndarray"]:
        """``x / s`` (one Mul per activation, shared by its MatMuls) and ``s * W``."""
        from onnx import helper, numpy_helper

        s = self.smooth_scale[x]
        if x + "/smoothed" not in self.quantised_inputs and x not in self.quantised_inputs:
            p = f"int8_pt/smooth{len(self.quantised_inputs)}"
            self.new_inits.append(numpy_helper.from_array(1 / s, p + "/inv_s"))
            self.nodes.append(helper.make_node("Mul", [x, p + "/inv_s"], [x + "/smoothed"], name=p + "/Mul"))
        return x + "/smoothed", w * s[:, None]

    def quantised_input(self, x: str) -> tuple[str, str, str | None]:
        """``x`` quantised per token: (uint8 tensor, scale, min or None); the query/key/value
        MatMuls share theirs, so each activation is quantised once."""
        if x not in self.quantised_inputs:
            p = f"int8_pt/{len(self.quantised_inputs)}"
            self.quantised_inputs[x] = self.asymmetric_input(x, p) if self.asymmetric else self.symmetric_input(x, p)
        return self.quantised_inputs[x]

    def asymmetric_input(self, x: str, p: str) -> tuple[str, str, str]:
        """``q = round((x - min) / scale)``, ``scale = max(max - min, eps) / 255`` per token."""
        from onnx import TensorProto, helper

        self.nodes += [helper.make_node("ReduceMax", [x], [p + "/max"], name=p + "/ReduceMax", axes=[-1], keepdims=1),
                       helper.make_node("ReduceMin", [x], [p + "/min"], name=p + "/ReduceMin", axes=[-1], keepdims=1),
                       helper.make_node("Sub", [p + "/max", p + "/min"], [p + "/range"], name=p + "/Range"),
                       helper.make_node("Max", [p + "/range", "int8_pt/eps"], [p + "/range_eps"], name=p + "/Max"),
                       helper.make_node("Mul", [p + "/range_eps", "int8_pt/inv255"], [p + "/scale"],
                                        name=p + "/Scale"),
                       helper.make_node("Sub", [x, p + "/min"], [p + "/shifted"], name=p + "/Shift"),
                       helper.make_node("Div", [p + "/shifted", p + "/scale"], [p + "/scaled"], name=p + "/Div"),
                       helper.make_node("Round", [p + "/scaled"], [p + "/rounded"], name=p + "/Round"),
                       helper.make_node("Cast", [p + "/rounded"], [p + "/q"], name=p + "/Cast", to=TensorProto.UINT8)]
        return p + "/q", p + "/scale", p + "/min"

    def symmetric_input(self, x: str, p: str) -> tuple[str, str, None]:
        """``q = round(x / scale) + 128``, ``scale = max(max |x|, eps) / 127`` per token."""
        from onnx import TensorProto, helper

        self.nodes += [helper.make_node("Abs", [x], [p + "/abs"], name=p + "/Abs"),
                       helper.make_node("ReduceMax", [p + "/abs"], [p + "/absmax"], name=p + "/ReduceMax",
                                        axes=[-1], keepdims=1),
                       helper.make_node("Max", [p + "/absmax", "int8_pt/eps"], [p + "/absmax_eps"], name=p + "/Max"),
                       helper.make_node("Mul", [p + "/absmax_eps", "int8_pt/inv127"], [p + "/scale"],
                                        name=p + "/Scale"),
                       helper.make_node("Div", [x, p + "/scale"], [p + "/scaled"], name=p + "/Div"),
                       helper.make_node("Round", [p + "/scaled"], [p + "/rounded"], name=p + "/Round"),
                       helper.make_node("Add", [p + "/rounded", "int8_pt/f128"], [p + "/shifted"], name=p + "/Add"),
                       helper.make_node("Cast", [p + "/shifted"], [p + "/q"], name=p + "/Cast", to=TensorProto.UINT8)]
        return p + "/q", p + "/scale", None

    def integer_matmul(self, node: "NodeProto", w: "np.ndarray", xq: str, xscale: str, xmin: str | None) -> None:
        """MatMulInteger on int8 ``W`` (one scale per output column), rescaled into ``node``'s output."""
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        wscale = np.abs(w).max(0) / 127
        wscale[wscale == 0] = 1.0
        wq = np.clip(np.round(w / wscale), -127, 127).astype(np.int8)
        b = node.input[1]
        self.new_inits += [numpy_helper.from_array(wq, b + "/int8"),
                           numpy_helper.from_array(wscale.astype(np.float32), b + "/scale")]
        q, out = node.name or b, node.output[0]
        self.nodes += [helper.make_node("MatMulInteger", [xq, b + "/int8", "int8_pt/zp0" if xmin else "int8_pt/zp128"],
                                        [q + "/int32"], name=q + "/MatMulInteger"),
                       helper.make_node("Cast", [q + "/int32"], [q + "/float"], name=q + "/CastFloat",
                                        to=TensorProto.FLOAT),
                       helper.make_node("Mul", [q + "/float", b + "/scale"], [q + "/wscaled"], name=q + "/MulW"),
                       helper.make_node("Mul", [q + "/wscaled", xscale], [q + "/xscaled" if xmin else out],
                                        name=q + "/MulX")]
        if xmin:  # x = scale * q + min: add min * (sum over the input dimension of W) back
            self.new_inits.append(numpy_helper.from_array(w.sum(0).astype(np.float32), b + "/colsum"))
            self.nodes += [helper.make_node("Mul", [xmin, b + "/colsum"], [q + "/offset"], name=q + "/Offset"),
                           helper.make_node("Add", [q + "/xscaled", q + "/offset"], [out], name=q + "/AddOffset")]

    def embedding(self, node: "NodeProto", table: "np.ndarray") -> None:
        """The word-embedding Gather on an int8 table (one scale per row), dequantised after the lookup."""
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        t, out = node.input[0], node.output[0]
        scale = np.abs(table).max(1) / 127
        scale[scale == 0] = 1.0
        q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
        self.new_inits += [numpy_helper.from_array(q, t + "/int8"),
                           numpy_helper.from_array(scale.astype(np.float32)[:, None], t + "/row_scale")]
        self.nodes += [helper.make_node("Gather", [t + "/int8", node.input[1]], [out + "/int8"],
                                        name=out + "/GatherInt8", axis=0),
                       helper.make_node("Gather", [t + "/row_scale", node.input[1]], [out + "/scale"],
                                        name=out + "/GatherScale", axis=0),
                       helper.make_node("Cast", [out + "/int8"], [out + "/float"], name=out + "/Cast",
                                        to=TensorProto.FLOAT),
                       helper.make_node("Mul", [out + "/float", out + "/scale"], [out], name=out + "/Dequantize")]
        self.n_embed += 1
        if self.uses[t] == 1:
            self.dropped.add(t)

    def replace_graph(self) -> None:
        """Put the collected nodes and initialisers in place of the graph's own."""
        graph = self.graph
        kept = [t for t in graph.initializer if t.name not in self.dropped]
        del graph.initializer[:]
        graph.initializer.extend(kept + _shared_constants() + self.new_inits)
        del graph.node[:]
        graph.node.extend(self.nodes)
        graph.ClearField("value_info")  # shapes of the pre-processed graph; onnxruntime infers its own


__all__ = ["DEFAULT_INT8_SCHEME", "INT8_DESCRIPTIONS", "INT8_SCHEMES", "matmul_input_absmax", "quantize_int8"]
