#!/usr/bin/env bash
# gan-fashion v2 (issue 12) from scratch, on one CPU thread:
#   bash scripts/reproduce_gan_fashion.sh
# 1. the evaluation panel (eval/fashion-judges; only if missing - it is committed);
# 2. v1, the starting point: src/modalbridge/weights/gan-fashion as of commit f77029c (configs/gan/fashion.yaml,
#    45 min); set TRAIN_V1=1 to retrain it instead of taking it from git;
# 3. configs/gan/fashion_v2.yaml (seed 0; up to 72 min), EMA snapshots every 500 G steps;
# 4. the snapshot with the lowest FD on the selection judge (cnn) replaces src/modalbridge/weights/gan-fashion;
# 5. scripts/gan_quality.py measures it with the whole panel -> docs/results/gan_fashion.json + sample sheet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
[ -f eval/fashion-judges/panel.json ] || $PY scripts/train_judges.py
mkdir -p runs/gan-fashion-v1
if [ "${TRAIN_V1:-0}" = 1 ]; then
  $PY -m modalbridge train configs/gan/fashion.yaml
  cp "$(ls -d runs/gan-fashion/*/ | tail -1)"model/* runs/gan-fashion-v1/
else
  for f in config.json metrics.json model.safetensors; do
    git show "f77029c:src/modalbridge/weights/gan-fashion/$f" > "runs/gan-fashion-v1/$f"
  done
fi
$PY -m modalbridge train configs/gan/fashion_v2.yaml
RUN=$(ls -d runs/gan-fashion-v2/*/ | tail -1)
$PY scripts/select_gan_snapshot.py "$RUN" --install src/modalbridge/weights/gan-fashion
$PY scripts/gan_quality.py
