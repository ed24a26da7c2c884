"""The example photos the app offers (examples/, provenance in examples/README.md), and more from your data.

    python -m vit.app.examples --data-dir ../shared/data/pizza_steak_sushi [--per-class 2]
    python -m vit.app.examples --check [--checkpoints checkpoints/scratch_vit.safetensors ...]

Copied photos come from the data dir's test/ split, which no model was trained on, named
<class>_<Food-101 id>.jpg. The app offers whatever images examples/ holds when it starts, and works with none.
--check prints each checkpoint's top class and probability for every example, as Markdown rows (the
"Predicted" columns of examples/README.md; ✗ where the class in the file name disagrees).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

from vit.models import families
from vit.models.checkpoint import CheckpointError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHECKPOINTS = EXAMPLES.parent / "checkpoints"
ORDER = families.names()  # the columns of examples/README.md: the registry's order
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def find(folder: str | Path = EXAMPLES) -> list[Path]:
    """The example photos in `folder`, in name order (none if it does not exist)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []


def fill(data_dir: str | Path, per_class: int = 2, dest: Path = EXAMPLES) -> list[Path]:
    from vit.data.datasets import list_images  # lazy: timm and torchvision (seconds); the page imports `find` only
    from vit.train.evaluate import split_dir

    samples, classes = list_images(split_dir(data_dir, "test"))
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for label, name in enumerate(classes):
        for s in [s for s in samples if s.label == label][:per_class]:
            target = dest / f"{name}_{s.path.name}"
            shutil.copyfile(s.path, target)
            copied.append(target)
    return copied


def true_class(path: Path, classes: list[str]) -> str | None:
    """The class a file name starts with (`sushi_2385731.jpg`, `pizza-dad.jpeg`), or None."""
    return next((c for c in classes if path.name.lower().startswith(c)), None)


def check(checkpoints: list[Path], folder: Path = EXAMPLES) -> list[str]:
    """One Markdown row per example: its class by file name, then each model's top class and probability."""
    from vit.serve.predictor import Predictor  # lazy: seconds to import; `find` (the page's) needs none of it

    predictors = [Predictor.from_checkpoint(c) for c in checkpoints]
    classes = sorted({c for p in predictors for c in p.ckpt.class_names})
    rows = ["| file | true class | " + " | ".join(families.get(p.ckpt.family).title for p in predictors) + " |",
            "|---|---|" + "---|" * len(predictors)]
    for path in find(folder):
        truth = true_class(path, classes)
        with Image.open(path) as image:
            cells = []
            for p in predictors:
                r = p.answer(image)
                cells.append(f"{r.top} {r.probs[r.top]:.2f}" + (" ✗" if truth and r.top != truth else ""))
        rows.append(f"| `{path.name}` | {truth or '?'} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.app.examples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="ImageFolder root (its test/ split is used if present)")
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--check", action="store_true", help="print each checkpoint's prediction for every example")
    p.add_argument("--checkpoints", nargs="+", type=Path, default=[CHECKPOINTS / f"{n}.safetensors" for n in ORDER],
                   help="for --check (default: the three committed ones)")
    args = p.parse_args(argv)

    if not args.check and not args.data_dir:
        p.error("give --data-dir (to copy photos) or --check")
    try:
        if args.check:
            print("\n".join(check(args.checkpoints)))
            return 0
        copied = fill(args.data_dir, args.per_class)
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(str(c) for c in copied))
    return 0


if __name__ == "__main__":
    sys.exit(main())
