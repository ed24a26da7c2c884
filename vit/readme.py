"""Regenerate the README's measured sections from the project's own files, never by hand.

    python -m vit.readme            # rewrites the Results block of README.md in place
    python -m vit.readme --print    # prints it instead

The Results block comes from the committed checkpoints' metadata (accuracy, data, recipe) plus a
latency measured here and now (median of warm batch-size-1 forward passes), naming this machine.
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
from pathlib import Path

import numpy as np
import torch

from vit.checkpoint import CheckpointError, load
from vit.predict import time_forward
from vit.ui import FAMILY_TITLES, checkpoint_paths

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model, cores, torch threads and version: where a timing was taken."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def results_block(runs: int = 30) -> str:
    rows, classes_rows, curves = [], [], []
    for family, path in checkpoint_paths().items():
        try:
            ckpt = load(path)
        except CheckpointError as e:
            rows.append(f"| {FAMILY_TITLES[family]} | missing: {e} | | | | | | |")
            continue
        m, r = ckpt.meta, ckpt.meta["recipe"]
        test, val = m["metrics"]["test"], m["metrics"].get("val", {})
        size = m["preprocessing"]["input_size"][-1]
        p50 = float(np.median(time_forward(ckpt.model, torch.zeros(1, 3, size, size), runs=runs, warmup=5)))
        init = m["init"]["weights"] + (f" ({m['init']['source'].split(':')[0]})" if m["init"].get("source") else "")
        data = f"{r['n_train']} train + {r['n_val']} val photos"
        if r.get("distillation"):
            data += f"; distilled from {FAMILY_TITLES[r['distillation']['teacher_family']]}"
        rows.append(f"| {FAMILY_TITLES[family]} | {init} | {data} | {r['epochs_run']} (best: {r['selected_epoch']}) "
                    f"| **{test['accuracy']:.1%}** ({round(test['accuracy'] * test['n_images'])}/{test['n_images']}) "
                    f"| {m['num_params'] / 1e6:.2f} M | {ckpt.size_mb:.1f} | {p50:.1f} |")
        per_class = " / ".join(f"{v:.0%}" for v in test["per_class_accuracy"].values())
        classes_rows.append(f"| {FAMILY_TITLES[family]} | {per_class} | {val.get('accuracy', float('nan')):.1%} "
                            f"| {test['loss']:.3f} | `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}` |")
        curves.append(f"![{FAMILY_TITLES[family]} training curves](checkpoints/{family}.png)")
    names = " / ".join(load_classes())
    return "\n".join([
        "| model | started from | training data | epochs | test accuracy | parameters | file MB | CPU p50 ms |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"| model | per-class test accuracy ({names}) | val accuracy | test loss | checkpoint |",
        "|---|---|---|---|---|",
        *classes_rows,
        "",
        f"Test split: `pizza_steak_sushi/test` (75 photos), never used for training or model selection. "
        f"CPU p50: median of {runs} warm forward passes at batch size 1, measured by `python -m vit.readme` on "
        f"{machine()}.",
        "",
        *curves,
    ])


def load_classes() -> list[str]:
    for path in checkpoint_paths().values():
        try:
            return load(path).class_names
        except CheckpointError:
            continue
    return []


def replace_block(text: str, name: str, block: str) -> str:
    """Swap what lies between `<!-- name:start -->` and `<!-- name:end -->`."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + block + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.readme", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--runs", type=int, default=30, help="timed forward passes per model")
    p.add_argument("--print", action="store_true", help="print the block instead of rewriting the README")
    args = p.parse_args(argv)
    block = results_block(args.runs)
    if args.print:
        print(block)
        return 0
    readme = Path(args.readme)
    readme.write_text(replace_block(readme.read_text(), "results", block))
    print(f"updated the results block of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
