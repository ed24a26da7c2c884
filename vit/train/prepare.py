"""Everything a run needs before its first step: data splits, datasets, the model, the teacher.
Errors here are the user's (a bad folder, an unknown preset, a teacher with other classes) and
are reported as one line by `vit.train.cli.main`."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from vit.data.datasets import (
    ImageDataset,
    Sample,
    eval_transform,
    list_images,
    make_dataset,
    named_source,
    split_train_val,
    train_samples,
    train_transform,
)
from vit.models import checkpoint, families
from vit.models.factory import build, load
from vit.models.zoo import Built
from vit.runtime.engines import sha256
from vit.train.config import TrainConfig
from vit.train.distill import Normalize, Teacher, load_teacher
from vit.train.distributed import Dist
from vit.train.evaluate import split_dir

log = logging.getLogger("vit.train")


@dataclass
class Prepared:
    class_names: list[str]
    train_set: list[Sample]
    val_set: list[Sample]
    test_set: list[Sample]
    test_source: str | None  # where the test images came from (the recipe's test_dir)
    built: Built
    pretrained: str | None  # the initial weights asked for (None: random)
    pp: dict  # the model's eval preprocessing (timm data config)
    student_norm: Normalize  # [0, 1] crops -> the model's input
    teacher: Teacher | None
    is_pretrained: Callable[[str], bool]  # parameter name -> came from pretrained weights?
    channels_last: bool
    train_data: Dataset
    eval_data: dict[str, Dataset]  # "val", "test" (those that are not empty)


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


EVAL_CACHE_BYTES = 2**30  # in-memory eval splits whose input tensors fit in this are transformed once


def transformed_once(data: Dataset) -> Dataset:
    """An in-memory eval split as the (input, label) tensors its fixed transform gives, computed once:
    an evaluation then resizes no photo (it did every epoch). Streamed or larger splits stay as they are."""
    if not isinstance(data, ImageDataset) or len(data) == 0:
        return data
    x0, _ = data[0]
    if x0.numel() * x0.element_size() * len(data) > EVAL_CACHE_BYTES:
        return data
    xs, ys = zip(*(data[i] for i in range(len(data))))
    return TensorDataset(torch.stack(xs), torch.tensor(ys))  # (N, 3, H, W), (N,)


def warm_start(cfg: TrainConfig, class_names: list[str]) -> Built:
    """--init: the model of a trained checkpoint of the same family, classes and architecture, with
    its weights. Its `init` record keeps the chain: where those weights had started from, and how."""
    source = load(cfg.init, expect_family=cfg.model)
    if source.class_names != class_names:
        raise ValueError(f"--init {cfg.init}: its classes {source.class_names} differ from the data's {class_names}")
    arch = source.meta["arch"]
    built = build(cfg.model, arch if cfg.arch is None else cfg.arch, num_classes=len(class_names))
    if built.arch != arch:
        raise ValueError(f"--init {cfg.init}: --arch {cfg.arch} differs from the checkpoint's architecture {arch}")
    built.model.load_state_dict(source.model.state_dict())
    built.init = {"weights": "checkpoint", "source": f"{cfg.init} (sha256 {sha256(cfg.init)[:12]})",
                  "checkpoint_init": source.meta.get("init", {}),
                  "checkpoint_command": source.meta.get("command"),
                  "checkpoint_epochs": source.meta.get("recipe", {}).get("selected_epoch"),  # its weights' epoch
                  "checkpoint_repeats": source.meta.get("recipe", {}).get("repeats", 1)}  # passes per epoch
    return built


def prepare(cfg: TrainConfig, d: Dist, device: str) -> Prepared:
    seed_everything(cfg.seed)
    family = families.get(cfg.model)
    pretrained = family.default_pretrained if cfg.pretrained == "default" else \
        (None if cfg.pretrained == "none" else cfg.pretrained)
    if cfg.dataset == "imagefolder":
        samples, class_names = train_samples(cfg.data_dir)
        test_root = split_dir(cfg.test_dir, "test") if cfg.test_dir else \
            next((Path(x) / "test" for x in cfg.data_dir if (Path(x) / "test").is_dir()), None)
        test_set = list_images(test_root)[0] if test_root else []
        test_source = str(test_root) if test_set else None
    else:
        samples, test_set, class_names = named_source(cfg.dataset, cfg.data_dir[0] if cfg.data_dir else "data")
        test_source = f"{cfg.dataset} test split"
    train_set, val_set = split_train_val(samples, cfg.val_fraction)

    if cfg.init is not None:
        built, pretrained = warm_start(cfg, class_names), None
    else:
        built = build(cfg.model, cfg.arch, num_classes=len(class_names), pretrained=pretrained)
    pp = family.preprocessing_for(built.model)
    teacher = load_teacher(cfg.teacher, class_names, device, cfg.teacher_size) if cfg.teacher else None
    crop = max(pp["input_size"][-1], teacher.normalize.size if teacher else 0)
    cache_side = round(crop / pp["crop_pct"])
    train_data = make_dataset(train_set, train_transform(crop, cfg.augment), cfg.data_cache, cache_side, cfg.repeats)
    eval_tf = eval_transform(pp)
    eval_data = {name: transformed_once(make_dataset(s, eval_tf, cfg.data_cache))
                 for name, s in (("val", val_set), ("test", test_set)) if s}
    if d.is_main:
        log.info("%s: %s params, init %s, train %d / val %d / test %d images, device %s, %d process(es)",
                 cfg.model, f"{checkpoint.num_params(built.model):,}", built.init["weights"], len(train_set),
                 len(val_set), len(test_set), device, d.world_size)
    return Prepared(class_names, train_set, val_set, test_set, test_source, built, pretrained, pp,
                    Normalize(pp).to(device), teacher, lambda name: family.is_pretrained_param(name, built.init),
                    family.channels_last, train_data, eval_data)
