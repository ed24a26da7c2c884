"""The one training configuration: a dataclass built from the command line, validated, and stored
whole in the checkpoint's recipe (so a checkpoint says exactly how it was trained)."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

from vit.models import families
from vit.train.ort_teacher import ENGINES, onnxruntime_available

DATASETS = ("imagefolder", "food101", "cifar10")


class ConfigError(ValueError):
    """A bad argument: reported as one line and exit code 2, never a traceback."""


@dataclass
class TrainConfig:
    model: str  # model family (vit.models.families)
    out: str  # checkpoint path (.safetensors); curves go to <out>.png, training state to <out>.state.pt
    data_dir: list[str] = field(default_factory=list)  # ImageFolder roots with train/ (pooled), or a named set's root
    dataset: str = "imagefolder"  # imagefolder, or a torchvision data set: food101, cifar10
    data_cache: str = "auto"  # memory: decode once and keep; stream: decode per item in workers; auto: by size
    arch: dict | None = None  # the family's architecture arguments (None: its default)
    pretrained: str = "default"  # initial weights: default (the family's), none, lite0-imagenet, timm-hub
    init: str | None = None  # start from this checkpoint's weights (same family, classes, architecture); a new schedule
    test_dir: str | None = None  # ImageFolder root or split to report on (default: the first data dir's test/)
    val_fraction: float = 0.15  # share of train held out for early stopping and model selection
    epochs: int = 10  # passes over the training data
    batch_size: int = 32  # images per optimiser step per process (times accum_steps)
    accum_steps: int = 1  # batches whose gradients are summed before one optimiser step
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr: float = 1e-6  # learning rate at the end of the cosine
    warmup_epochs: float = 1.0  # linear warm-up from min_lr, in epochs (updated per step)
    weight_decay: float = 0.05  # AdamW decay, not on biases, norms, tokens, position embedding
    backbone_lr_scale: float = 1.0  # LR multiplier for pretrained weights
    freeze_epochs: int = 0  # epochs that train only the new (not pretrained) weights first
    label_smoothing: float = 0.1  # spread over all classes, inside the (mixed) targets
    augment: str = "trivial"  # per-image policy: trivial, randaug, light
    mixup: float = 0.0  # MixUp alpha (0: off)
    cutmix: float = 0.0  # CutMix alpha (0: off)
    repeats: int = 1  # augmented passes over the train set per epoch
    teacher: str | None = None  # checkpoint whose predictions the student learns from (DeiT)
    distill: str = "hard"  # teacher targets: argmax (hard) or softened (soft)
    distill_alpha: float = 0.5  # weight of the teacher term in the loss
    distill_temperature: float = 1.0  # softmax temperature for distill=soft
    teacher_size: int | None = None  # side in px of the crops the teacher sees (None: its own input size)
    teacher_engine: str = "auto"  # the teacher's forward: auto (onnxruntime on a CPU when installed), torch, onnxruntime
    feature_distill: float = 0.0  # weight of the teacher-feature imitation term (ViT student, CNN teacher; 0: off)
    patience: int = 0  # stop after this many epochs without a lower val loss (0: never; checked when evaluated)
    eval_every: int = 1  # evaluate (val, test; model and EMA) every this many epochs, and always after the last
    ema: bool = False  # keep an exponential moving average of the weights (timm ModelEmaV3)
    ema_decay: float = 0.9998  # its decay per optimiser step
    amp: str = "off"  # autocast: off, bf16, fp16 (fp16 with a GradScaler)
    compile: bool = False  # torch.compile the model (GPU only; ignored on CPU)
    resume: bool = False  # continue from <out>.state.pt
    seed: int = 42  # every random number generator starts from this
    workers: int = 2  # DataLoader worker processes
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
    fp32: bool = False  # store float32 weights (default: float16)

    @property
    def state_path(self) -> Path:
        return Path(str(self.out) + ".state.pt")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_parser(doc: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit.train", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig.__dataclass_fields__
    help_of = {"model": "model family", "out": "checkpoint path (.safetensors); curves go to <out>.png"}
    p.add_argument("--model", required=True, choices=families.names(), help="model family")
    p.add_argument("--arch", type=json.loads, default=None,
                   help="architecture as JSON, e.g. '{\"preset\": \"vit_foodvision_p8_96\", \"depth\": 4}' "
                        "(default: the family's default)")
    p.add_argument("--pretrained", default="default", choices=["default", "none", "lite0-imagenet", "timm-hub"],
                   help="initial weights (default: the family's, e.g. lite0-imagenet for timm_vit/effnet, none for scratch_vit)")
    p.add_argument("--init", default=None, metavar="CKPT", help=_comment("init") + " (unlike --resume: "
                                                                     "no optimiser state, epochs count from 0)")
    p.add_argument("--dataset", default="imagefolder", choices=DATASETS,
                   help="imagefolder (--data-dir with train/, test/), or a torchvision data set downloaded into "
                        "the first --data-dir (default ./data) when online")
    p.add_argument("--data-dir", action="append", default=[],
                   help="ImageFolder root with train/ (repeatable: train splits are pooled, duplicates dropped)")
    p.add_argument("--data-cache", default="auto", choices=["auto", "memory", "stream"],
                   help="memory: decode each image once and keep it; stream: decode per item in the DataLoader "
                        "workers (data beyond RAM); auto: memory below 5000 images")
    p.add_argument("--test-dir", default=None,
                   help="ImageFolder root (its test/) or split to report on (default: the first --data-dir with a test/)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of train held out for early stopping")
    p.add_argument("--out", required=True, help=help_of["out"] + ", training state to <out>.state.pt")
    for name, kind in (("epochs", int), ("batch_size", int), ("accum_steps", int), ("lr", float), ("min_lr", float),
                       ("warmup_epochs", float), ("weight_decay", float), ("backbone_lr_scale", float),
                       ("freeze_epochs", int), ("label_smoothing", float), ("mixup", float), ("cutmix", float),
                       ("repeats", int), ("distill_alpha", float), ("distill_temperature", float),
                       ("teacher_size", int), ("feature_distill", float), ("patience", int), ("eval_every", int),
                       ("ema_decay", float), ("seed", int), ("workers", int)):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=d[name].default, help=_comment(name))
    p.add_argument("--augment", default="trivial", choices=["trivial", "randaug", "light"], help=_comment("augment"))
    p.add_argument("--teacher", default=None, help=_comment("teacher"))
    p.add_argument("--distill", default="hard", choices=["hard", "soft"], help=_comment("distill"))
    p.add_argument("--teacher-engine", default="auto", choices=list(ENGINES), help=_comment("teacher_engine"))
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights (timm ModelEmaV3); it is "
                                                      "evaluated with the model and saved when better")
    p.add_argument("--amp", nargs="?", const="bf16", default="off", choices=["off", "bf16", "fp16"],
                   help="mixed precision autocast (--amp alone: bf16; fp16 adds a GradScaler)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU; ignored on CPU)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.state.pt (written every epoch)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default: float16)")
    return p


def _comment(name: str) -> str:
    """The field's comment in TrainConfig's source, as --help text (one place to document a field)."""
    for line in inspect.getsource(TrainConfig).splitlines():
        if line.strip().startswith(name + ":") and "#" in line:
            return line.split("#", 1)[1].strip().replace("%", "%%")
    return ""


def from_args(ns: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(ns).items() if k in names})


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError for arguments that cannot work, before anything is built or read."""
    for name in ("epochs", "batch_size", "accum_steps", "repeats", "eval_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name in ("freeze_epochs", "patience", "workers", "lr", "min_lr", "warmup_epochs", "weight_decay",
                 "mixup", "cutmix"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {getattr(cfg, name)}")
    if not 0 <= cfg.val_fraction < 1 or not 0 <= cfg.label_smoothing < 1 or not 0 <= cfg.distill_alpha <= 1:
        raise ConfigError("--val-fraction and --label-smoothing must lie in [0, 1), --distill-alpha in [0, 1]")
    if cfg.teacher_size is not None and cfg.teacher_size < 1:
        raise ConfigError(f"--teacher-size must be positive, got {cfg.teacher_size}")
    if cfg.feature_distill < 0 or (cfg.feature_distill and not cfg.teacher):
        raise ConfigError(f"--feature-distill {cfg.feature_distill}: needs a --teacher and a weight >= 0")
    families.get(cfg.model)  # ValueError names the families
    if cfg.dataset == "imagefolder":
        if not cfg.data_dir:
            raise ConfigError("--data-dir is required with --dataset imagefolder")
        for d in cfg.data_dir:
            if not (Path(d) / "train").is_dir():
                raise ConfigError(f"--data-dir {d}: no such folder with a train/ split")
    if cfg.teacher and not Path(cfg.teacher).is_file():
        raise ConfigError(f"--teacher {cfg.teacher}: no such checkpoint file")
    if cfg.teacher_engine == "onnxruntime" and not onnxruntime_available():
        raise ConfigError("--teacher-engine onnxruntime: onnxruntime is not installed (pip install onnxruntime)")
    if cfg.init is not None:
        if not Path(cfg.init).is_file():
            raise ConfigError(f"--init {cfg.init}: no such checkpoint file")
        if cfg.pretrained not in ("default", "none"):
            raise ConfigError(f"--init and --pretrained {cfg.pretrained}: choose one source of initial weights")
    if cfg.resume and not cfg.state_path.is_file():
        raise ConfigError(f"--resume: no training state at {cfg.state_path}")
