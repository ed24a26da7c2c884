"""The training loop, in the shape of timm's train.py / DeiT's main.py: AdamW with timm's
weight-decay groups, timm's cosine-with-warm-up schedule updated per optimiser step, timm's
MixUp/CutMix with soft-target cross-entropy, DeiT distillation, optional EMA (ModelEmaV3), AMP,
gradient accumulation, DDP, and a training state written every epoch for --resume."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, Subset

from vit.data.datasets import mix_transform
from vit.train import state as train_state
from vit.train.config import TrainConfig
from vit.train.distill import FeatureImitation, Normalize, Teacher, distill_loss
from vit.train.distributed import Dist, all_sum, reduce_eval
from vit.train.evaluate import run_eval
from vit.train.prepare import Prepared, seed_everything

log = logging.getLogger("vit.train")
SAMPLE_LOG_ENV = "VIT_TRAIN_SAMPLE_LOG"  # a folder: each rank appends the sample keys it trained on, per epoch
GRAD_CLIP = 5.0


def make_optimizer(model: nn.Module, cfg: TrainConfig, is_pretrained: Callable[[str], bool]) -> torch.optim.AdamW:
    """AdamW over timm's weight-decay groups (none on biases, norms, tokens, position embedding), each
    split once more so pretrained weights train at backbone_lr_scale times the LR ("lr_scale",
    which timm's schedulers honour)."""
    skip = set(getattr(model, "no_weight_decay", lambda: ())()) | {"cls_token", "dist_token", "pos_embed"}
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for g in param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=skip):
        for pre in (False, True):
            ps = [p for p in g["params"] if is_pretrained(name_of[id(p)]) == pre]
            if ps:
                groups.append({"params": ps, "weight_decay": g["weight_decay"],
                               "lr_scale": cfg.backbone_lr_scale if pre else 1.0})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, updates_per_epoch: int):
    """Linear warm-up from min_lr over warmup_epochs, then a cosine to min_lr at the last update."""
    warmup = round(cfg.warmup_epochs * updates_per_epoch)
    total = cfg.epochs * updates_per_epoch
    return CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=cfg.min_lr, warmup_t=warmup,
                             warmup_lr_init=cfg.min_lr, warmup_prefix=True, t_in_epochs=False)


@dataclass
class Run:
    """One training run's moving parts."""
    cfg: TrainConfig
    model: nn.Module  # the bare model (state dicts, EMA, checkpoints)
    optimizer: torch.optim.Optimizer
    scheduler: object  # timm CosineLRScheduler
    num_classes: int
    student_norm: Normalize
    device: str = "cpu"
    dist: Dist = field(default_factory=Dist)
    teacher: Teacher | None = None
    ema: object | None = None  # timm ModelEmaV3
    channels_last: bool = False
    net: nn.Module | None = None  # what the forward pass calls: DDP-wrapped and/or compiled model
    updates: int = 0  # optimiser steps so far
    scaler: torch.amp.GradScaler | None = None
    criterion: nn.Module = field(default_factory=SoftTargetCrossEntropy)
    is_pretrained: Callable[[str], bool] = lambda name: False  # for --freeze-epochs
    imitation: FeatureImitation | None = None  # --feature-distill's head (trained, never saved in the checkpoint)

    def __post_init__(self) -> None:
        self.net = self.net or self.model
        self.mix = mix_transform(self.num_classes, self.cfg.mixup, self.cfg.cutmix, self.cfg.label_smoothing)
        dev = self.device.split(":")[0]
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.amp)
        self.scaler = self.scaler or torch.amp.GradScaler(dev, enabled=self.amp_dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device.split(":")[0], dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    @property
    def lr(self) -> float:
        return max(g["lr"] / g["lr_scale"] for g in self.optimizer.param_groups)


def explicit_attention(model: nn.Module) -> int:
    """Train with the explicit softmax attention instead of the fused kernel (every module with timm's
    `fused_attn` switch: our ViT's and timm's): on a CPU, PyTorch's flash-attention backward is the
    slowest part of a step (batch 32, 146 tokens, head_dim 64: 55 ms a layer in bf16 against 12 ms
    explicit, 21 against 18 in fp32). Returns how many modules were switched."""
    switched = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m in switched:
        m.fused_attn = False
    return len(switched)


def seed_rank(seed: int, d: Dist) -> None:
    """Each rank its own augmentation and mixing draws (the model is already built, and DDP
    broadcasts rank 0's weights)."""
    seed_everything(seed + d.rank)


def targets(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as the student (and the teacher) sees it, and its label-smoothed soft targets."""
    if run.mix is None:
        return x, mixup_target(y, run.num_classes, 1.0, run.cfg.label_smoothing)
    if len(x) % 2:  # timm's batch mixing pairs each image with the batch reversed
        x, y = x[:-1], y[:-1]
    return run.mix(x, y)


def train_one_epoch(run: Run, batches) -> dict:
    """One pass over `batches`; gradient accumulation over cfg.accum_steps batches per update."""
    cfg, accum = run.cfg, run.cfg.accum_steps
    run.net.train()
    loss_sum = correct = seen = 0.0
    n = len(batches)
    start = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        x, target = targets(run, x, y)
        update = (i + 1) % accum == 0 or i + 1 == n
        sync = contextlib.nullcontext() if update or not isinstance(run.net, DDP) else run.net.no_sync()
        with sync:
            with run.autocast():
                inputs = run.student_norm(x)
                if run.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                out = run.net(inputs)
                tokens = None
                if run.imitation is not None:
                    out, tokens = out
                logits, logits_dist = out if isinstance(out, tuple) else (out, out)
                loss = run.criterion(logits, target)
                if run.teacher is not None:  # DeiT: the teacher sees exactly this (augmented, mixed) batch
                    if tokens is not None:
                        t_logits, t_feats = run.teacher.logits_and_features(x, run.imitation.stage)
                    else:
                        t_logits = run.teacher.logits(x)
                    t_loss = distill_loss(logits_dist.float(), t_logits.float(), cfg.distill, cfg.distill_temperature)
                    loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * t_loss
                    if tokens is not None:
                        loss = loss + cfg.feature_distill * run.imitation.loss(tokens.float(), t_feats)
            run.scaler.scale(loss / accum).backward()
        if update:
            step(run)
        loss_sum += loss.item() * len(x)
        correct += ((logits + logits_dist).argmax(1) == target.argmax(1)).sum().item()
        seen += len(x)
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = all_sum([loss_sum, correct, seen], run.dist, run.device)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1), "seconds": seconds,
            "images_per_s": seen / seconds if seconds else 0.0}


class Throughput:
    """This sitting's images per second: in the training loop alone (as each epoch's row reports) and
    overall, wall time from the first epoch's start to the last epoch's state file (evaluation included)."""

    def __init__(self) -> None:
        self.start, self.epochs, self.images, self.train_seconds = time.perf_counter(), 0, 0, 0.0

    def add(self, row: dict) -> None:
        self.epochs += 1
        self.images += round(row["images_per_s"] * row["seconds"])
        self.train_seconds += row["seconds"]

    def summary(self) -> str:
        wall = time.perf_counter() - self.start
        return (f"{self.epochs} epochs, {self.images} images in {wall:.0f} s: {self.images / max(self.train_seconds, 1e-9):.1f} "
                f"images/s training, {self.images / max(wall, 1e-9):.1f} images/s overall "
                f"({wall - self.train_seconds:.0f} s outside the training loop: evaluation, state files)")


def step(run: Run) -> None:
    """One optimiser update: unscale, clip, step, then the schedule and the EMA follow."""
    run.scaler.unscale_(run.optimizer)
    nn.utils.clip_grad_norm_(run.model.parameters(), GRAD_CLIP)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.updates += 1
    run.scheduler.step_update(run.updates)
    if run.ema is not None:
        run.ema.update(run.model, step=run.updates)


def shard(data, d: Dist):
    """This rank's disjoint share of an eval set (no padding, so nothing is counted twice)."""
    return Subset(data, range(d.rank, len(data), d.world_size)) if d.enabled else data


class RecordingSampler(Sampler):
    """Pass-through sampler that remembers the indices it gave (for the SAMPLE_LOG_ENV debug log)."""

    def __init__(self, inner: Sampler) -> None:
        self.inner, self.seen = inner, []

    def __iter__(self):
        for i in self.inner:
            self.seen.append(int(i))
            yield i

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)


def train_loader(prep: Prepared, cfg: TrainConfig, d: Dist, generator: torch.Generator) -> DataLoader:
    data = prep.train_data
    sampler = DistributedSampler(data, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=cfg.seed) \
        if d.enabled else RandomSampler(data, generator=generator)
    if os.environ.get(SAMPLE_LOG_ENV):
        sampler = RecordingSampler(sampler)
    # Workers are not persistent: each epoch's worker seeds come from `generator`, so --resume
    # reproduces the augmentations of an uninterrupted run.
    return DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                      drop_last=len(data) // d.world_size > cfg.batch_size, generator=generator,
                      pin_memory=prep.student_norm.mean.is_cuda)


def log_samples(loader: DataLoader, prep: Prepared, d: Dist, epoch: int) -> None:
    folder = os.environ.get(SAMPLE_LOG_ENV)
    if folder and isinstance(loader.sampler, RecordingSampler):
        keys = [prep.train_data.samples[i % len(prep.train_data.samples)].key for i in loader.sampler.seen]
        with open(Path(folder) / f"rank{d.rank}.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch, "keys": keys}) + "\n")
        loader.sampler.seen = []


def evaluates(epoch: int, cfg: TrainConfig) -> bool:
    """Whether 1-based `epoch` is evaluated: every cfg.eval_every-th, and always the last."""
    return epoch % cfg.eval_every == 0 or epoch == cfg.epochs


def eval_metrics(run: Run, models: dict[str, nn.Module], loaders: dict[str, DataLoader], class_names) -> dict:
    """{"val_loss": ..., "ema_test_acc": ...} over all ranks' shards, for each model and split."""
    row = {}
    for prefix, model in models.items():
        for name, loader in loaders.items():
            with torch.inference_mode():  # no autograd graph for the forward passes of an evaluation
                m = run_eval(model, loader, class_names, run.device)
            m = reduce_eval(m, run.dist, run.device)
            row[f"{prefix}{name}_loss"], row[f"{prefix}{name}_acc"] = m["loss"], m["accuracy"]
    return row


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


def save_state(run: Run, path: Path, epoch: int, best: dict, history: list, generator: torch.Generator,
               stopped: bool) -> None:
    train_state.save({
        "epoch": epoch, "updates": run.updates, "stopped": stopped, "best": best, "history": history,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "imitation": run.imitation.state_dict() if run.imitation is not None else None,
        "scaler": run.scaler.state_dict(), "ema": run.ema.state_dict() if run.ema is not None else None,
        "rng": train_state.rng_state(generator), "config": run.cfg.to_dict(), "world_size": run.dist.world_size,
    }, path)


def load_state(run: Run, path: Path, generator: torch.Generator) -> dict:
    """Restore `run` from a state file; returns the file's epoch, best, history and stopped flag."""
    s = train_state.load(path)
    if s["world_size"] != run.dist.world_size:
        log.warning("resuming a %d-process run with %d processes: the data order changes",
                    s["world_size"], run.dist.world_size)
    run.model.load_state_dict(s["model"])
    if run.imitation is not None:
        run.imitation.load_state_dict(s["imitation"])
    run.optimizer.load_state_dict(s["optimizer"])
    run.scaler.load_state_dict(s["scaler"])
    if run.ema is not None and s["ema"] is not None:
        run.ema.load_state_dict(s["ema"])
    run.updates = s["updates"]
    run.scheduler.step_update(run.updates)  # the schedule of this run's config, at the saved update
    train_state.set_rng_state(s["rng"], generator)
    return s


def is_better(value: float, best: dict) -> bool:
    return value < best["val_loss"] or not math.isfinite(best["val_loss"])
