"""What the Gradio app shows, computed without Gradio: the model set, model cards, overlays, tables.

app.py wires widgets to these functions; everything here is testable without a browser.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vit import explain
from vit.checkpoint import CheckpointError, load
from vit.predict import OPTIMISATIONS, Predictor, Result, time_forward

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
FAMILY_TITLES = {
    "scratch_vit": "Scratch ViT (ours)",
    "timm_vit": "Hybrid ViT (timm)",
    "effnet": "EfficientNet-Lite0",
}
DISPLAY_SIDE = 336  # overlays are drawn on the model's view, enlarged to this for the screen


@dataclass
class ModelSet:
    """The models the app serves, by family, and why any of the three could not be loaded."""
    models: dict[str, Predictor] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, family: str) -> Predictor:
        if family in self.models:
            return self.models[family]
        reason = self.errors.get(family, f"unknown model {family!r}")
        raise LookupError(f"{FAMILY_TITLES.get(family, family)} is unavailable: {reason}")


def checkpoint_paths(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """checkpoints/<family>.safetensors for each family (directory: $FOODVISION_CHECKPOINTS or ./checkpoints)."""
    root = Path(directory or os.environ.get("FOODVISION_CHECKPOINTS") or CHECKPOINT_DIR)
    return {family: root / f"{family}.safetensors" for family in FAMILY_TITLES}


def optimisations(spec: str | None = None) -> dict[str, str]:
    """Per-family CPU speed-ups (vit.predict.OPTIMISATIONS) from "family=mode,..." (default:
    $FOODVISION_OPTIMISE), e.g. "scratch_vit=int8,effnet=channels_last"."""
    spec = os.environ.get("FOODVISION_OPTIMISE", "") if spec is None else spec
    chosen = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        family, _, mode = item.partition("=")
        if family not in FAMILY_TITLES or mode not in OPTIMISATIONS:
            raise ValueError(f"bad optimisation {item!r}: use family=mode with a family in {list(FAMILY_TITLES)} "
                             f"and a mode in {OPTIMISATIONS}")
        chosen[family] = mode
    return chosen


def load_models(paths: dict[str, Path], optimise: dict[str, str] | None = None) -> ModelSet:
    """Load every checkpoint once (with `optimise[family]` applied, see `optimisations`); one that is
    missing, damaged or of the wrong family is reported, not fatal."""
    models = ModelSet()
    for family, path in paths.items():
        try:
            mode = (optimise or {}).get(family, "none")
            models.models[family] = Predictor(load(path, expect_family=family), mode)
        except (CheckpointError, OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
            # a CheckpointError names the file; anything else came from metadata that builds no model
            why = str(e) if isinstance(e, CheckpointError) else f"{path}: cannot be loaded ({type(e).__name__}: {e})"
            models.errors[family] = why
            log.warning("%s unavailable: %s", family, why)
    return models


def write_once(data: bytes, folder: str | os.PathLike, name: str) -> str:
    """folder/name holding `data`: written under a temporary name and renamed into place, so that a
    reader never sees it half-written; left alone if it exists (the caller names files by content)."""
    path = Path(folder) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    return str(path)


def model_card(p: Predictor) -> str:
    """Markdown: what the model is, what it started from, how it was trained, what it scores."""
    m = p.meta
    recipe, init = m.get("recipe", {}), m.get("init", {})
    test = m.get("metrics", {}).get("test", {})
    lines = [f"**{FAMILY_TITLES[m['family']]}** — {describe_arch(m)}",
             f"- **Started from:** {init.get('weights', 'unknown')}" + (f" ({init['source']})" if init.get("source") else "")]
    if "n_train" in recipe:
        teacher = recipe.get("distillation", {}).get("teacher_family")
        lines.append(f"- **Trained on:** {recipe['n_train']} FoodVision Mini photos ({recipe.get('n_val', 0)} more held "
                     f"out for validation), {recipe.get('epochs_run', recipe.get('epochs'))} epochs"
                     + (f", distilled from {FAMILY_TITLES.get(teacher, teacher)}" if teacher else ""))
    lines += ["- **Test accuracy:** " + (f"{test['accuracy']:.1%} on {test['n_images']} photos" if test else "not measured"),
              f"- **Size:** {p.ckpt.size_mb:.1f} MB on disk, {m.get('num_params', 0):,} parameters, "
              f"input {m['preprocessing']['input_size'][-1]} px"]
    return "\n".join(lines)


def describe_arch(meta: dict) -> str:
    a = meta["arch"]
    if meta["family"] == "scratch_vit":
        return (f"{a['depth']} layers × {a['num_heads']} heads, width {a['embed_dim']}, {a['patch_size']} px patches "
                f"on {a['image_size']} px" + (", DeiT distillation token" if a.get("distilled") else ""))
    if meta["family"] == "timm_vit" and a["model_name"].startswith("vit_hybrid"):
        return (f"EfficientNet-Lite0 stem (stride 16) + {a['depth']} transformer layers × {a['num_heads']} heads, "
                f"width {a['embed_dim']}")
    return a["model_name"]


def latency_text(p: Predictor, predict_ms: float, explain_ms: float) -> str:
    """Model time of this request's prediction and explanation passes, where they ran, and the model's size."""
    what = "attention maps" if p.is_vit else "Grad-CAM"
    return (f"⏱️ **{predict_ms:.1f} ms prediction** · {explain_ms:.1f} ms {what} · {device_text()}  \n"
            f"📦 {p.ckpt.size_mb:.1f} MB on disk · {p.meta.get('num_params', 0) / 1e6:.2f} M parameters")


def device_text() -> str:
    return f"CPU, {torch.get_num_threads()} threads" if not torch.cuda.is_available() else torch.cuda.get_device_name()


def _display(view: Image.Image) -> tuple[Image.Image, float]:
    scale = DISPLAY_SIDE / view.width
    return view.resize((DISPLAY_SIDE, round(view.height * scale)), Image.BICUBIC), scale


def heat_map(p: Predictor, r: Result, view: str, layer: int, head: int | str, discard: float) -> np.ndarray:
    """The (rows, cols) map the chosen view shows: one layer's class-token attention, the
    rollout over all layers, or Grad-CAM. `layer` counts from 1."""
    if not p.is_vit:
        return r.cam
    if view == "rollout":
        return explain.rollout_map(r.maps, p.token_grid, p.prefix_tokens, discard, head)
    layer = int(np.clip(layer, 1, len(r.maps)))
    return explain.cls_attention(r.maps[layer - 1], p.token_grid, p.prefix_tokens, head)


def render_overlay(p: Predictor, r: Result, view: str = "attention", layer: int = 1, head: int | str = "mean",
                   opacity: float = 0.5, discard: float = 0.9) -> Image.Image:
    shown, _ = _display(r.view)
    return explain.overlay(shown, heat_map(p, r, view, layer, head, discard), opacity)


def render_layers(p: Predictor, r: Result, head: int | str = "mean", opacity: float = 0.5) -> Image.Image | None:
    """Every layer's class-token attention at once (ViTs only)."""
    if not p.is_vit:
        return None
    heats = [explain.cls_attention(m, p.token_grid, p.prefix_tokens, head) for m in r.maps]
    return explain.layer_mosaic(r.view, heats, opacity)


def render_patches(p: Predictor, r: Result) -> Image.Image:
    """The model's view cut into its patches (ViTs) or its Grad-CAM cells (CNNs)."""
    shown, scale = _display(r.view)
    cell = p.patch_px if p.is_vit else r.view.width / r.cam.shape[1]
    return explain.patch_grid(shown, max(1, round(cell * scale)))


def parse_head(head: str | int | None, num_heads: int) -> int | str:
    """'mean' / 'max' / 'head 2' / 2 -> what explain.head_select takes (heads count from 1 on screen)."""
    if head is None or head in explain.HEAD_REDUCTIONS:
        return head or "mean"
    try:
        index = int(str(head).split()[-1])
    except ValueError:
        raise ValueError(f"unknown head {head!r}: use 'mean', 'max' or 'head 1' .. 'head {num_heads}'") from None
    if not 1 <= index <= num_heads:
        raise ValueError(f"head {index} does not exist: this model has heads 1 .. {num_heads}")
    return index - 1


def head_choices(p: Predictor) -> list[str]:
    return list(explain.HEAD_REDUCTIONS) + [f"head {i + 1}" for i in range(p.num_heads)]


def measure_p50(models: ModelSet, runs: int = 20) -> dict[str, float]:
    """Median warm latency (ms) of each model's plain forward pass at batch size 1, on this server."""
    out = {}
    for family, p in models.models.items():
        x = torch.zeros(1, 3, p.image_size, p.image_size)
        out[family] = float(np.median(time_forward(p.model, x, runs=runs, warmup=3)))
    return out


def comparison_rows(models: ModelSet, latency_p50: dict[str, float] | None = None) -> list[list]:
    """One row per model for the comparison table: name, init, data, epochs, accuracy, params, MB, p50 ms."""
    rows = []
    for family, title in FAMILY_TITLES.items():
        if family not in models.models:
            rows.append([title, "unavailable: " + models.errors.get(family, "not loaded")] + [""] * 6)
            continue
        p = models.models[family]
        m, recipe = p.meta, p.meta.get("recipe", {})
        test = m.get("metrics", {}).get("test", {})
        rows.append([
            title, m["init"].get("weights", "?"),
            f"{recipe.get('n_train', '?')} train / {recipe.get('n_val', 0)} val",
            recipe.get("epochs_run", recipe.get("epochs", "")),
            f"{test['accuracy']:.1%}" if test else "",
            f"{m.get('num_params', 0) / 1e6:.2f} M", f"{p.ckpt.size_mb:.1f}",
            f"{latency_p50[family]:.1f}" if latency_p50 and family in latency_p50 else "",
        ])
    return rows


COMPARISON_HEADERS = ["model", "started from", "data", "epochs", "test accuracy", "parameters", "MB", "p50 ms (bs=1)"]
