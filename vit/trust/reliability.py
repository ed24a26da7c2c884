"""Reliability diagrams (Guo et al. 2017, Fig. 1): accuracy against mean confidence per equal-width
confidence bin, before and after temperature scaling, one panel per model.

Where the bars come from, first found wins:
1. the checkpoint's own `trust.measured` record (`val_reliability_before` / `_after`, written by
   `python -m vit.trust.fit` and vit.train's gate: the validation photos), so a user's folder has them;
2. a saved `python -m vit.trust.ood` run (`ood.json` beside the checkpoint: the test split's bars), matched
   by the checkpoint's file name.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

log = logging.getLogger(__name__)
OOD_RUN = "ood.json"  # python -m vit.trust.ood's default output, beside the checkpoints


@dataclass(frozen=True)
class Bars:
    """One model's reliability bars (each a dict lo, hi, count, accuracy, confidence) and where from."""
    title: str
    source: str  # e.g. "71 validation photos (the checkpoint's gate)"
    before: list[dict]
    after: list[dict]
    split: str = "val"  # the photos the bars were measured on: "val" (the checkpoint's gate) or "test" (ood.json)
    n: int | str = "the"  # how many


def ood_runs(folder: Path) -> dict[str, dict]:
    """{checkpoint file name: its vit.trust.ood run} from `folder/ood.json` ({} when absent or unreadable)."""
    path = folder / OOD_RUN
    try:
        return {r["checkpoint"]: r for r in json.loads(path.read_text())["runs"]}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as e:
        log.warning("%s: not a vit.trust.ood run (%s); no reliability diagram from it", path, e)
        return {}


def bars_for(title: str, meta: dict, path: Path, runs: dict[str, dict]) -> Bars | str:
    """A model's bars, or a sentence saying why it has none."""
    measured = (meta.get("trust") or {}).get("measured") or {}
    if measured.get("val_reliability_before") and measured.get("val_reliability_after"):
        n = (meta.get("trust") or {}).get("fitted_on", {}).get("val", "the")
        return Bars(title, f"{n} validation photos (from the checkpoint's gate)",
                    measured["val_reliability_before"], measured["val_reliability_after"], "val", n)
    gate = (runs.get(path.name) or {}).get("gate") or {}
    if gate.get("test_reliability_after"):
        n = runs[path.name].get("n_test", "the")
        return Bars(title, f"{n} test photos (from {OOD_RUN})", gate.get("test_reliability_before") or [],
                    gate["test_reliability_after"], "test", n)
    if not meta.get("trust"):
        return f"{title}: no gate, no temperature (`python -m vit.trust.fit` adds them)"
    return f"{title}: no reliability bars in its checkpoint nor in {OOD_RUN} (`python -m vit.trust.ood` measures them)"


def diagram(models: list[Bars], words: bool = True) -> Image.Image | None:
    """One panel per model: the bars' accuracy against their mean confidence, before (grey) and after
    (blue) temperature scaling, the diagonal being perfect calibration; marker area ~ photos in the bin.
    `words=False`: no legend nor axis titles (the models' names stay), for a caption in any language."""
    if not models:
        return None

    fig = Figure(figsize=(3.2 * len(models), 3.4), dpi=100)
    total = max(sum(b["count"] for b in m.after) for m in models) or 1
    FigureCanvasAgg(fig)
    for k, m in enumerate(models):
        ax = fig.add_subplot(1, len(models), k + 1)
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle=":", label="perfect")
        for bars, colour, name in ((m.before, "grey", "before"), (m.after, "tab:blue", "after T")):
            if bars:
                conf = [b["confidence"] for b in bars]
                acc = [b["accuracy"] for b in bars]
                ax.plot(conf, acc, color=colour, linewidth=1)
                ax.scatter(conf, acc, s=[10 + 250 * b["count"] / total for b in bars], color=colour, alpha=0.7, label=name)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02))
        ax.set_title(m.title, fontsize=9)
        ax.tick_params(labelsize=7)
        if words:
            ax.set_xlabel(f"confidence · {m.source}", fontsize=7)
            ax.legend(fontsize=7, loc="upper left")
    if words:
        fig.axes[0].set_ylabel("accuracy", fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.17, top=0.9, wspace=0.25)
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    fig.clear()
    return image
