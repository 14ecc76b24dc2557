#!/usr/bin/env bash
# CLS pooler vs mean pooling on me5-small: one epoch each, same settings otherwise, compared on
# the validation split (the test column is reported, never used to choose).
set -euo pipefail
cd "$(dirname "$0")/.."
for head in mean cls; do
  .venv/bin/python benchmarks/record.py "head_${head}_1epoch" -- \
    .venv/bin/emitlab -q train --data "${EMITLAB_DATA:-../shared/data/emit}" --model me5-small --pooling "$head" \
    --epochs 1 --report-to none --out "runs/head-${head}" --overwrite
done
