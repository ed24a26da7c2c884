"""What the Gradio app shows, computed without Gradio: the model set, model cards, overlays, tables.

app.py wires widgets to these functions; everything here is testable without a browser. Importing
this module imports no timm and builds no model: `ModelSet` reads every checkpoint's metadata from
its header at once and builds the models in a background thread (`start`), so the page can be served
while they load.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from vit import families
from vit.checkpoint import CheckpointError, Preprocessing
from vit.factory import read_meta  # the header alone: no timm, no weights

if TYPE_CHECKING:  # vit.predict imports timm (seconds): only the loading thread needs it
    from vit.predict import Predictor, Result

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
LAYER_DEFAULT = 4  # the layer an example's overlay shows (clipped to the model's last)
DISPLAY_SIDE = 336  # overlays are drawn on the model's view, enlarged to this for the screen
LOAD_WAIT_S = 120.0  # a request for a model still loading waits this long, then gets a message
HEAD_REDUCTIONS = ("mean", "max")  # vit.explain.HEAD_REDUCTIONS


class ModelError(LookupError):
    """A model that is unknown, still loading or unavailable; the message is meant for the user."""


def checkpoint_paths(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """Every *.safetensors in `directory` ($FOODVISION_CHECKPOINTS, else ./checkpoints), by file stem:
    the stem is the model's id in the API."""
    root = Path(directory or os.environ.get("FOODVISION_CHECKPOINTS") or CHECKPOINT_DIR)
    return {p.stem: p for p in sorted(root.glob("*.safetensors"))}


class ModelSet:
    """The models the app serves, by id (checkpoint file stem): metadata at once, models when loaded.

    `titles`, `meta` and `ids` are known when the constructor returns; `get(id)` waits for a model
    that is still loading. A checkpoint that is missing, damaged or builds no model is reported in
    `errors`, not fatal."""

    def __init__(self, paths: dict[str, Path], optimise: dict[str, str] | None = None) -> None:
        self.paths, self.optimise = dict(paths), dict(optimise or {})
        self.meta: dict[str, dict] = {}
        self.models: dict[str, Predictor] = {}
        self.errors: dict[str, str] = {}
        self._ready = {i: threading.Event() for i in paths}
        self._wanted: list[str] = []  # ids asked for while loading: built next
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        for i, path in paths.items():
            try:
                self.meta[i] = read_meta(path)
            except (CheckpointError, OSError) as e:
                self._fail(i, str(e))
        order = {name: k for k, name in enumerate(families.names())}
        self.ids = sorted(paths, key=lambda i: (order.get(self.meta.get(i, {}).get("family"), len(order)), i))
        self.titles = _titles(self.ids, self.meta)

    def _fail(self, i: str, why: str) -> None:
        self.errors[i] = why
        self._ready[i].set()
        log.warning("%s unavailable: %s", i, why)

    def start(self, first: str | None = None) -> "ModelSet":
        """Build every model in a background thread, `first` first; returns at once."""
        if first is not None:
            self._want(first)
        if self._thread is None:
            # not a daemon: an exit waits for the model being built instead of aborting inside native code
            self._thread = threading.Thread(target=self.load, name="load-models")
            self._thread.start()
        return self

    def _want(self, i: str) -> None:
        with self._lock:
            if i not in self._wanted:
                self._wanted.append(i)

    def load(self) -> "ModelSet":
        """Make every model whose metadata was read servable, those asked for first, then in order; then
        build the PyTorch models that an ONNX export let wait (gradient methods need them): the
        first answers do not wait for those builds, nor for timm (what `start` runs)."""
        from vit.factory import load
        from vit.predict import Predictor

        while True:
            with self._lock:
                pending = [i for i in self._wanted + self.ids if not self._ready[i].is_set()]
            if not pending:
                break
            i = pending[0]
            try:
                self.models[i] = Predictor(load(self.paths[i], lazy=True), self.optimise.get(i, "none"))
                log.info("%s loaded from %s", i, self.paths[i])
            except (CheckpointError, OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
                # a CheckpointError names the file; anything else came from metadata that builds no model
                path = self.paths[i]
                self._fail(i, str(e) if isinstance(e, CheckpointError)
                           else f"{path}: cannot be loaded ({type(e).__name__}: {e})")
            finally:
                self._ready[i].set()
        for i in self.ids:
            if i in self.models:
                self.models[i].warm()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every model is loaded or failed; False on timeout."""
        return all(e.wait(timeout) for e in self._ready.values())

    def status(self, i: str) -> str:
        """"ready", "loading" or "failed"."""
        return "ready" if i in self.models else "failed" if i in self.errors else "loading"

    def get(self, i: str, timeout: float = LOAD_WAIT_S) -> "Predictor":
        """The model with id `i`, waiting up to `timeout` s for one still loading; ModelError otherwise."""
        if i not in self._ready:
            raise ModelError(f"unknown model {i!r}; choose one of {self.ids}")
        if not self._ready[i].is_set():
            self._want(i)  # the loading thread builds it next
        if not self._ready[i].wait(timeout):
            raise ModelError(f"{self.titles[i]} is still loading; please try again in a few seconds.")
        if i in self.errors:
            raise ModelError(f"{self.titles[i]} is unavailable: {self.errors[i]}")
        return self.models[i]

    def has_attention(self, i: str) -> bool:
        """Whether model `i` has attention maps (a ViT), from its family in the registry."""
        return i in self.meta and families.get(self.meta[i]["family"]).attention

    def class_names(self) -> list[str]:
        """Every class any model predicts, in the order the checkpoints list them."""
        return list(dict.fromkeys(c for i in self.ids if i in self.meta for c in self.meta[i]["class_names"]))

    def fingerprint(self) -> str:
        """Changes whenever a served checkpoint file does (name, size, time): keys the examples' cache."""
        h = hashlib.sha256()
        for i in self.ids:
            st = self.paths[i].stat() if self.paths[i].is_file() else None
            h.update(f"{i}:{st and st.st_size}:{st and st.st_mtime_ns}:{self.optimise.get(i)};".encode())
        return h.hexdigest()[:16]


def _titles(ids: list[str], meta: dict[str, dict]) -> dict[str, str]:
    """What a person reads for each model: the checkpoint's title, else its family's; the id is added
    where two models would read the same."""
    base = {i: meta[i].get("title") or families.get(meta[i]["family"]).title if i in meta else i for i in ids}
    return {i: t if list(base.values()).count(t) == 1 else f"{t} ({i})" for i, t in base.items()}


def classes_text(names: list[str]) -> str:
    """["pizza", "steak", "sushi"] -> "pizza, steak or sushi"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1] if names else "?"


def optimisations(spec: str | None = None, ids: list[str] | None = None) -> dict[str, str]:
    """Per-model CPU speed-ups (vit.predict.OPTIMISATIONS) from "id=mode,..." (default:
    $FOODVISION_OPTIMISE), e.g. "scratch_vit=int8,effnet=channels_last"; ids checked against `ids`."""
    modes = ("none", "channels_last", "int8", "compile")  # vit.predict.OPTIMISATIONS, without importing timm
    spec = os.environ.get("FOODVISION_OPTIMISE", "") if spec is None else spec
    chosen = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        model, _, mode = item.partition("=")
        if not model or (ids is not None and model not in ids) or mode not in modes:
            raise ValueError(f"bad optimisation {item!r}: use id=mode with an id in {ids or 'the served models'} "
                             f"and a mode in {modes}")
        chosen[model] = mode
    return chosen


def write_once(data: bytes, folder: str | os.PathLike, name: str) -> str:
    """folder/name holding `data`: written under a temporary name and renamed into place, so that a
    reader never sees it half-written. An existing file is kept (the caller names files by content)
    but touched: a file handed out again is as young as its newest use, so an age-based clean-up
    (`gradio_io.prune`) cannot delete it before Gradio has copied it."""
    path = Path(folder) / name
    try:
        os.utime(path)
        return str(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(staging, path)
    return str(path)


def model_card(meta: dict, title: str, path: Path) -> str:
    """Markdown from the checkpoint's metadata alone: what the model is, what it started from, how it
    was trained, what it scores."""
    m = meta
    recipe, init = m.get("recipe", {}), m.get("init", {})
    test, val = m.get("metrics", {}).get("test", {}), m.get("metrics", {}).get("val", {})
    lines = [f"**{title}** — {describe_arch(m)}",
             f"- **Started from:** {init.get('weights', 'unknown')}" + (f" ({init['source']})" if init.get("source") else "")]
    if "n_train" in recipe:
        distill = recipe.get("distillation") or {}
        teacher = distill.get("teacher_family")
        name = families.get(teacher).title if teacher in families.names() else teacher
        learned = ""
        if teacher:
            learned = (f"; learned from their labels and from the {name}'s predictions"
                       + (" and feature maps" if recipe.get("feature_distill") else ""))
            if distill.get("teacher_init") not in (None, "random"):
                learned += f" (the teacher started from {distill['teacher_init']} weights: that knowledge reaches " \
                           "this model through it)"
        lines.append(f"- **Trained on:** {recipe['n_train']} photos ({recipe.get('n_val', 0)} more held "
                     f"out for validation), {recipe.get('epochs_run', recipe.get('epochs'))} epochs{learned}")
    size_mb = path.stat().st_size / 1e6 if path.is_file() else 0.0
    lines += ["- **Classes:** " + ", ".join(m["class_names"]),
              "- **Explanations:** " + ", ".join(METHOD_TITLES.get(x, x) for x in families.get(m["family"]).methods),
              "- **Test accuracy:** " + (f"{test['accuracy']:.1%} on {test['n_images']} photos" if test else "not measured")
              + (f" (validation: {val['accuracy']:.1%} on {val['n_images']})" if val else ""),
              f"- **Size:** {size_mb:.1f} MB on disk, {m.get('num_params', 0):,} parameters, "
              f"input {Preprocessing.from_dict(m['preprocessing']).image_size} px"]
    return "\n".join(lines)


def geometry(models: ModelSet, i: str) -> tuple[int, int]:
    """(attention layers, heads) of model `i`: from the model once loaded, else from its metadata
    (0, 0 when neither says)."""
    if i in models.models and models.has_attention(i):
        return models.models[i].num_layers, models.models[i].num_heads
    a = models.meta.get(i, {}).get("arch", {})
    return int(a.get("depth", 0)), int(a.get("num_heads", 0))


def max_heads(models: ModelSet) -> int:
    return max((geometry(models, i)[1] for i in models.ids if models.has_attention(i)), default=0)


def describe_arch(meta: dict) -> str:
    """One line from the family's description and the architecture record."""
    a, family = meta["arch"], families.get(meta["family"])
    parts = [a["model_name"]] if "model_name" in a else []
    if "depth" in a and "num_heads" in a:
        parts.append(f"{a['depth']} layers × {a['num_heads']} heads, width {a.get('embed_dim', '?')}")
    if "patch_size" in a and "image_size" in a:
        parts.append(f"{a['patch_size']} px patches on {a['image_size']} px")
    if a.get("distilled"):
        parts.append("DeiT distillation token")
    return ", ".join(parts) + (f" ({family.description})" if family.description else "")


def latency_text(p: "Predictor", r: "Result") -> str:
    """Model time of this request (its one timed pass, then its map), where it ran, and the model's size."""
    return (f"⏱️ **{r.latency_ms:.1f} ms prediction** ({r.timed}) · {r.explain_ms:.1f} ms {r.method} map · "
            f"{device_text()}  \n"
            f"📦 {p.ckpt.size_mb:.1f} MB on disk · {p.meta.get('num_params', 0) / 1e6:.2f} M parameters")


def device_text() -> str:
    return f"CPU, {torch.get_num_threads()} threads" if not torch.cuda.is_available() else torch.cuda.get_device_name()


def _display(view: Image.Image) -> tuple[Image.Image, float]:
    scale = DISPLAY_SIDE / view.width
    return view.resize((DISPLAY_SIDE, round(view.height * scale)), Image.BICUBIC), scale


METHOD_TITLES = {  # what the method menu says; ids are vit.families' (and the API's)
    "attention": "Attention: one layer", "rollout": "Attention rollout", "chefer": "Chefer relevance",
    "grad-cam": "Grad-CAM", "occlusion": "Occlusion", "rise": "RISE"}
LAYERED = ("attention", "rollout")  # methods with a layer / head to pick (rollout: heads and discard)


def methods_of(models: ModelSet, i: str) -> tuple[str, ...]:
    """Model `i`'s explanation methods, its default first, from its family (known before it loads)."""
    return families.get(models.meta[i]["family"]).methods if i in models.meta else ()


def method_choices(methods: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(METHOD_TITLES.get(m, m), m) for m in methods]


def render_overlay(r: "Result", opacity: float = 0.5) -> Image.Image:
    """The result's map over the pixels the model saw, enlarged for the screen."""
    from vit import explain

    shown, _ = _display(r.view)
    return explain.overlay(shown, r.heat, opacity)


def faithfulness_record(r: "Result") -> dict:
    """The map's deletion / insertion AUCs and the random bar's (None where not scored)."""
    f = r.faithfulness
    keys = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")
    return {k: (round(float(getattr(f, k)), 4) if f is not None else None) for k in keys}


def faithfulness_text(r: "Result", title: str = "") -> str:
    """Markdown: how faithful the map is, against random orders of the same cells."""
    f = faithfulness_record(r)
    if f["deletion_auc"] is None:
        return ""
    return (f"**Is the map faithful?** ({METHOD_TITLES.get(r.method, r.method)}{', ' + title if title else ''})  \n"
            f"Blurring the hottest cells first: deletion AUC **{f['deletion_auc']:.3f}** vs "
            f"{f['random_deletion_auc']:.3f} at random (lower is better).  \n"
            f"Revealing them first: insertion AUC **{f['insertion_auc']:.3f}** vs "
            f"{f['random_insertion_auc']:.3f} at random (higher is better).")


def curves_image(r: "Result", title: str = "") -> Image.Image | None:
    """The deletion / insertion curves against random orders (None where not scored)."""
    from vit import explain

    return None if r.faithfulness is None else explain.curves_plot(r.faithfulness, title)


def explain_record(model_id: str, r: "Result") -> dict:
    """What /explain returns beside the overlay."""
    scored = {"steps": r.faithfulness.steps, "random_seeds": list(r.faithfulness.random_seeds)} \
        if r.faithfulness is not None else {}
    return {"model": model_id, "method": r.method, "label": r.top, "probs": r.probs, **faithfulness_record(r),
            **scored, "latency_ms": round(r.latency_ms, 2), "explain_ms": round(r.explain_ms, 2), "grid": list(r.grid)}


def render_layers(r: "Result", head: int | str = "mean", opacity: float = 0.5) -> Image.Image | None:
    """Every layer's class-token attention at once (models with attention only)."""
    from vit import explain

    if not r.maps:
        return None
    heats = [explain.cls_attention(m, r.grid, r.prefix, head) for m in r.maps]
    return explain.layer_mosaic(r.view, heats, opacity)


def render_patches(r: "Result") -> Image.Image:
    """The model's view cut into its patches (ViTs) or its map's cells (CNNs)."""
    from vit import explain

    shown, scale = _display(r.view)
    return explain.patch_grid(shown, max(1, round(r.cell_px * scale)))


def parse_head(head: str | int | None, num_heads: int) -> int | str:
    """'mean' / 'max' / 'head 2' / 2 -> what explain.head_select takes (heads count from 1 on screen)."""
    if head is None or head in HEAD_REDUCTIONS:
        return head or "mean"
    try:
        index = int(str(head).split()[-1])
    except ValueError:
        raise ValueError(f"unknown head {head!r}: use 'mean', 'max' or 'head 1' .. 'head {num_heads}'") from None
    if not 1 <= index <= num_heads:
        raise ValueError(f"head {index} does not exist: this model has heads 1 .. {num_heads}")
    return index - 1


def head_choices(num_heads: int) -> list[str]:
    return list(HEAD_REDUCTIONS) + [f"head {i + 1}" for i in range(num_heads)]


def measure_p50(models: ModelSet, runs: int = 20) -> dict[str, float]:
    """Median warm latency (ms) of each loaded model's plain forward pass at batch size 1, on this server."""
    from vit.predict import time_forward

    out = {}
    for i, p in list(models.models.items()):
        x = torch.zeros(1, 3, p.image_size, p.image_size)
        out[i] = float(np.median(time_forward(p.model, x, runs=runs, warmup=3)))
    return out


def comparison_rows(models: ModelSet, latency_p50: dict[str, float] | None = None) -> list[list]:
    """One row per model for the comparison table: name, init, data, epochs, accuracy, params, MB, p50 ms.
    From the metadata alone, so a model still loading has its row."""
    rows = []
    for i in models.ids:
        title = models.titles[i]
        if i in models.errors:
            rows.append([title, "unavailable: " + models.errors[i]] + [""] * 6)
            continue
        m = models.meta[i]
        recipe, test = m.get("recipe", {}), m.get("metrics", {}).get("test", {})
        size_mb = models.paths[i].stat().st_size / 1e6
        rows.append([
            title, m.get("init", {}).get("weights", "?"),
            f"{recipe.get('n_train', '?')} train / {recipe.get('n_val', 0)} val",
            recipe.get("epochs_run", recipe.get("epochs", "")),
            f"{test['accuracy']:.1%}" if test else "",
            f"{m.get('num_params', 0) / 1e6:.2f} M", f"{size_mb:.1f}",
            f"{latency_p50[i]:.1f}" if latency_p50 and i in latency_p50 else "",
        ])
    return rows


COMPARISON_HEADERS = ["model", "started from", "data", "epochs", "test accuracy", "parameters", "MB", "p50 ms (bs=1)"]
HISTORY_COLUMNS = ["model", "epoch", "curve", "value"]


def history_rows(models: ModelSet, metric: str) -> list[list]:
    """Long-form rows (model, epoch, curve, value) of every model's per-epoch `metric` ("loss" or
    "acc"), train and val, from each checkpoint's meta["history"]: what a gr.LinePlot draws."""
    rows = []
    for i in models.ids:
        for h in models.meta.get(i, {}).get("history", []):
            for split in ("train", "val"):
                value = h.get(f"{split}_{metric}")
                if value is not None and "epoch" in h:
                    rows.append([models.titles[i], h["epoch"], f"{models.titles[i]} · {split}", float(value)])
    return rows
