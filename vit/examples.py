"""The example photos the app offers (examples/, provenance in examples/README.md), and more from your data.

    python -m vit.examples --data-dir ../shared/data/pizza_steak_sushi [--per-class 2]

Copied photos come from the data dir's test/ split, which no model was trained on, named
<class>_<Food-101 id>.jpg. The app offers whatever images examples/ holds when it starts, and works with none.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def find(folder: str | Path = EXAMPLES) -> list[Path]:
    """The example photos in `folder`, in name order (none if it does not exist)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []


def fill(data_dir: str | Path, per_class: int = 2, dest: Path = EXAMPLES) -> list[Path]:
    from vit.data import list_images  # imports timm: only here, so that the app's import of `find` stays quick
    from vit.evaluate import split_dir

    samples, classes = list_images(split_dir(data_dir, "test"))
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for label, name in enumerate(classes):
        for s in [s for s in samples if s.label == label][:per_class]:
            target = dest / f"{name}_{s.path.name}"
            shutil.copyfile(s.path, target)
            copied.append(target)
    return copied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.examples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="ImageFolder root (its test/ split is used if present)")
    p.add_argument("--per-class", type=int, default=2)
    args = p.parse_args(argv)
    try:
        copied = fill(args.data_dir, args.per_class)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(str(c) for c in copied))
    return 0


if __name__ == "__main__":
    sys.exit(main())
