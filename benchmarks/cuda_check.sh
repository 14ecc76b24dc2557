#!/usr/bin/env bash
# The CUDA code paths on a GPU machine (device placement, bf16/fp16, CPU reload of a CUDA-trained
# export), with the tiny local BERT: the CUDA-marked tests and one whole `emitlab run` on
# synthetic data. Packages the GPU image lacks travel as wheels in .whl/ (see benchmarks/README).
#   bash benchmarks/cuda_check.sh [OUT_DIR]
set -euo pipefail
out="${1:-${OUT:-/tmp/cuda_check}}"
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD/src"
else
  export PYTHONPATH="$PWD/src"
fi
python3 - <<'PY' | tee "$out/device.txt"
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
      "bf16", torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None)
PY
python3 -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_losses.py 2>&1 | tee "$out/pytest.txt"
python3 - "$out" <<'PY' 2>&1 | tail -40 | tee "$out/run.txt"
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from synthetic import write_emit_folder
from tiny import build_tiny_bert
from emitlab.cli import main
base = Path("/tmp/cuda_run")
data, model = write_emit_folder(base / "emit"), build_tiny_bert(base / "tiny")
rc = main(["-q", "run", "--data", str(data), "--model", str(model), "--out", str(base / "run"), "--overwrite",
           "--device", "cuda", "--no-report", "--folds", "3", "--transformer-folds", "2", "--epochs", "3",
           "--learning-rate", "3e-3", "--head-learning-rate", "1e-2", "--no-freeze-word-embeddings", "--report-to", "none"])
m = json.loads((base / "run" / "metrics.json").read_text())
summary = {"rc": rc, "training": m["members"]["transformer"]["training"], "best": m["best_model"],
           "export": m["export"], "test": {k: v["test"]["macro_f1"] for k, v in m["models"].items()}}
Path(sys.argv[1], "run_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
