"""The training state behind --resume: everything the next epoch depends on, in one file written
atomically after every epoch (a temp file, then os.replace: a crash mid-write leaves the previous
state whole)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from vit.files import atomic_path


def rng_state(loader_generator: torch.Generator) -> dict:
    """torch, python `random`, numpy (timm's Mixup draws from it) and the DataLoader's generator."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "loader": loader_generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict, loader_generator: torch.Generator) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    loader_generator.set_state(s["loader"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically: readers see the old file or the new one, never half of one."""
    path = Path(path)
    with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return path


def load(path: str | os.PathLike) -> dict:
    """A state written by `save` (tensors, numbers, strings only: no code is unpickled)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format: say which file
        raise ValueError(f"{path}: unreadable training state ({type(e).__name__}: {e})") from e
