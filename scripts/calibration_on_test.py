"""The calibration figures docs/trust.md quotes beside its generated tables, from the committed checkpoints
and the test split (deterministic: nothing here is timed or drawn without a seed).

    python scripts/calibration_on_test.py [--test-dir ../shared/data/pizza_steak_sushi/test] [--sweep MODEL ...]

For each committed checkpoint: its test ECE under its gate's temperature, and what a perfectly
calibrated model with the same confidences would show by chance (vit.trust.calibration.ece_by_chance:
2000 draws, seed 0): the median, the 95th percentile and the share of draws at or under the bar
(ECE <= 0.06); its wrong answers' calibrated confidences, and the reliability bin each falls in. Then
the test NLL and 15-bin ECE at T = 0.600, 0.625, ... 1.000, and the T that minimises
the test NLL (a diagnostic: the test split chooses nothing); --sweep: only for these models.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit.data.datasets import list_images  # noqa: E402
from vit.models import factory  # noqa: E402
from vit.models.features import extract  # noqa: E402
from vit.serve.model_set import checkpoint_paths  # noqa: E402
from vit.trust import calibration, load_gate  # noqa: E402

BAR = 0.06  # the ECE bar on held-back food
TEST = ROOT.parent / "shared" / "data" / "pizza_steak_sushi" / "test"


def test_logits(path: Path, test_dir: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The test photos' logits and labels through the checkpoint's model, and its gate's temperature."""
    ckpt = factory.load(path)
    samples, classes = list_images(test_dir)
    assert classes == ckpt.class_names, (classes, ckpt.class_names)
    logits, _, labels = extract(ckpt.model, samples, ckpt.meta["preprocessing"])
    return logits, labels, load_gate(ckpt).temperature


def by_chance(model: str, logits: torch.Tensor, labels: torch.Tensor, t: float) -> None:
    probs = (logits.double() / t).softmax(-1)
    draws = calibration.chance_draws(probs)
    conf, pred = probs.max(1)
    wrong = sorted(round(float(c), 3) for c, ok in zip(conf, pred == labels) if not ok)
    print(f"{model}: T {t:.3f}, test ECE {calibration.ece(probs, labels):.3f}; a calibrated model by chance: median "
          f"{float(draws.median()):.3f}, 95th pct {float(draws.quantile(0.95)):.3f}, at or under {BAR}: "
          f"{float((draws <= BAR).double().mean()):.1%} of {len(draws)} draws; mean confidence {float(conf.mean()):.3f}")
    print(f"  {len(wrong)} wrong answers at confidences {wrong}")
    for row in calibration.reliability(probs, labels):
        if any(row["lo"] < c <= row["hi"] for c in wrong):
            print(f"  bin ({row['lo']:.3f}, {row['hi']:.3f}]: {row['count']} photos, {row['accuracy']:.0%} right, "
                  f"mean confidence {row['confidence']:.3f}")


def sweep(model: str, logits: torch.Tensor, labels: torch.Tensor, t: float) -> None:
    grid = np.round(np.arange(0.60, 1.0001, 0.025), 3)  # every committed T lies in it
    print(f"{model}: the test split under other temperatures (fitted on validation: T = {t:.3f})")
    print("  T      test NLL  ECE (15 bins)")
    for s in grid:
        print(f"  {s:.3f}  {calibration.nll(logits, labels, float(s)):.4f}    "
              f"{calibration.ece((logits.double() / s).softmax(-1), labels):.3f}")
    fine = np.arange(0.70, 1.10, 0.001)
    nll = [calibration.nll(logits, labels, float(s)) for s in fine]
    best = int(np.argmin(nll))
    print(f"  test NLL's minimum: {nll[best]:.4f} at T = {fine[best]:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--test-dir", default=str(TEST))
    p.add_argument("--sweep", nargs="*", help="the models whose temperature sweep to print (default: every one)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    for model, path in checkpoint_paths().items():
        logits, labels, t = test_logits(path, Path(args.test_dir))
        by_chance(model, logits, labels, t)
        if args.sweep is None or model in args.sweep:
            sweep(model, logits, labels, t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
