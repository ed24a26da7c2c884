"""The models the app serves: every checkpoint in a folder, read at once, built behind the page.

`ModelSet` reads every checkpoint's metadata from its header when it is made (titles, classes,
methods, the comparison table: no timm, no weights), then builds the models in a background thread
(`start`), so the page is served while they load; `get(id)` waits for a model still loading. What a
model offers (its methods, its attention geometry) is answered from its family before it loads.
The folder comes from `--checkpoints`, $FOODVISION_CHECKPOINTS or ./checkpoints (`parse_args`, `from_args`).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from vit.explain import methods as registry
from vit.messages import Said
from vit.models import families
from vit.models.checkpoint import CheckpointError
from vit.models.factory import (
    load,
    read_meta,  # the header alone: no timm, no weights
)

if TYPE_CHECKING:  # vit.serve.predictor imports timm (seconds): only the loading thread needs it
    from vit.serve.predictor import Predictor

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"  # the photos, when this clone has them beside it
LOAD_WAIT_S = 120.0  # a request for a model still loading waits this long, then gets a message


class ModelError(Said, LookupError):
    """A model that is unknown, still loading or unavailable; the message is meant for the user (its code:
    "model.*")."""


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
        from vit.serve.predictor import Predictor  # lazy: seconds to import; the page is served before the models load

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
            raise ModelError(f"unknown model {i!r}; choose one of {self.ids}", "model.unknown", model=i,
                             models=self.ids)
        if not self._ready[i].is_set():
            self._want(i)  # the loading thread builds it next
        if not self._ready[i].wait(timeout):
            raise ModelError(f"{self.titles[i]} is still loading; please try again in a few seconds.", "model.loading",
                             model=self.titles[i])
        if i in self.errors:
            raise ModelError(f"{self.titles[i]} is unavailable: {self.errors[i]}", "model.unavailable",
                             model=self.titles[i], detail=self.errors[i])
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


def default_model(models: ModelSet) -> str | None:
    """The model the page opens on: a readable one with attention maps first, then the best test accuracy."""
    readable = [i for i in models.ids if i in models.meta]
    return max(readable, default=models.ids[0] if models.ids else None,
               key=lambda i: (models.has_attention(i), models.meta[i].get("metrics", {}).get("test", {}).get("accuracy", 0)))


def parse_args(argv: list[str], doc: str | None = None) -> argparse.Namespace:
    """The app's command line: `--checkpoints DIR`, `--mcp`."""
    p = argparse.ArgumentParser(prog="python app.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", help="folder of *.safetensors checkpoints (default: $FOODVISION_CHECKPOINTS "
                                          "or ./checkpoints)")
    p.add_argument("--mcp", action="store_true", help="also serve the API as MCP tools")
    p.add_argument("--data-dir", help="the folder holding the data sets' folders (pizza_steak_sushi/...), for the "
                                      "thumbnails of the nearest training photos and the mistakes (default: "
                                      "$FOODVISION_DATA_DIR, ../shared/data, else downloaded on first use)")
    return p.parse_args(argv)


def data_roots(args: argparse.Namespace) -> list[Path]:
    """Where the app looks for the dataset photos: `--data-dir`, $FOODVISION_DATA_DIR, ../shared/data (then
    vit.data.course's download cache)."""
    return [Path(d) for d in (getattr(args, "data_dir", None), os.environ.get("FOODVISION_DATA_DIR")) if d] + [DATA_DIR]


def from_args(args: argparse.Namespace) -> ModelSet:
    """The model set of the app's `--checkpoints DIR` (else $FOODVISION_CHECKPOINTS, else ./checkpoints), with
    the CPU speed-ups of $FOODVISION_OPTIMISE; read, not started."""
    paths = checkpoint_paths(args.checkpoints)
    return ModelSet(paths, optimisations(ids=list(paths)))


def examples_cache(models: ModelSet, code: list[Path], root: str | os.PathLike | None = None) -> Path:
    """Where the examples' answers are cached: keyed by the served checkpoints and by the `code` that
    draws the answers, so a new checkpoint folder or a new app never shows another's answers.
    `root`: $FOODVISION_EXAMPLES_CACHE, else the temp dir's foodvision-examples."""
    digest = hashlib.sha256(b"".join(Path(f).read_bytes() for f in code)).hexdigest()[:8]
    root = Path(root or os.environ.get("FOODVISION_EXAMPLES_CACHE") or Path(tempfile.gettempdir()) / "foodvision-examples")
    return root / f"{models.fingerprint()}-{digest}"


def optimisations(spec: str | None = None, ids: list[str] | None = None) -> dict[str, str]:
    """Per-model CPU speed-ups (vit.serve.predictor.OPTIMISATIONS) from "id=mode,..." (default:
    $FOODVISION_OPTIMISE), e.g. "scratch_vit=int8,effnet=channels_last"; ids checked against `ids`."""
    modes = ("none", "channels_last", "int8", "compile")  # vit.serve.predictor.OPTIMISATIONS, without importing timm
    spec = os.environ.get("FOODVISION_OPTIMISE", "") if spec is None else spec
    chosen = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        model, _, mode = item.partition("=")
        if not model or (ids is not None and model not in ids) or mode not in modes:
            raise ValueError(f"bad optimisation {item!r}: use id=mode with an id in {ids or 'the served models'} "
                             f"and a mode in {modes}")
        chosen[model] = mode
    return chosen


def methods_of(models: ModelSet, i: str) -> tuple[str, ...]:
    """Model `i`'s explanation methods, its default first, from its family's capabilities in the method
    registry (known before it loads)."""
    return registry.of(families.get(models.meta[i]["family"])) if i in models.meta else ()


def geometry(models: ModelSet, i: str) -> tuple[int, int]:
    """(attention layers, heads) of model `i`: from the model once loaded, else from its metadata
    (0, 0 when neither says)."""
    if i in models.models and models.has_attention(i):
        return models.models[i].num_layers, models.models[i].num_heads
    a = models.meta.get(i, {}).get("arch", {})
    return int(a.get("depth", 0)), int(a.get("num_heads", 0))


def max_layers(models: ModelSet) -> int:
    return max((geometry(models, i)[0] for i in models.ids if models.has_attention(i)), default=0)


def max_heads(models: ModelSet) -> int:
    return max((geometry(models, i)[1] for i in models.ids if models.has_attention(i)), default=0)
