"""Self-describing checkpoints: safetensors weights plus a JSON metadata record in the file's header.

The record rebuilds the model from the file alone (family, architecture, class names,
preprocessing) and says how it came to be (initialisation, training recipe, metrics, history).
Float weights are stored in fp16 to keep files small and restored to fp32 on load. Nothing is
ever unpickled.

This module is the file format only: it knows no model family. `vit.models.factory.load` asks the
registry (vit.models.families) to build the architecture a record names and fills it with `load_weights`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vit.files import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "foodvision-vit/1"
META_KEY = "foodvision"
REQUIRED = ("family", "arch", "class_names", "preprocessing", "init")
# Tensors under this prefix are not weights: vit.trust's fitted state (its record is meta["trust"]).
EXTRA_PREFIX = "trust."


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not one of ours; the message names the file."""


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input is made from a photo (a timm data config; torchvision weights carry the same)."""
    input_size: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875  # resize to size / crop_pct, then centre-crop `size`
    crop_mode: str = "center"

    @property
    def image_size(self) -> int:
        return self.input_size[-1]

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "interpolation": self.interpolation, "mean": list(self.mean),
                "std": list(self.std), "crop_pct": self.crop_pct, "crop_mode": self.crop_mode}

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocessing") -> "Preprocessing":
        """Validated: every field present and of the right type and range, else ValueError naming it."""
        def field_(name, ok, why):
            if name not in d:
                raise ValueError(f"{where}.{name} is missing")
            if not ok(d[name]):
                raise ValueError(f"{where}.{name} = {d[name]!r}: {why}")
            return d[name]

        def numbers(n, positive=False):
            return lambda v: (isinstance(v, (list, tuple)) and len(v) == n
                              and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                              and (not positive or all(x > 0 for x in v)))

        size = field_("input_size", lambda v: numbers(3, True)(v) and all(float(x).is_integer() for x in v),
                      "expected [channels, height, width], positive integers")
        return cls(input_size=tuple(int(x) for x in size),
                   mean=tuple(float(x) for x in field_("mean", numbers(3), "expected 3 numbers")),
                   std=tuple(float(x) for x in field_("std", numbers(3, True), "expected 3 positive numbers")),
                   interpolation=field_("interpolation", lambda v: v in INTERPOLATIONS, f"expected one of {INTERPOLATIONS}"),
                   crop_pct=float(field_("crop_pct", lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
                                         "expected a number in (0, 1]")),
                   crop_mode=field_("crop_mode", lambda v: isinstance(v, str), "expected a string"))


def validate(meta: dict, families: Iterable[str] | None = None) -> dict:
    """Check a metadata record field by field; raises ValueError naming the first bad field.
    `families`: the registered family names (vit.models.families.names()); None skips that check."""
    if not isinstance(meta, dict):
        raise ValueError("the record is not a JSON object")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"fields {missing} are missing")
    if not isinstance(meta["family"], str) or not meta["family"]:
        raise ValueError(f"family = {meta['family']!r}: expected a family name")
    if families is not None and meta["family"] not in tuple(families):
        raise ValueError(f"family = {meta['family']!r}: unknown; registered families are {tuple(families)}")
    names = meta["class_names"]
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) and n for n in names)
            and len(set(names)) == len(names)):
        raise ValueError(f"class_names = {names!r}: expected a list of two or more distinct, non-empty strings")
    for key in ("arch", "init"):
        if not isinstance(meta[key], dict):
            raise ValueError(f"{key} = {meta[key]!r}: expected an object")
    Preprocessing.from_dict(meta["preprocessing"] if isinstance(meta["preprocessing"], dict) else {})
    return meta


@dataclass
class Checkpoint:
    """A checkpoint file's metadata, and its model built on first use of `model` by `build` (at once
    by `vit.models.factory.load`, on demand with `load(..., lazy=True)`: a caller served by an ONNX export
    never builds it)."""
    meta: dict
    path: Path
    build: Callable[[], nn.Module] | None = field(default=None, repr=False, compare=False)
    _model: nn.Module | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def model(self) -> nn.Module:
        """The model in eval mode, fp32, on the CPU; built once (CheckpointError if the weights do not load)."""
        with self._lock:
            if self._model is None:
                if self.build is None:
                    raise CheckpointError(f"{self.path}: no model builder; open it with vit.models.factory.load")
                self._model = self.build()
            return self._model

    @property
    def built(self) -> bool:
        return self._model is not None

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.meta["preprocessing"])

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def describe_init(init: dict, short: bool = False) -> str:
    """What a model's weights started from, in words, from its metadata's `init` (`short`: without the
    sources). A run continued from another checkpoint (vit.train --init) names the chain down to the
    first weights: "random (trunc_normal(0.02)), trained 188 epochs, then continued from
    scratch_vit.safetensors (sha256 0123456789ab)"."""
    if init.get("weights") == "checkpoint":
        source = str(init.get("source", "a checkpoint"))
        name, _, digest = source.partition(" (")
        trained = describe_epochs({"epochs": init["checkpoint_epochs"], "repeats": passes_per_epoch(init)}) \
            if init.get("checkpoint_epochs") else ""
        return (describe_init(init.get("checkpoint_init") or {}, short) + (f", trained {trained}" if trained else "")
                + ", then continued" + ("" if short else f" from {Path(name).name}" + (f" ({digest}" if digest else "")))
    weights = init.get("weights", "unknown")
    return weights if short or not init.get("source") else f"{weights} ({init['source']})"


def describe_epochs(recipe: dict, short: bool = False) -> str:
    """How long a model trained, from its recipe: "48 epochs of 20 passes" when each epoch went over the
    photos `repeats` times (vit.train --repeats), else "15 epochs"; `short` (a table cell): "48 × 20
    passes", "15"."""
    epochs, repeats = recipe.get("epochs_run", recipe.get("epochs", "?")), recipe.get("repeats", 1)
    if short:
        return f"{epochs}" + (f" × {repeats} passes" if repeats > 1 else "")
    return f"{epochs} epochs" + (f" of {repeats} passes" if repeats > 1 else "")


def passes_per_epoch(init: dict) -> int:
    """Passes per epoch of the run an --init chain continued: recorded, or read off its command (files
    written before the record had it)."""
    if "checkpoint_repeats" in init:
        return int(init["checkpoint_repeats"])
    found = re.search(r"--repeats[ =](\d+)", init.get("checkpoint_command") or "")
    return int(found.group(1)) if found else 1


def num_params(model: "nn.Module") -> int:
    return sum(p.numel() for p in model.parameters())


def save(path: str | os.PathLike, model: "nn.Module", meta: dict, *, half: bool = True) -> Path:
    """Write weights (fp16 if `half`) and `meta` (JSON-serialisable; validated by `validate`)."""
    try:
        validate(meta)
    except ValueError as e:
        raise ValueError(f"checkpoint metadata: {e}") from e
    meta = {"format": FORMAT, **meta, "num_params": num_params(model), "weights_dtype": "float16" if half else "float32"}
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        tensors[name] = (t.half() if half and t.is_floating_point() else t).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    return path


def read_extra(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """The file's EXTRA_PREFIX tensors (prefix removed), without reading the weights; {} when none.
    CheckpointError when the file's tensors cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k[len(EXTRA_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(EXTRA_PREFIX)}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: tensors unreadable, the file is truncated or corrupt ({e})") from e


def weights_sha256(path: str | os.PathLike) -> str:
    """A digest of the file's weights alone (names and bytes, EXTRA_PREFIX tensors and metadata left out):
    what a record made from the model (its nearest-photo bank, vit.explore) checks it still belongs to,
    unchanged when `rewrite` refits the gate. CheckpointError when the tensors cannot be read."""
    h = hashlib.sha256()
    try:
        with safe_open(str(path), framework="numpy") as f:
            for k in sorted(k for k in f.keys() if not k.startswith(EXTRA_PREFIX)):
                t = f.get_tensor(k)
                h.update(f"{k}:{t.dtype}:{t.shape};".encode() + t.tobytes())
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: tensors unreadable, the file is truncated or corrupt ({e})") from e
    return h.hexdigest()


def rewrite(path: str | os.PathLike, meta: dict, extra: dict[str, "torch.Tensor"]) -> Path:
    """Replace a checkpoint's metadata and its EXTRA_PREFIX tensors, keeping its weights byte for byte:
    written to a temporary file beside it, then renamed over it (a crash leaves the old file whole)."""
    path = Path(path)
    try:
        validate(meta)
    except ValueError as e:
        raise ValueError(f"checkpoint metadata: {e}") from e
    weights = {k: v for k, v in load_file(str(path)).items() if not k.startswith(EXTRA_PREFIX)}
    tensors = weights | {EXTRA_PREFIX + k: v.detach().cpu().contiguous() for k, v in extra.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


def read_meta(path: str | os.PathLike, families: Iterable[str] | None = None) -> dict:
    """The metadata record alone, without reading the weights; `families` as in `validate`."""
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
    try:
        return validate(json.loads(raw), families)
    except (json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad metadata: {e}") from e


def load_weights(model: nn.Module, path: str | os.PathLike, family: str) -> nn.Module:
    """Fill `model`, built from the architecture of the file's record (a `family` model), with the
    file's weights: fp32, eval mode. CheckpointError names the file when they are unreadable or do not fit."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: weights unreadable, the file is truncated or corrupt ({e})") from e
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()
                               if not k.startswith(EXTRA_PREFIX)})
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the {family} architecture in its metadata: "
                              f"{str(e).splitlines()[0]}") from e
    return model.eval()
