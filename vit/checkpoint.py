"""Self-describing checkpoints: safetensors weights plus a JSON metadata record in the file's header.

The record rebuilds the model from the file alone (family, architecture, class names,
preprocessing) and says how it came to be (initialisation, training recipe, metrics, history).
Float weights are stored in fp16 to keep files small and restored to fp32 on load. Nothing is
ever unpickled.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vit import families
from vit.zoo import build

FORMAT = "foodvision-vit/1"
META_KEY = "foodvision"
REQUIRED = ("family", "arch", "class_names", "preprocessing", "init")


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not one of ours; the message names the file."""


@dataclass
class Checkpoint:
    model: nn.Module  # in eval mode, fp32, on the CPU
    meta: dict
    path: Path

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save(path: str | os.PathLike, model: nn.Module, meta: dict, *, half: bool = True) -> Path:
    """Write weights (fp16 if `half`) and `meta` (JSON-serialisable; must hold REQUIRED keys)."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    meta = {"format": FORMAT, **meta, "num_params": num_params(model), "weights_dtype": "float16" if half else "float32"}
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        tensors[name] = (t.half() if half and t.is_floating_point() else t).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata record alone, without reading the weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or header_len > min(path.stat().st_size - 8, 100_000_000):
                raise CheckpointError(f"{path}: not a safetensors file (header length {header_len}, "
                                      f"file size {path.stat().st_size} bytes); truncated or another format")
            header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file (unreadable header: {e})") from e
    raw = header.get("__metadata__", {}).get(META_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: a safetensors file without FoodVision metadata; not one of our checkpoints")
    meta = json.loads(raw)
    missing = [k for k in REQUIRED if k not in meta]
    if missing or meta.get("family") not in families.names():
        raise CheckpointError(f"{path}: metadata lacks {missing} or names an unknown family {meta.get('family')!r}")
    return meta


def load(path: str | os.PathLike, *, expect_family: str | None = None) -> Checkpoint:
    """Rebuild the model from the file alone and load its weights (fp32, eval mode)."""
    path = Path(path)
    meta = read_meta(path)
    if expect_family is not None and meta["family"] != expect_family:
        raise CheckpointError(f"{path}: holds a {meta['family']} model, expected {expect_family}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: weights unreadable, the file is truncated or corrupt ({e})") from e
    model = build(meta["family"], meta["arch"], num_classes=len(meta["class_names"])).model
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the {meta['family']} architecture in its metadata: "
                              f"{str(e).splitlines()[0]}") from e
    return Checkpoint(model.eval(), meta, path)
