#!/usr/bin/env bash
# The trainer's images/s before and after, in one sitting on this machine (issue 23; README "Training").
# Usage: bash scripts/trainer_speed.sh [BEFORE_COMMIT] [DATA_ROOT]
#   BEFORE_COMMIT (default 4339046, the trainer as issue 23 found it) runs its committed scratch ViT recipe
#   (run D's command) for 6 epochs from a temporary git worktree; this checkout then runs today's committed
#   recipe (run F's: 20 passes an epoch, bf16) for 1 epoch. Both on --workers 1, the CPU, nothing else running.
#   Prints images/s over the epochs' wall time (training, evaluation and state files; the "before" figure
#   from the 5 intervals between its 6 epoch lines) and the trainers' own training-loop figures.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:-4339046}
DATA=${2:-../shared/data}
DATA=$(cd "$DATA" && pwd)
PY=${PYTHON:-python}
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac  # a relative path must survive the cd below
OUT=$(mktemp -d)
trap 'git worktree remove --force "$OUT/before" >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
git worktree add -q --detach "$OUT/before" "$BEFORE"
COMMON=(--model scratch_vit --data-dir "$DATA/pizza_steak_sushi_20_percent" --data-dir "$DATA/pizza_steak_sushi"
        --distill soft --distill-alpha 0.9 --distill-temperature 1.0 --teacher-size 160 --feature-distill 1.0
        --batch-size 32 --lr 5e-4 --weight-decay 0.05 --mixup 0.8 --cutmix 1.0 --ema --ema-decay 0.998
        --patience 0 --workers 1)
(cd "$OUT/before" && PYTHONPATH=. "$PY" -m vit.train "${COMMON[@]}" --teacher "$PWD/checkpoints/effnet.safetensors" \
    --epochs 6 --warmup-epochs 5 --out "$OUT/before.safetensors" > "$OUT/before.log" 2>&1) || { cat "$OUT/before.log"; exit 1; }
"$PY" -m vit.train "${COMMON[@]}" --teacher checkpoints/effnet.safetensors --warmup-epochs 1 --repeats 20 \
    --amp bf16 --epochs 1 --out "$OUT/after.safetensors" > "$OUT/after.log" 2>&1 || { cat "$OUT/after.log"; exit 1; }
"$PY" - "$OUT/before.log" "$OUT/after.log" "$BEFORE" <<'PY'
import re, statistics, sys

before, after, commit = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
stamps = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in re.findall(r"^(\d\d):(\d\d):(\d\d) epoch ", before, re.M)]
n_train = int(re.search(r"train (\d+) / val", before).group(1))
old = n_train // 32 * 32 * (len(stamps) - 1) / (stamps[-1] - stamps[0])
old_loop = statistics.mean(float(v) for v in re.findall(r"([\d.]+) images/s$", before, re.M))
loop, overall = map(float, re.search(r"([\d.]+) images/s training, ([\d.]+) images/s overall", after).groups())
print(f"before ({commit}, run D's recipe): {old:.1f} images/s over its epochs' wall time, {old_loop:.1f} in the training loop")
print(f"after (this checkout, run F's recipe): {overall:.1f} images/s overall, {loop:.1f} in the training loop")
print(f"speed-up: {overall / old:.2f}x overall, {loop / old_loop:.2f}x in the training loop")
PY
