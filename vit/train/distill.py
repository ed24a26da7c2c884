"""DeiT distillation (Touvron et al. 2021): a frozen teacher checkpoint that sees exactly the
student's augmented, mixed batch, normalised its own way, and the teacher term of the loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vit.models import factory
from vit.models.scratch_vit import VisionTransformer
from vit.train.ort_teacher import OrtTeacher


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
    engine: str = "torch"  # what runs its forward pass: torch, or onnxruntime after `use_onnxruntime`
    ort: OrtTeacher | None = None

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x).contiguous(memory_format=torch.channels_last)

    def use_onnxruntime(self, stage: int | None, threads: int) -> None:
        """Run the forward pass on ONNX Runtime from now on: the logits, and the stage-`stage` feature
        map when `stage` is not None (the only one `logits_and_features` then gives)."""
        example = self._input(torch.zeros(2, 3, self.normalize.size, self.normalize.size,
                                          device=self.normalize.mean.device))
        self.ort, self.engine = OrtTeacher(self.model, example, stage, threads), "onnxruntime"

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.ort is not None:
            return self.ort.run(self.normalize(x))[0]
        return self.model(self._input(x))

    @torch.no_grad()
    def logits_and_features(self, x: torch.Tensor, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the stage-`stage` feature map (B, C, h, w), from one pass (timm's
        `forward_intermediates`), on exactly the student's batch."""
        if self.ort is not None and self.ort.stage == stage:
            logits, feats = self.ort.run(self.normalize(x))
            return logits, feats
        final, (feats,) = self.model.forward_intermediates(self._input(x), indices=[stage])
        return self.model.forward_head(final), feats


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """DeiT's teacher term: CE to the teacher's argmax (hard) or KL to its softened output (soft)."""
    if kind == "hard":
        return F.cross_entropy(student, teacher.argmax(1))
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * t * t


def load_teacher(path: str, class_names: list[str], device: str, size: int | None = None) -> Teacher:
    """A frozen checkpoint that sees each training crop at its own input size (or `size`), normalised its way."""
    ckpt = factory.load(path)
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
            "teacher_init": teacher.meta.get("init", {}).get("weights"),
            "teacher_test_accuracy": teacher.meta.get("metrics", {}).get("test", {}).get("accuracy"),
            "kind": kind, "alpha": alpha, "temperature": temperature, "teacher_input_px": teacher.normalize.size,
            "teacher_engine": teacher.engine}


def pick_stage(teacher: Teacher, grid: int) -> tuple[int, int]:
    """(stage index, channels) of the teacher's feature map whose side is nearest the student's token
    grid (on a tie, the finer one)."""
    with torch.no_grad():
        size, device = teacher.normalize.size, teacher.normalize.mean.device
        z = torch.zeros(1, 3, size, size, device=device)  # where the teacher is (a CPU probe broke on a GPU)
        maps = teacher.model.forward_intermediates(teacher.normalize(z), intermediates_only=True)
    stage = min(range(len(maps)), key=lambda i: (abs(maps[i].shape[-1] - grid), -maps[i].shape[-1]))
    return stage, maps[stage].shape[1]


class FeatureImitation(nn.Module):
    """Dense guidance from a CNN teacher for a ViT on a few hundred photos (after Li et al. 2022,
    "Locality Guidance for Improving Vision Transformers on Tiny Datasets"): a linear map of each
    patch token of the student's last block regresses the teacher's feature vector at the same place
    (the teacher's map resized to the token grid, each vector standardised over its channels). The
    map is trained with the student and dropped afterwards: the checkpoint stays a plain ViT."""

    def __init__(self, dim: int, channels: int, grid: int, prefix: int, stage: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, channels)
        self.grid, self.prefix, self.stage = grid, prefix, stage

    def loss(self, tokens: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """tokens (B, prefix + grid*grid, D) -> smooth-L1 to feats (B, C, h, w)."""
        target = F.interpolate(feats.float(), size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        target = target.flatten(2).transpose(1, 2)  # (B, grid*grid, C)
        target = F.layer_norm(target, target.shape[-1:])
        return F.smooth_l1_loss(self.proj(tokens[:, self.prefix:]), target)


class WithTokens(nn.Module):
    """The student and its imitation head as one module (one DDP wrapper): logits and the tokens."""

    def __init__(self, student: nn.Module, imitation: FeatureImitation) -> None:
        super().__init__()
        self.student, self.imitation = student, imitation

    def forward(self, x: torch.Tensor):
        tokens, _ = self.student.forward_features(x)  # (B, N, D)
        return self.student.forward_head(tokens), tokens


def make_imitation(student: nn.Module, teacher: Teacher) -> FeatureImitation:
    """The imitation head for our ViT `student` and a teacher with timm's `forward_intermediates`."""
    if not isinstance(student, VisionTransformer) or not hasattr(teacher.model, "forward_intermediates"):
        raise ValueError("--feature-distill needs a scratch ViT student and a teacher with feature maps "
                         "(timm's forward_intermediates), e.g. the EfficientNet")
    grid = student.cfg.grid_size
    stage, channels = pick_stage(teacher, grid)
    return FeatureImitation(student.cfg.embed_dim, channels, grid, student.cfg.num_prefix_tokens, stage)
