"""Train one of the registered model families and write a self-describing checkpoint.

    python -m vit.train --model effnet --data-dir ../shared/data/pizza_steak_sushi_20_percent \\
        --data-dir ../shared/data/pizza_steak_sushi --epochs 20 --out checkpoints/effnet.safetensors

Every --data-dir's train/ split is pooled (each photo once); --val-fraction of it is held out
for early stopping and model selection. The test split (--test-dir, default: the first data dir
with a test/ folder) is evaluated with the validation split (every epoch, or every --eval-every N
epochs and always the last) for the curves and at the end for the metadata, never used to choose
anything. With --teacher, the student learns from a trained checkpoint's predictions too (DeiT,
Touvron et al. 2021): through its distillation token when it has one; on a CPU the frozen teacher
runs on ONNX Runtime (--teacher-engine). Each epoch logs its training images/s, the run its total.
The whole configuration (vit.train.config.TrainConfig) and the command line go into the
checkpoint's recipe. After every epoch <out>.state.pt holds the training state; --resume goes on
from it (same weights as an uninterrupted run).

Several processes (data parallel, PyTorch DDP through torchrun; --batch-size is per process):

    torchrun --standalone --nproc_per_node=4 -m vit.train --model scratch_vit --data-dir ... --out ...

Several machines: run the same command on each, with its --node_rank:

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST0:29500 --rdzv_id=foodvision -m vit.train ...   # node_rank=1 on the other

CPU processes use gloo, GPUs nccl; only rank 0 writes the checkpoint, curves, log and state.
"""
