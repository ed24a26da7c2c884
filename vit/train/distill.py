"""DeiT distillation (Touvron et al. 2021): a frozen teacher checkpoint that sees exactly the
student's augmented, mixed batch, normalised its own way, and the teacher term of the loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vit import checkpoint


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
        return (x - self.mean) / self.std  # (B, 3, size, size)


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


def teacher_record(teacher: Teacher, kind: str, alpha: float, temperature: float) -> dict:
    """What the checkpoint's recipe says about the teacher."""
    return {"teacher": teacher.path, "teacher_family": teacher.meta["family"],
            "teacher_test_accuracy": teacher.meta.get("metrics", {}).get("test", {}).get("accuracy"),
            "kind": kind, "alpha": alpha, "temperature": temperature, "teacher_input_px": teacher.normalize.size}
