"""Copy ImageFolder data sets with every photo shrunk to a shorter side of SIDE px, same folders and file
names: small enough to send with the code to a rented GPU (docs/training.md#on-a-gpu).

    python scripts/shrink_data.py --side 183 --out .gpudata ../shared/data/pizza_steak_sushi_20_percent \
        ../shared/data/pizza_steak_sushi

The trainer's memory cache shrinks each training photo to the same side (vit.data.datasets._load_rgb, bicubic) before
any augmentation, so a copy made at the cache side feeds it nearly the same pixels: the one difference is the
JPEG re-encoding (--quality). The scratch ViT's side is round(160 / 0.875) = 183 (its teacher's 160 px crop).
File names are kept, so the train/validation split (a hash of class/file name) and the de-duplication across
data sets are the same as on the originals; a train/ photo that an earlier root already has is left out (the
trainer would not read it). Photos already that small are copied as they are.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from vit.data.datasets import IMAGE_SUFFIXES, Sample, _load_rgb  # noqa: E402


def shrink_tree(src: Path, dest: Path, side: int, quality: int, seen: set[str]) -> tuple[int, int]:
    """Mirror `src` into `dest`, leaving out train/ photos whose class/file name is in `seen` (an earlier
    root's train/ has them, and vit.data.datasets.train_samples keeps the first); returns (photos, bytes) written."""
    count = size = 0
    for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = path.relative_to(src)
        if rel.parts[0] == "train":
            key = Sample(path, 0).key  # the trainer's own de-duplication key (class/file name)
            if key in seen:
                continue
            seen.add(key)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:  # the header only: is it larger than the cache side (_load_rgb's test)?
            small_already = min(im.size) <= side
        if small_already:
            shutil.copyfile(path, out)
        else:
            _load_rgb(path, side).save(out, format="JPEG", quality=quality, subsampling=0)
        count, size = count + 1, size + out.stat().st_size
    return count, size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="data set roots (each copied to OUT/<its folder name>)")
    p.add_argument("--out", type=Path, required=True, help="folder for the copies")
    p.add_argument("--side", type=int, default=183, help="shorter side in px (default 183: the scratch ViT's cache)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the shrunk photos")
    args = p.parse_args(argv)
    seen: set[str] = set()
    for root in args.roots:
        if not root.is_dir():
            p.error(f"{root}: no such folder")
        n, size = shrink_tree(root, args.out / root.name, args.side, args.quality, seen)
        print(f"{root} -> {args.out / root.name}: {n} photos, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
