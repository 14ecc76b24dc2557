"""Training-step speed of me5-small on the CPU: fp32 against bf16 autocast (``--precision bf16``).

    python benchmarks/bf16_cpu.py                      # 3 rounds x 10 steps of each, batch 16, length 96

Both precisions train the same network (word embeddings frozen, as the default recipe) on the same
EMit training batches, in alternating rounds (fp32, bf16, fp32, ...) so that the machine's drift
falls on both; the result holds examples/second per round and precision, their ratio (bf16 / fp32,
from the medians), whether the CPU has native bf16 (AVX512-BF16 or AMX), and the largest logit
difference between the two on one batch before training (a first look at faithfulness; whether
bf16 keeps the *scores* needs full runs over seeds). Written to ``benchmarks/results/bf16_cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from record import write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("EMITLAB_DATA", str(HERE.parent.parent / "shared/data/emit")))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="Optimizer steps per round and precision.")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--name", default="bf16_cpu")
    args = p.parse_args(argv)

    import torch

    from emitlab.data.cleaning import TextCleaner
    from emitlab.data.loading import load_emit
    from emitlab.devices import cpu_has_bf16
    from emitlab.members.transformer.losses import build_loss
    from emitlab.members.transformer.model import build_model, default_prefix, load_tokenizer, resolve_model_source
    from emitlab.settings import CleaningConfig, TrainConfig

    data = load_emit(args.data)
    cfg = TrainConfig(max_length=args.max_length, batch_size=args.batch_size)
    source = resolve_model_source(cfg.model)
    tok = load_tokenizer(source)
    prefix = default_prefix(source)
    n = args.batch_size * args.steps
    texts = TextCleaner(CleaningConfig()).clean_many(data.train.texts[:n])
    y = torch.as_tensor(data.train.labels[:n], dtype=torch.float32)
    batches = []
    for i in range(0, n, args.batch_size):
        enc = tok([prefix + t for t in texts[i:i + args.batch_size]], truncation=True, max_length=args.max_length,
                  padding=True, return_tensors="pt")
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        batches.append((inputs, y[i:i + args.batch_size]))
    torch.manual_seed(0)
    model = build_model(source, y.shape[1], cfg, data.train.labels)
    loss_fn = build_loss("bce", data.train.labels, "sqrt")
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    model.eval()
    with torch.no_grad():
        ref = model(**batches[0][0])["logits"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**batches[0][0])["logits"].float()
    logit_diff = float((ref - low).abs().max())

    def round_speed(bf16: bool) -> float:
        model.train()
        t0 = time.perf_counter()
        for inputs, target in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
                logits = model(**inputs)["logits"]
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return n / (time.perf_counter() - t0)

    round_speed(False)  # warm-up (allocator, kernels)
    speeds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        for name in ("fp32", "bf16"):
            speeds[name].append(round(round_speed(name == "bf16"), 2))
            print(f"round {r + 1}: {name} {speeds[name][-1]} examples/s", flush=True)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    ratio = round(med["bf16"] / med["fp32"], 3)
    print(f"bf16 / fp32 = {ratio} (medians); max |logit fp32 - bf16| before training {logit_diff:.3g}")
    write_result(args.name, {"settings": vars(args), "native_bf16": cpu_has_bf16(),
                             "torch_threads": torch.get_num_threads(), "examples_per_second": speeds,
                             "median_examples_per_second": med, "bf16_over_fp32": ratio,
                             "max_abs_logit_diff_before_training": logit_diff,
                             "note": "speed only: whether bf16 keeps the scores needs full runs over seeds"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
