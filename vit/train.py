"""Train one of the three model families and write a self-describing checkpoint.

    python -m vit.train --model effnet --data-dir ../shared/data/pizza_steak_sushi_20_percent \\
        --data-dir ../shared/data/pizza_steak_sushi --epochs 20 --out checkpoints/effnet.safetensors

Every --data-dir's train/ split is pooled (each photo once); --val-fraction of it is held out
for early stopping and model selection. The test split (--test-dir, default: the first data dir
with a test/ folder) is evaluated every epoch for the curves and at the end for the metadata,
never used to choose anything. With --teacher, the student learns from a trained checkpoint's
predictions too (DeiT, Touvron et al. 2021): through its distillation token when it has one.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from vit import checkpoint
from vit.data import (ImageDataset, eval_transform, list_images, mix_transform, preprocessing, split_train_val,
                      train_samples, train_transform)
from vit.evaluate import run_eval, split_dir
from vit.zoo import DEFAULT_PRETRAINED, FAMILIES, build

log = logging.getLogger("vit.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vit.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=FAMILIES, help="model family")
    p.add_argument("--arch", type=json.loads, default=None,
                   help="architecture as JSON, e.g. '{\"preset\": \"vit_foodvision_p8_96\", \"depth\": 4}' "
                        "(default: the family's default)")
    p.add_argument("--pretrained", default="default", choices=["default", "none", "lite0-imagenet", "timm-hub"],
                   help="initial weights (default: lite0-imagenet for timm_vit/effnet, none for scratch_vit)")
    p.add_argument("--data-dir", action="append", required=True,
                   help="ImageFolder root with train/ (repeatable: train splits are pooled, duplicates dropped)")
    p.add_argument("--test-dir", default=None,
                   help="ImageFolder root (its test/) or split to report on (default: the first --data-dir with a test/)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of train held out for early stopping")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors); curves go to <out>.png")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--min-lr", type=float, default=1e-6, help="learning rate at the end of the cosine")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--backbone-lr-scale", type=float, default=1.0, help="LR multiplier for pretrained weights")
    p.add_argument("--freeze-epochs", type=int, default=0, help="epochs to train only the new weights first")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--augment", default="trivial", choices=["trivial", "randaug", "light"])
    p.add_argument("--mixup", type=float, default=0.0, help="MixUp alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha (0: off)")
    p.add_argument("--repeats", type=int, default=1, help="augmented passes over the train set per epoch")
    p.add_argument("--teacher", default=None, help="checkpoint whose predictions the student learns from")
    p.add_argument("--distill", default="hard", choices=["hard", "soft"], help="teacher targets: argmax or softened")
    p.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the teacher term in the loss")
    p.add_argument("--distill-temperature", type=float, default=1.0, help="softmax temperature for --distill soft")
    p.add_argument("--teacher-size", type=int, default=None,
                   help="side in px of the crops the teacher sees (default: its own input size); smaller is cheaper")
    p.add_argument("--patience", type=int, default=0, help="stop after this many epochs without a lower val loss (0: never)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default: float16)")
    return p.parse_args(argv)


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Normalize(nn.Module):
    """Resize an unnormalised [0, 1] batch to a model's input size and normalise it with its mean/std."""

    def __init__(self, pp: dict) -> None:
        super().__init__()
        self.size = pp["input_size"][-1]
        self.register_buffer("mean", torch.tensor(pp["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pp["std"]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std


@dataclass
class Teacher:
    model: nn.Module
    normalize: Normalize
    path: str
    meta: dict

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x).contiguous(memory_format=torch.channels_last))


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """DeiT's teacher term: CE to the teacher's argmax (hard) or KL to its softened output (soft)."""
    if kind == "hard":
        return F.cross_entropy(student, teacher.argmax(1))
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * t * t


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy against (B, C) soft targets (from MixUp/CutMix or one-hot), label-smoothed."""
    target = target * (1 - smoothing) + smoothing / target.shape[1]
    return -(target * F.log_softmax(logits, 1)).sum(1).mean()


def param_groups(model: nn.Module, is_pretrained, args: argparse.Namespace) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, tokens and position embeddings; pretrained
    weights at --backbone-lr-scale times the LR."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim <= 1 or name.endswith(("cls_token", "dist_token", "pos_embed"))
        groups.setdefault((no_decay, is_pretrained(name)), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if no_decay else args.weight_decay,
             "lr_scale": args.backbone_lr_scale if pre else 1.0}
            for (no_decay, pre), ps in groups.items()]


def lr_at(step: float, total: float, warmup: float, peak: float, floor: float) -> float:
    """Linear warm-up to `peak`, then a cosine down to `floor`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1.0, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


def pretrained_filter(family: str, arch: dict, init: dict):
    """Which parameter names came from pretrained weights (for --backbone-lr-scale / --freeze-epochs)."""
    if init.get("weights", "random") == "random":
        return lambda name: False
    if family == "timm_vit" and arch["model_name"].startswith("vit_hybrid"):
        return lambda name: name.startswith("patch_embed.backbone.")
    head = "classifier" if family == "effnet" else "head"
    return lambda name: not name.startswith(head)


def train(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = pick_device(args.device)
    pretrained = DEFAULT_PRETRAINED[args.model] if args.pretrained == "default" else \
        (None if args.pretrained == "none" else args.pretrained)

    samples, class_names = train_samples(args.data_dir)
    train_set, val_set = split_train_val(samples, args.val_fraction)
    if args.test_dir:
        test_root = split_dir(args.test_dir, "test")
    else:
        test_root = next((Path(d) / "test" for d in args.data_dir if (Path(d) / "test").is_dir()), None)
    test_set = list_images(test_root)[0] if test_root else []

    built = build(args.model, args.arch, num_classes=len(class_names), pretrained=pretrained)
    model = built.model.to(device)
    pp = preprocessing(built.model, args.model)
    student_norm = Normalize(pp).to(device)
    teacher = load_teacher(args.teacher, class_names, device, args.teacher_size) if args.teacher else None
    crop = max(pp["input_size"][-1], teacher.normalize.size if teacher else 0)
    channels_last = args.model != "scratch_vit"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info("%s: %s params, init %s, train %d / val %d / test %d images, device %s",
             args.model, f"{checkpoint.num_params(model):,}", built.init["weights"], len(train_set), len(val_set),
             len(test_set), device)

    train_data = ImageDataset(train_set, train_transform(crop, args.augment),
                              cache_side=round(crop / pp["crop_pct"]), repeats=args.repeats)
    loader = DataLoader(train_data, batch_size=args.batch_size, shuffle=True, drop_last=len(train_data) > args.batch_size,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        generator=torch.Generator().manual_seed(args.seed))
    eval_tf = eval_transform(pp)
    eval_loaders = {name: DataLoader(ImageDataset(s, eval_tf), batch_size=64)
                    for name, s in (("val", val_set), ("test", test_set)) if s}
    mix = mix_transform(len(class_names), args.mixup, args.cutmix)

    is_pretrained = pretrained_filter(args.model, built.arch, built.init)
    optimizer = torch.optim.AdamW(param_groups(model, is_pretrained, args), lr=args.lr)
    steps_per_epoch = len(loader)
    total_steps = args.epochs * steps_per_epoch
    history: list[dict] = []
    best = {"val_loss": math.inf, "epoch": -1, "state": None}
    step = 0
    for epoch in range(args.epochs):
        frozen = epoch < args.freeze_epochs
        for name, p in model.named_parameters():
            p.requires_grad_(not (frozen and is_pretrained(name)))
        model.train()
        start = time.perf_counter()
        loss_sum = correct = seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=None)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            target = F.one_hot(y, len(class_names)).float()
            if mix is not None:
                x, target = mix(x, y)
            lr = lr_at(step, total_steps, args.warmup_epochs * steps_per_epoch, args.lr, args.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            inputs = student_norm(x)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            out = model(inputs)
            logits, logits_dist = out if isinstance(out, tuple) else (out, out)
            loss = soft_cross_entropy(logits, target, args.label_smoothing)
            if teacher is not None:
                t_loss = distill_loss(logits_dist, teacher.logits(x), args.distill, args.distill_temperature)
                loss = (1 - args.distill_alpha) * loss + args.distill_alpha * t_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(x)
            correct += ((logits + logits_dist).argmax(1) == target.argmax(1)).sum().item()
            seen += len(x)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{lr:.2e}")
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "seconds": time.perf_counter() - start}
        for name, eval_loader in eval_loaders.items():
            m = run_eval(model, eval_loader, class_names, device)
            row[f"{name}_loss"], row[f"{name}_acc"] = m["loss"], m["accuracy"]
        history.append(row)
        log.info("epoch %3d/%d  lr %.2e  train loss %.4f acc %.3f  val loss %s acc %s  test acc %s  %.0fs%s",
                 epoch + 1, args.epochs, lr, row["train_loss"], row["train_acc"],
                 _fmt(row.get("val_loss")), _fmt(row.get("val_acc")), _fmt(row.get("test_acc")), row["seconds"],
                 "  (frozen backbone)" if frozen else "")
        selected = row.get("val_loss", -epoch)  # without a val split: the last epoch
        if selected < best["val_loss"]:
            best = {"val_loss": selected, "epoch": epoch + 1,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        elif args.patience and epoch + 1 - best["epoch"] >= args.patience:
            log.info("early stop: val loss has not improved for %d epochs (best: epoch %d)", args.patience, best["epoch"])
            break

    # The selected weights, exactly as the checkpoint will hold them (fp16 unless --fp32), so the
    # metrics written below are the ones `vit.evaluate` reproduces from the file.
    stored = {k: v.half().float() if v.is_floating_point() and not args.fp32 else v for k, v in best["state"].items()}
    model.load_state_dict(stored)
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    metrics = {name: run_eval(model, DataLoader(ImageDataset(s, eval_tf), batch_size=64), class_names)
               for name, s in (("val", val_set), ("test", test_set)) if s}
    meta = {
        "family": args.model, "arch": built.arch, "class_names": class_names, "preprocessing": pp, "init": built.init,
        "recipe": recipe(args, pretrained, train_set, val_set, test_root if test_set else None, teacher, best["epoch"],
                         len(history)),
        "metrics": {name: {k: v for k, v in m.items() if k != "images_per_s"} for name, m in metrics.items()},
        "history": history,
        "command": "python -m vit.train " + shlex.join(sys.argv[1:] if args.argv is None else args.argv),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": device,
    }
    out = checkpoint.save(args.out, model, meta, half=not args.fp32)
    from vit.report import plot_history
    plot_history(history, title=f"{Path(args.out).stem}: {args.model}").savefig(out.with_suffix(".png"), dpi=100)
    log.info("wrote %s (%.1f MB) and %s; selected epoch %d; %s", out, out.stat().st_size / 1e6,
             out.with_suffix(".png"), best["epoch"],
             "  ".join(f"{name} acc {m['accuracy']:.4f}" for name, m in metrics.items()))
    return out


def load_teacher(path: str, class_names: list[str], device: str, size: int | None = None) -> Teacher:
    """A frozen checkpoint that sees each training crop at its own input size (or `size`), normalised its way."""
    ckpt = checkpoint.load(path)
    if ckpt.class_names != class_names:
        raise ValueError(f"teacher {path} predicts {ckpt.class_names}, the data has {class_names}")
    model = ckpt.model.to(device).eval().to(memory_format=torch.channels_last)  # faster CNNs on CPU
    for p in model.parameters():
        p.requires_grad_(False)
    pp = dict(ckpt.meta["preprocessing"])
    if size:
        pp["input_size"] = [3, size, size]
    return Teacher(model, Normalize(pp).to(device), str(path), ckpt.meta)


def recipe(args, pretrained, train_set, val_set, test_root, teacher, best_epoch, epochs_run) -> dict:
    keys = ("epochs", "batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay", "backbone_lr_scale",
            "freeze_epochs", "label_smoothing", "augment", "mixup", "cutmix", "repeats", "patience", "seed",
            "val_fraction")
    r = {k: getattr(args, k) for k in keys}
    r.update({
        "optimizer": "AdamW (no decay on biases, norms, tokens, position embedding), grad-norm clip 5",
        "schedule": "linear warm-up, then cosine to min_lr, per step",
        "augmentation": f"RandomResizedCrop(scale 0.25-1), horizontal flip, {args.augment}"
                        + (f", MixUp {args.mixup}" if args.mixup else "") + (f", CutMix {args.cutmix}" if args.cutmix else "")
                        + f", label smoothing {args.label_smoothing}",
        "pretrained": pretrained or "none",
        "data_dirs": [str(d) for d in args.data_dir],
        "n_train": len(train_set), "n_val": len(val_set),
        "test_dir": str(test_root) if test_root else None,
        "selection": "epoch with the lowest validation loss" if val_set else "last epoch",
        "selected_epoch": best_epoch, "epochs_run": epochs_run,
    })
    if teacher is not None:
        r["distillation"] = {"teacher": teacher.path, "teacher_family": teacher.meta["family"],
                             "teacher_test_accuracy": teacher.meta.get("metrics", {}).get("test", {}).get("accuracy"),
                             "kind": args.distill, "alpha": args.distill_alpha, "temperature": args.distill_temperature,
                             "teacher_input_px": teacher.normalize.size}
    return r


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    args.argv = argv
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
