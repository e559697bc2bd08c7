#!/usr/bin/env bash
# /emotion latency while a retrain runs on the same cores: the setup before thread discipline against after.
#   before: torch backend; torch's default threads (all cores) in the bot and in the training child; OpenMP's
#           default (spinning) wait policy.
#   after:  int8 ONNX on the cores the retrain leaves (1 of 2), the child on the rest with OMP_WAIT_POLICY=PASSIVE,
#           which is what bot/retrain.py (Retrainer.child_environment, InferenceService.reserve_cores) sets up.
# Each case starts a real `moodring train` (1 epoch on 20,000 rows, killed afterwards), waits for its first
# steps, then runs benchmarks/bot_load.py at 10 and 20 msg/s with /emotion every 0.1 s.
#
#   MODEL=models/moodring-goemotions bash benchmarks/retrain_load.sh     # reports in $OUT (default: a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-models/moodring-goemotions}
OUT=${OUT:-$(mktemp -d)}
export GOEMOTIONS_DIR=${GOEMOTIONS_DIR:-$(realpath ../shared/data/goemotions)}
BIN=${BIN:-.venv/bin}
cores=$(nproc)

measure() {  # name, environment of the training child, bot_load arguments...
  local name=$1 child_env=$2
  shift 2
  # shellcheck disable=SC2086
  env $child_env "$BIN/moodring" train --backbone minilm --epochs 1 --train-limit 20000 --no-onnx \
    --out "$OUT/candidate-$name" --work-dir "$OUT/run-$name" >"$OUT/train-$name.log" 2>&1 &
  local child=$!
  for _ in $(seq 90); do grep -q "s/it\|it/s" "$OUT/train-$name.log" && break; sleep 2; done
  "$BIN/python" benchmarks/bot_load.py --model "$MODEL" --rates 10,20 --seconds-per-step 20 "$@" \
    >"$OUT/$name.md" 2>"$OUT/$name.err" || true
  kill "$child" 2>/dev/null || true
  wait "$child" 2>/dev/null || true
  echo "== $name"; sed -n '/^| offered/,/^$/p' "$OUT/$name.md"
}

measure before "" --backend torch
measure after "OMP_WAIT_POLICY=PASSIVE MOODRING_THREADS=$((cores - 1)) OMP_NUM_THREADS=$((cores - 1))" \
  --backend onnx-int8 --threads 1
echo "reports and logs: $OUT"
