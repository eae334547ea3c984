#!/usr/bin/env bash
# gan-fashion v3 (issue 12) on a lent GPU: four variants of configs/gan/fashion_v3.yaml trained side by side on one
# GPU (each process is bound by kernel launches, so they share the card well), then each run's EMA snapshots are
# ranked by the selection judge (cnn) and the best of each run is packed for the trip back.
#   MINUTES=6 OUT=/tmp/out bash scripts/gan_gpu_sweep.sh
# Needs: python3 with torch (CUDA), lightning, safetensors, pyyaml, typer; FASHION_MNIST_DIR with the idx files.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
MINUTES=${MINUTES:-6}
OUT=${OUT:-outputs/gan-sweep}
ACC=${ACC:-gpu}
SEL_DEVICE=${SEL_DEVICE:-cuda}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MODALBRIDGE_THREADS=${MODALBRIDGE_THREADS:-2}
mkdir -p "$OUT" runs/sweep/logs
declare -A VARIANTS=(
  [a]="data.batch_size=128"
  [b]="data.batch_size=128 model.diffaugment=translation,cutout"
  [c]=""
  [d]="data.batch_size=128 model.g_channel_width=40 model.d_channel_width=96"
)
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
for v in "${!VARIANTS[@]}"; do
  # shellcheck disable=SC2086
  $PY -m modalbridge train configs/gan/fashion_v3.yaml "run_root=runs/sweep/$v" "trainer.accelerator=$ACC" \
    "model.max_minutes=$MINUTES" model.max_g_steps=0 ${VARIANTS[$v]} ${EXTRA:-} > "runs/sweep/logs/train_$v.log" 2>&1 &
done
wait
for v in "${!VARIANTS[@]}"; do tail -3 "runs/sweep/logs/train_$v.log"; done
for v in "${!VARIANTS[@]}"; do
  run=$(ls -d runs/sweep/$v/*/*/ 2>/dev/null | tail -1)
  [ -n "$run" ] || { echo "variant $v: no run dir"; continue; }
  $PY scripts/select_gan_snapshot.py "$run" --device "$SEL_DEVICE" --threads 2 --install "runs/sweep/best_$v" \
    > "runs/sweep/logs/select_$v.log" 2>&1 &
done
wait
for v in a b c d; do
  echo "== $v: ${VARIANTS[$v]}"; grep -E "^(step|model|best)" "runs/sweep/logs/select_$v.log"
  [ -d "runs/sweep/best_$v" ] && tar -cf "$OUT/best_$v.tar" -C runs/sweep "best_$v"
done
tar -czf "$OUT/logs.tar.gz" runs/sweep/logs $(ls -d runs/sweep/*/*/*/samples 2>/dev/null)
ls -la "$OUT"
