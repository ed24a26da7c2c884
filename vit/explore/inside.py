"""Inside the ViT, measured: every ViT's Figure 7 numbers (vit.explore.figure7) on the test photos, saved
beside the checkpoints for the app's "Inside the ViT" tab, its /inside endpoint and docs/inside.md.

    python -m vit.explore.inside                                   # checkpoints/*.safetensors -> checkpoints/inside.json
    python -m vit.explore.inside --checkpoints DIR --data-dir ../shared/data/pizza_steak_sushi --split test

Each photo goes through its model's own eval preprocessing (as the app's Predictor does) and the
explicit attention forward (vit.models.attention), in batches whose means combine exactly. A record
carries its checkpoint's sha256: the app and the tests tell a stale record (the checkpoint retrained
since) from a current one, and the app never recomputes it. A CNN has no attention and gets no record.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import torch
from tqdm import tqdm

from vit.data.images import open_image
from vit.data.preprocess import split_eval_transform
from vit.explore.figure7 import Grid, Sums, uniform_distance, weight_facts
from vit.files import atomic_path
from vit.messages import Said
from vit.models import families
from vit.models.attention import attention_maps, num_prefix_tokens, patch_size_px, token_grid
from vit.models.checkpoint import Checkpoint
from vit.models.factory import load, read_meta

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
FILE_NAME = "inside.json"  # beside the checkpoints it describes, as ood.json and faithfulness.json
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pizza_steak_sushi"
BATCH = 25  # photos per explicit-attention pass: ~40 MB of maps for the hybrid


@dataclass(frozen=True)
class InsideRecord:
    """One ViT's Figure 7 numbers, means over `photos` photos; per-(layer, head) figures are nested lists."""
    model: str  # the model's id: its checkpoint's file stem
    checkpoint_sha256: str  # of the .safetensors measured: a retrained checkpoint makes the record stale
    photos: int  # how many photos the means are over
    split: str  # which: the data folder's last part and the split, e.g. "pizza_steak_sushi/test"
    accuracy: float  # top-1 on these photos (a check that the photos and preprocessing are the model's)
    image_px: int  # the model's input side (distances are in these pixels)
    patch_px: int  # one token's side in input pixels (a hybrid's CNN stride)
    grid: Grid  # (rows, cols) of patch tokens
    prefix: int  # class (and distillation) tokens, left out of every figure
    uniform_distance_px: float  # what uniform attention would give
    attention_distance_px: list[list[float]]  # (layers, heads): Fig. 7 right
    attention_entropy: list[list[float]]  # (layers, heads): patch rows' normalised entropy, 1 = uniform
    cls_attention_entropy: list[list[float]]  # (layers, heads): the class token's row's
    attention_peak: list[list[float]]  # (layers, heads): patch rows' largest weight x patch keys
    cls_attention_peak: list[list[float]]  # (layers, heads): the class row's
    prefix_mass: list[list[float]]  # (layers, heads): patch queries' attention on the prefix tokens
    cls_mean_row_entropy: list[float]  # (layers,): of the head-averaged class row (the page's default overlay)
    cls_mean_row_peak: list[float]  # (layers,): its peak
    cls_mean_row_peak_max: list[float]  # (layers,): its peak on the photo where it is largest
    rows: dict  # entropy against peak over every row seen (figure7.Sums.rows)
    weights: dict  # position similarity and filters, from the weights (figure7.weight_facts)

    @property
    def layers(self) -> int:
        return len(self.attention_distance_px)

    @property
    def heads(self) -> int:
        return len(self.attention_distance_px[0])

    @property
    def patch_keys(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def attention_distance_fraction(self) -> list[list[float]]:
        """The distances as a fraction of the image side (comparable across input sizes)."""
        return [[d / self.image_px for d in row] for row in self.attention_distance_px]

    @property
    def uniform_distance_fraction(self) -> float:
        return self.uniform_distance_px / self.image_px

    def to_json(self) -> dict:
        return _rounded(asdict(self))

    @classmethod
    def from_json(cls, d: dict) -> "InsideRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "grid" else v) for k, v in d.items() if k in known})


def _rounded(value, digits: int = 5):
    """Floats in nested lists / dicts to `digits` decimals (a JSON that diffs readably)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def sha256(path: str | Path) -> str:
    """The file's sha256, cached per (path, size, modification time)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def measure(ckpt: Checkpoint, data_dir: str | Path, split: str = "test", batch: int = BATCH) -> InsideRecord:
    """A ViT checkpoint's record on every photo of `data_dir/split/<class>/`."""
    from vit.data.datasets import list_images  # lazy: imports timm (seconds); the app reads records at start-up

    samples, classes = list_images(Path(data_dir) / split)
    model = ckpt.model.eval()
    view, to_tensor = split_eval_transform(ckpt.preprocessing.to_dict())
    image_px = ckpt.preprocessing.image_size
    grid, prefix, patch_px = token_grid(model), num_prefix_tokens(model), patch_size_px(model, image_px)
    sums, right = Sums(grid, patch_px, prefix), 0
    for start in tqdm(range(0, len(samples), batch), desc=ckpt.path.stem, unit="batch", leave=False):
        chunk = samples[start:start + batch]
        x = torch.stack([to_tensor(view(open_image(s.path))) for s in chunk])  # (B, 3, H, W)
        with torch.inference_mode():
            logits, maps = attention_maps(model, x)  # per layer (B, heads, N, N)
        sums.add(maps)
        truth = torch.tensor([ckpt.class_names.index(classes[s.label]) for s in chunk])
        right += int((logits.argmax(-1) == truth).sum())
    m = sums.means()
    return InsideRecord(
        model=ckpt.path.stem, checkpoint_sha256=sha256(ckpt.path), photos=sums.photos,
        split=f"{Path(data_dir).name}/{split}", accuracy=right / sums.photos, image_px=image_px, patch_px=patch_px,
        grid=grid, prefix=prefix, uniform_distance_px=uniform_distance(grid, patch_px), **m, rows=sums.rows(),
        weights=weight_facts(model, grid))


def read(path: str | Path) -> dict[str, InsideRecord]:
    """The records of an inside.json by model id ({} when there is no file; a record of an older format is
    left out, with a warning)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out = {}
    for i, r in json.loads(path.read_text())["records"].items():
        try:
            out[i] = InsideRecord.from_json(r)
        except TypeError as e:  # a field missing: written by an older version of this module
            log.warning("%s: the record of %s is of an older format (%s); rerun python -m vit.explore.inside", path, i, e)
    return out


def write(path: str | Path, records: dict[str, InsideRecord], command: str) -> Path:
    """Save records (merged over the file's others) with how they were made."""
    merged = {**read(path), **records}
    run = {"format": 1, "command": command, "created": time.strftime("%Y-%m-%d"),
           "definitions": "vit/explore/figure7.py; docs/inside.md",
           "records": {i: merged[i].to_json() for i in sorted(merged)}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(run, indent=1) + "\n")
    return Path(path)


def record_for(checkpoint: str | Path) -> tuple[InsideRecord | None, Said | None]:
    """The current record of a checkpoint from the inside.json beside it, or None and why not (no file, no
    record of this model, or one measured on another checkpoint file): a Said, English as str(), with a code
    for the page's other language (vit.app.i18n)."""
    checkpoint = Path(checkpoint)
    found = read(checkpoint.parent / FILE_NAME).get(checkpoint.stem)
    how = f"python -m vit.explore.inside --checkpoints {checkpoint.parent}"
    if found is None:
        return None, Said(f"not measured for {checkpoint.name} ({how})", "inside.not_measured", name=checkpoint.name,
                          how=how)
    if found.checkpoint_sha256 != sha256(checkpoint):
        sha = found.checkpoint_sha256[:12]
        return None, Said(f"measured on another {checkpoint.name} (sha256 {sha}); rerun {how}", "inside.stale",
                          name=checkpoint.name, sha=sha, how=how)
    return found, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.explore.inside", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"),
                   help="a folder of *.safetensors (its ViTs are measured) or one checkpoint file")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="holds SPLIT/<class>/*.jpg")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help=f"default: {FILE_NAME} beside the checkpoints")
    p.add_argument("--batch", type=int, default=BATCH)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    source = Path(args.checkpoints)
    paths = sorted(source.glob("*.safetensors")) if source.is_dir() else [source]
    vits = [q for q in paths if families.get(read_meta(q)["family"]).attention]
    if not vits:
        p.error(f"no ViT checkpoint in {source}")
    records = {}
    for path in vits:
        start = time.perf_counter()
        records[path.stem] = r = measure(load(path), args.data_dir, args.split, args.batch)
        log.info("%s: %d photos in %.1f s, top-1 %.3f", path.stem, r.photos, time.perf_counter() - start, r.accuracy)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / FILE_NAME
    command = " ".join(["python -m vit.explore.inside", *(sys.argv[1:] if argv is None else argv)])
    print(f"wrote {write(out, records, command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
