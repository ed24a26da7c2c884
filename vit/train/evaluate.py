"""Evaluate a checkpoint on an ImageFolder split.

    python -m vit.train.evaluate checkpoints/effnet.safetensors --data-dir ../shared/data/pizza_steak_sushi [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vit.data.datasets import ImageDataset, eval_transform, list_images
from vit.models.checkpoint import CheckpointError
from vit.models.factory import load

log = logging.getLogger(__name__)


@torch.inference_mode()
def run_eval(model: nn.Module, loader: DataLoader, class_names: list[str], device: str = "cpu") -> dict:
    """Accuracy, per-class accuracy, confusion matrix (rows = true class), mean loss and images/s."""
    model.eval()
    n_cls = len(class_names)
    confusion = torch.zeros(n_cls, n_cls, dtype=torch.long)
    loss_sum, n, seconds = 0.0, 0, 0.0
    for x, y in loader:
        start = time.perf_counter()
        logits = model(x.to(device)).float().cpu()
        seconds += time.perf_counter() - start
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        confusion += torch.bincount(y * n_cls + logits.argmax(1), minlength=n_cls**2).view(n_cls, n_cls)
    per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
    return {
        "accuracy": confusion.diag().sum().item() / max(n, 1),
        "n_images": n,
        "loss": loss_sum / max(n, 1),
        "per_class_accuracy": dict(zip(class_names, per_class.tolist())),
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
        "images_per_s": n / seconds if seconds else 0.0,
    }


def split_dir(data_dir: str | Path, split: str) -> Path:
    """`data_dir/split` if it exists, else `data_dir` itself (a folder of class folders)."""
    data_dir = Path(data_dir)
    return data_dir / split if (data_dir / split).is_dir() else data_dir


def format_metrics(m: dict) -> str:
    names = m["class_names"]
    width = max(len(c) for c in names) + 2
    lines = [f"accuracy   {m['accuracy']:.4f}  ({round(m['accuracy'] * m['n_images'])}/{m['n_images']})",
             f"mean loss  {m['loss']:.4f}",
             f"speed      {m['images_per_s']:.1f} images/s (model time)",
             "per class  " + "  ".join(f"{c} {a:.3f}" for c, a in m["per_class_accuracy"].items()),
             "confusion (rows: true, columns: predicted)",
             " " * width + "".join(f"{c:>{width}}" for c in names)]
    lines += [f"{c:<{width}}" + "".join(f"{v:>{width}}" for v in row) for c, row in zip(names, m["confusion_matrix"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by vit.train")
    p.add_argument("--data-dir", required=True, help="ImageFolder root; its --split subfolder is used if present")
    p.add_argument("--split", default="test", help="subfolder of --data-dir to evaluate (default: test)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    try:
        ckpt = load(args.checkpoint)
        samples, classes = list_images(split_dir(args.data_dir, args.split))
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if classes != ckpt.class_names:
        print(f"error: {args.data_dir} has classes {classes}, the checkpoint {ckpt.class_names}", file=sys.stderr)
        return 2
    dataset = ImageDataset(samples, eval_transform(ckpt.meta["preprocessing"]))
    metrics = run_eval(ckpt.model, DataLoader(dataset, batch_size=args.batch_size), classes)
    metrics["checkpoint"] = str(args.checkpoint)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.checkpoint}: {ckpt.family}, {len(samples)} images from {split_dir(args.data_dir, args.split)}")
        print(format_metrics(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
