"""How faithful and how fast each int8 quantisation of one transformer network is, against fp32 ONNX.

    python benchmarks/int8.py --network runs/full/model/members/transformer/fold-0 \\
        --texts ../shared/data/emit/emit_test.csv --task A --results-dir /tmp/int8

The network folder is only read: it is copied (without any ONNX file) into a temporary folder,
where ``model.onnx`` is exported and every variant is written. The texts (column ``text``) are
cleaned as a run cleans them; with ``--task`` the gold labels of the EMit test split are read
too (``emitlab.data.loading.load_emit(--data, task)``, which must hold the same texts in the same
order) for macro-F1 at 0.5.

Per variant: the largest and the 99th-percentile |p - p_fp32| over every text and label,
macro-F1 at 0.5 (and fp32's), texts per second at batch 64 on one onnxruntime thread (one
untimed batch first; fp32 is timed at the start and at the end, and the ratio uses their mean),
the file size and the quantisation time. Variants:

``per-token``, ``dynamic``
    :func:`emitlab.inference.quantize.quantize_int8`'s schemes (``per-token`` is the default).
``dynamic-matmul-per-channel``
    ``quantize_dynamic`` on the MatMuls only (embeddings fp32), per-channel weights.
``dynamic-only-<group>``
    ``quantize_dynamic`` on one group of nodes only, the rest fp32: which nodes make the drift
    (``word-embedding``, ``qkv``, ``attention-output``, ``ffn-up``, ``ffn-down``).
``fakequant-weights``, ``fakequant-embedding``
    The fp32 graph with only the MatMul weights (int8 per output column) or only the
    word-embedding table (int8 per row) rounded as ``per-token`` rounds them: the drift of the
    weight rounding alone, without any activation quantisation.
``per-token-<options>``
    ``per-token`` with ``asym`` (activations over their own [min, max] per token),
    ``smooth<alpha>`` (SmoothQuant: activation outliers migrated into the weights, ranges from
    ``--calibration-size`` training texts, never the measured ones) and/or ``-keep-<group>``
    (that group's MatMuls left fp32), e.g. ``per-token-asym-smooth0.5-keep-ffn-down``.
``nbits8-block<B>``
    onnxruntime's ``MatMulNBits`` (weight-only int8 in blocks of B along the input dimension,
    fp32 compute; needs ``pip install onnx-ir``).

Writes ``<results-dir>/<name>.json`` (default ``benchmarks/results/int8.json``) through
``record.write_result``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402

GROUPS = {  # node-name patterns of the BERT graphs the TorchScript exporter writes
    "word-embedding": lambda n: n.op_type == "Gather" and "word_embeddings" in n.name,
    "qkv": lambda n: n.op_type == "MatMul" and any(f"/self/{k}/" in n.name for k in ("query", "key", "value")),
    "attention-output": lambda n: n.op_type == "MatMul" and "/attention/output/dense/" in n.name,
    "ffn-up": lambda n: n.op_type == "MatMul" and "/intermediate/dense/" in n.name,
    "ffn-down": lambda n: n.op_type == "MatMul" and "/output/dense/" in n.name and "/attention/" not in n.name,
}
DEFAULT_VARIANTS = ["per-token", "dynamic", "dynamic-matmul-per-channel", *(f"dynamic-only-{g}" for g in GROUPS),
                    "fakequant-weights", "fakequant-embedding", "per-token-asym", "per-token-smooth0.5",
                    "per-token-keep-qkv", "per-token-keep-ffn-down", "nbits8-block32"]


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict(path: Path, batches: list, n: int, n_labels: int) -> tuple[np.ndarray, float]:
    """Probabilities of every text, and texts/s of the timed pass (after one untimed batch)."""
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    sess.run(["logits"], {k: batches[0][1][k] for k in names})
    logits = np.zeros((n, n_labels), np.float32)
    t0 = time.perf_counter()
    for idx, batch in batches:
        logits[idx] = sess.run(["logits"], {k: batch[k] for k in names})[0]
    return 1 / (1 + np.exp(-logits)), n / (time.perf_counter() - t0)


def write_variant(name: str, fp32: Path, dest: Path, calibration: list | None = None) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from emitlab.inference.quantize import INT8_SCHEMES, _quiet_root_logger, quantize_int8

    if name in INT8_SCHEMES:
        return quantize_int8(fp32, dest, name)
    pre = dest.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    try:
        if name.startswith("fakequant-"):  # fp32 graph, only the rounding of one kind of weight
            from onnx import numpy_helper

            kind = name.removeprefix("fakequant-")
            model = onnx.load(str(pre))
            graph = model.graph
            consts = {t.name: len(t.dims) for t in graph.initializer}
            targets = ({n.input[1]: 0 for n in graph.node if n.op_type == "MatMul" and consts.get(n.input[1]) == 2}
                       if kind == "weights" else
                       {n.input[0]: 1 for n in graph.node if GROUPS["word-embedding"](n)})
            for t in graph.initializer:
                if t.name in targets:  # int8 per output column (MatMul) / per row (embedding), as per-token
                    w = numpy_helper.to_array(t)
                    scale = np.abs(w).max(targets[t.name], keepdims=True) / 127
                    scale[scale == 0] = 1.0
                    t.CopyFrom(numpy_helper.from_array(
                        (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32), t.name))
            onnx.save(model, str(dest))
            return {"rounded": len(targets), "what": kind}
        if name.startswith("nbits8-block"):  # weight-only int8 in blocks along the input dimension
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # needs onnx-ir

            block = int(name.removeprefix("nbits8-block"))
            q = MatMulNBitsQuantizer(onnx.load(str(pre)), bits=8, block_size=block, is_symmetric=True,
                                     accuracy_level=0, op_types_to_quantize=("MatMul",))
            with _quiet_root_logger():
                q.process()
            q.model.save_model_to_file(str(dest), False)
            return {"nodes": "every MatMul with a constant weight", "block_size": block, "compute": "fp32"}
        if name.startswith("per-token-"):  # per-token[-asym][-smooth<alpha>][-keep-<group>]
            from emitlab.inference.quantize import _quantize_per_token, matmul_input_absmax

            match = re.fullmatch(r"per-token((?:-asym|-smooth[0-9.]*)*)(?:-keep-(.+))?", name)
            if match is None:
                raise SystemExit(f"unknown variant {name!r}")
            opts, group = match.group(1).split("-")[1:], match.group(2)
            keep = ()
            if group:
                graph = onnx.load(str(pre), load_external_data=False).graph
                keep = tuple(n.name for n in graph.node if GROUPS[group](n))
            smooth, alpha = None, 0.5
            for o in opts:
                if o.startswith("smooth"):
                    alpha = float(o.removeprefix("smooth") or 0.5)
                    smooth = matmul_input_absmax(pre, calibration)
            info = _quantize_per_token(pre, dest, keep_fp32=keep, asymmetric="asym" in opts, smooth=smooth,
                                       alpha=alpha)
            return {**info, "kept_fp32": len(keep), **({"smooth_alpha": alpha} if smooth else {})}
        if name == "dynamic-matmul-per-channel":
            quantize_dynamic(str(pre), str(dest), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             per_channel=True)
            return {"nodes": "every MatMul"}
        group = name.removeprefix("dynamic-only-")
        graph = onnx.load(str(pre), load_external_data=False).graph
        consts = {t.name for t in graph.initializer}
        nodes = [n.name for n in graph.node
                 if GROUPS[group](n) and n.input[0 if n.op_type == "Gather" else 1] in consts]
        quantize_dynamic(str(pre), str(dest), weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                         op_types_to_quantize=["Gather" if group == "word-embedding" else "MatMul"])
        return {"nodes": len(nodes)}
    finally:
        pre.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", type=Path, required=True, help="A transformer network folder (read only).")
    p.add_argument("--texts", type=Path, required=True, help="CSV file with a 'text' column.")
    p.add_argument("--data", type=Path, default=None,
                   help="EMit data folder for the gold labels (default: the folder of --texts).")
    p.add_argument("--task", default=None, help="EMit task (A or B) of the gold labels, for macro-F1.")
    p.add_argument("--limit", type=int, default=None, help="Only the first N texts (a quick check).")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"Comma-separated variants (default: {','.join(DEFAULT_VARIANTS)}).")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--calibration-texts", type=Path, default=None,
                   help="CSV with a 'text' column for the smooth variants' activation ranges (default: "
                        "emit_train_A.csv beside --texts; never the texts measured).")
    p.add_argument("--calibration-size", type=int, default=512, help="Calibration texts (a seeded sample).")
    p.add_argument("--name", default="int8")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="Where the JSON goes (default benchmarks/results; e.g. /tmp/int8 for a trial).")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import pandas as pd
    import torch

    from emitlab.data.cleaning import TextCleaner
    from emitlab.engine.evaluation import macro_f1
    from emitlab.inference.onnx_export import ONNX_FILE, export_network_onnx
    from emitlab.members.transformer.member import load_predictor, read_network_meta

    torch.set_num_threads(1)
    texts = TextCleaner().clean_many(pd.read_csv(args.texts)["text"].astype(str).tolist())[:args.limit]
    gold = None
    if args.task:
        from emitlab.data.loading import load_emit

        d = load_emit(args.data or args.texts.parent, args.task)
        gold = np.asarray(d.test.labels)[:len(texts)]
        if len(gold) != len(texts):
            raise SystemExit(f"{len(gold)} gold rows for {len(texts)} texts")

    variants = [v for v in args.variants.split(",") if v]
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="emitlab-int8-") as tmp:
        net = Path(shutil.copytree(args.network, Path(tmp) / "net", ignore=shutil.ignore_patterns("*.onnx")))
        export_network_onnx(net, int8=False)
        predictor, _ = load_predictor(net, "torch")
        n_labels = len(read_network_meta(net)["labels"])
        batches = list(predictor.padded_batches(texts, args.batch_size))
        calibration, calib_path = None, None
        if any("smooth" in v for v in variants):
            calib_path = args.calibration_texts or args.texts.parent / "emit_train_A.csv"
            pool = TextCleaner().clean_many(pd.read_csv(calib_path)["text"].astype(str).tolist())
            pick = np.random.default_rng(0).choice(len(pool), min(args.calibration_size, len(pool)), replace=False)
            calibration = [b for _, b in predictor.padded_batches([pool[i] for i in sorted(pick)], args.batch_size)]
        fp32 = net / ONNX_FILE
        p32, tps_start = predict(fp32, batches, len(texts), n_labels)
        f1_32 = macro_f1(gold, (p32 >= 0.5).astype(int)) if gold is not None else None
        print(f"fp32: {tps_start:.1f} texts/s, macro-F1 {f1_32}", flush=True)
        results = {}
        for name in variants:
            dest = Path(tmp) / f"{name}.onnx"
            t0 = time.time()
            info = write_variant(name, fp32, dest, calibration)
            seconds = time.time() - t0
            p, tps = predict(dest, batches, len(texts), n_labels)
            diff = np.abs(p - p32)
            worst = np.unravel_index(diff.argmax(), diff.shape)
            results[name] = {"max_abs_dp": float(diff.max()), "p99_abs_dp": float(np.quantile(diff, 0.99)),
                             "mean_abs_dp": float(diff.mean()), "worst": {"text": int(worst[0]), "label": int(worst[1]),
                                                                         "p_fp32": float(p32[worst]),
                                                                         "p": float(p[worst])},
                             "decision_flips_at_0.5": int(((p >= 0.5) != (p32 >= 0.5)).sum()),
                             "macro_f1": macro_f1(gold, (p >= 0.5).astype(int)) if gold is not None else None,
                             "texts_per_s": tps, "bytes": dest.stat().st_size, "quantise_seconds": round(seconds, 1),
                             "info": info}
            dest.unlink()
            r = results[name]
            print(f"{name:32s} max {r['max_abs_dp']:.4f} p99 {r['p99_abs_dp']:.4f} F1 {r['macro_f1']} "
                  f"{tps:.1f} t/s {r['bytes'] / 2**20:.0f} MiB", flush=True)
        _, tps_end = predict(fp32, batches, len(texts), n_labels)
        tps32 = (tps_start + tps_end) / 2
        for r in results.values():
            r["speedup_vs_fp32"] = r["texts_per_s"] / tps32
            r["macro_f1_change"] = (r["macro_f1"] - f1_32) if gold is not None else None
        fp32_row = {"texts_per_s": tps32, "texts_per_s_start_end": [tps_start, tps_end], "macro_f1": f1_32,
                    "bytes": fp32.stat().st_size}
    print(f"\n{'variant':32s} {'max|dp|':>8s} {'p99|dp|':>8s} {'F1':>7s} {'dF1':>7s} {'t/s':>6s} {'x fp32':>6s} "
          f"{'MiB':>5s}")
    print(f"{'fp32':32s} {0:8.4f} {0:8.4f} {f1_32 or float('nan'):7.4f} {0:7.4f} {tps32:6.1f} {1:6.2f} "
          f"{fp32_row['bytes'] / 2**20:5.0f}")
    for name, r in results.items():
        print(f"{name:32s} {r['max_abs_dp']:8.4f} {r['p99_abs_dp']:8.4f} {r['macro_f1'] or float('nan'):7.4f} "
              f"{r['macro_f1_change'] or 0:7.4f} {r['texts_per_s']:6.1f} {r['speedup_vs_fp32']:6.2f} "
              f"{r['bytes'] / 2**20:5.0f}")
    payload = {"network": str(args.network.resolve()), "texts": str(args.texts.resolve()), "n_texts": len(texts),
               "task": args.task, "batch_size": args.batch_size,
               "calibration": ({"texts": str(calib_path.resolve()), "size": args.calibration_size, "seed": 0}
                               if calib_path else None), "threads": 1, "fp32": fp32_row, "variants": results,
               "seconds": round(time.time() - t_start, 1)}
    path = record.write_result(args.name, payload, args.results_dir)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
