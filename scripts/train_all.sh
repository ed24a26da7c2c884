#!/usr/bin/env bash
# Regenerate the three committed checkpoints from the FoodVision Mini images (about 3 h on 2 CPU cores;
# minutes on a GPU, with WORKERS=12 for the scratch ViT's data loader). Each command also writes
# <checkpoint>.png, the loss/accuracy curves.
# Usage: bash scripts/train_all.sh [DATA_ROOT]   (default: ../shared/data)
#   Data parallel on N GPUs or CPU processes: PY="torchrun --standalone --nproc_per_node=N" bash scripts/train_all.sh
#   (--batch-size is per process). An interrupted step goes on where it stopped: rerun its command with --resume
#   (each run writes <out>.state.pt after every epoch). Every flag's meaning: python -m vit.train --help.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
PY=${PY:-${PYTHON:-python}}  # the trainer (torchrun for data parallel, as above)
TRAIN_DIRS=(--data-dir "$DATA/pizza_steak_sushi_20_percent" --data-dir "$DATA/pizza_steak_sushi")

# 1. EfficientNet-Lite0 fine-tuned from ImageNet (the teacher of 3.)
$PY -m vit.train --model effnet "${TRAIN_DIRS[@]}" --epochs 15 --lr 1e-3 --backbone-lr-scale 0.3 \
    --warmup-epochs 1 --patience 5 --out checkpoints/effnet.safetensors

# 2. Hybrid ViT: timm VisionTransformer on the ImageNet EfficientNet-Lite0 stem (Sec. 3.1 of the ViT paper)
$PY -m vit.train --model timm_vit "${TRAIN_DIRS[@]}" --epochs 20 --lr 1e-3 --backbone-lr-scale 0.2 \
    --freeze-epochs 2 --warmup-epochs 2 --patience 6 --out checkpoints/timm_vit.safetensors

# 3. Our ViT from random weights, distilled from 1.: soft targets on exactly the student's augmented,
#    mixed crop (the teacher sees it at 160 px: 96.0% on the test split, as at 224, for half the cost),
#    its patch tokens imitating the teacher's stride-16 feature map, EMA of the weights; 48 epochs of 20
#    passes over the photos each (README: run F). Run F was trained on a rented GPU (an H200, 8.4 min of
#    epochs) with --workers 12, from copies of the photos shrunk to the trainer's cache side
#    (docs/training.md, "On a GPU"); on 2 CPU cores this is about 1.7 h at 64 images/s
$PY -m vit.train --model scratch_vit "${TRAIN_DIRS[@]}" --teacher checkpoints/effnet.safetensors --distill soft \
    --distill-alpha 0.9 --distill-temperature 1.0 --teacher-size 160 --feature-distill 1.0 --batch-size 32 \
    --lr 5e-4 --warmup-epochs 1 --weight-decay 0.05 --mixup 0.8 --cutmix 1.0 --ema --ema-decay 0.998 \
    --patience 0 --workers "${WORKERS:-1}" --repeats 20 --amp bf16 --epochs 48 --out runs/scratch_vit_f.safetensors

# 3b. ... then continued from those weights (--init: a new schedule, not --resume) for 14 epochs of 20 passes of
#     pure function matching (the teacher's soft targets only, alpha 1.0) at a lower peak learning rate, on 2 CPU
#     cores (README: run G; 26 min at 75 images/s)
$PY -m vit.train --model scratch_vit --init runs/scratch_vit_f.safetensors "${TRAIN_DIRS[@]}" \
    --teacher checkpoints/effnet.safetensors --distill soft --distill-alpha 1.0 --distill-temperature 1.0 \
    --teacher-size 160 --feature-distill 1.0 --batch-size 32 --lr 2e-4 --warmup-epochs 0.2 --weight-decay 0.05 \
    --mixup 0.8 --cutmix 1.0 --ema --ema-decay 0.998 --patience 0 --workers 1 --repeats 20 --amp bf16 \
    --epochs 14 --out checkpoints/scratch_vit.safetensors

# 4. The ONNX exports the app serves at once (committed beside the checkpoints; each checks itself)
for name in effnet timm_vit scratch_vit; do
    ${PYTHON:-python} -m vit.runtime.export checkpoints/$name.safetensors --data-dir "$DATA/pizza_steak_sushi/test"
done
