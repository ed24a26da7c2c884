"""Measure each checkpoint's gate: out-of-distribution detection, calibration and prediction sets.

    python -m vit.trust.ood checkpoints/*.safetensors [--data-dir DIR ...] [--test-dir DIR] [--out checkpoints/ood.json]

Per checkpoint, on the offline non-food set (vit.data.nonfood: scikit-image and scikit-learn sample
photos, their halves and generated textures; test requirements) and the food photos:

- detectors compared on the same data: validation food (positives) against each half of the non-food
  set, AUROC and FPR at 95 % TPR, for kNN (several k), Mahalanobis and energy;
- the checkpoint's stored gate: the share of TEST food accepted and of non-food flagged;
- ECE (15 equal-width bins) and NLL on the test split, before and after temperature scaling;
- the conformal sets' coverage and mean size on the test split.

The run is saved as JSON (default checkpoints/ood.json) for vit.bench.readme, and printed as a table.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from vit.data.datasets import list_images
from vit.models import factory
from vit.models.checkpoint import CheckpointError
from vit.models.features import extract_images
from vit.trust import calibration, load_gate
from vit.trust.detectors import KNN, Energy, Mahalanobis, auroc, fpr_at_tpr
from vit.trust.fit import Split, backbone_features, samples
from vit.trust.gate import LITE0, OWN

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEST = ROOT.parent / "shared" / "data" / "pizza_steak_sushi" / "test"
SWEEP_K = (1, 2, 3, 5, 10, 20, 50)


def compare(train: Split, val: Split, nonfood: tuple[torch.Tensor, torch.Tensor], halves: list[str]) -> list[dict]:
    """Every candidate detector fitted on `train`, scored on validation food against each non-food half."""
    nf_logits, nf_features = nonfood
    rows = []
    for det in [KNN(k=k) for k in SWEEP_K if k <= len(train.features)] + [Mahalanobis(), Energy()]:
        det.fit(train.features, train.labels)
        s_in, s_out = det.score(val.features, val.logits), det.score(nf_features, nf_logits)
        row = {"detector": det.name, "params": det.params()}
        for half in ("select", "report"):
            mask = torch.tensor([h == half for h in halves])
            row[half] = {"auroc": auroc(s_in, s_out[mask]), "fpr95": fpr_at_tpr(s_in, s_out[mask], 0.95)}
        rows.append(row)
    return rows


def gate_figures(gate, test: Split, nonfood: tuple[torch.Tensor, torch.Tensor], halves: list[str],
                 class_names: list[str]) -> dict:
    """The stored gate on the test food and the non-food set; calibration and sets on the test split."""
    nf_logits, nf_features = nonfood
    _, food = gate.assess(test.logits, test.features, class_names)
    _, other = gate.assess(nf_logits, nf_features, class_names)
    report = [t for t, h in zip(other, halves) if h == "report"]
    probs = gate.probs(test.logits)
    covered = [class_names[y] in t.prediction_set for t, y in zip(food, test.labels.tolist())]
    return {"test_food_accepted": sum(t.in_distribution for t in food) / len(food),
            "nonfood_flagged": sum(not t.in_distribution for t in other) / len(other),
            "nonfood_flagged_report_half": sum(not t.in_distribution for t in report) / len(report),
            "missed_nonfood": [n for n, t in zip(NAMES, other) if t.in_distribution],
            "test_accuracy": float((test.logits.argmax(1) == test.labels).float().mean()),
            "test_ece_before": calibration.ece(test.logits.softmax(-1), test.labels),
            "test_ece_after": calibration.ece(probs, test.labels),
            "test_ece_after_interval": calibration.ece_interval(probs, test.labels),  # 95 % bootstrap
            "test_ece_by_chance": calibration.ece_by_chance(probs),  # what a calibrated model would show here
            "test_ece_after_by_binning": calibration.ece_by_binning(probs, test.labels),
            "test_nll_before": calibration.nll(test.logits, test.labels),
            "test_nll_after": calibration.nll(test.logits, test.labels, gate.temperature),
            "test_coverage": sum(covered) / len(covered),
            "test_mean_set_size": sum(len(t.prediction_set) for t in food) / len(food),
            "test_reliability_before": calibration.reliability(test.logits.softmax(-1), test.labels),
            "test_reliability_after": calibration.reliability(probs, test.labels)}


NAMES: list[str] = []  # the non-food image names of the current run (for `missed_nonfood`)


def evaluate(path: str, data_dirs: list[str] | None, test_dir: Path, nonfood: list,
             nonfood_lite0: torch.Tensor) -> dict:
    """One checkpoint: detectors on its own and on the shared ImageNet features, and its stored gate."""
    ckpt = factory.load(path)
    gate = load_gate(ckpt)
    train_s, val_s, where = samples(ckpt, data_dirs)
    test_s, classes = list_images(test_dir)
    if classes != ckpt.class_names:
        raise ValueError(f"{test_dir}: classes {classes}, the checkpoint has {ckpt.class_names}")
    own = {name: Split.of(ckpt, ss) for name, ss in (("train", train_s), ("val", val_s), ("test", test_s))}
    lite = {name: Split(own[name].logits, backbone_features([x.path for x in ss]), own[name].labels)
            for name, ss in (("train", train_s), ("val", val_s), ("test", test_s))}
    nf_logits, nf_own = extract_images(ckpt.model, [x.image for x in nonfood], ckpt.meta["preprocessing"])
    halves = [x.half for x in nonfood]
    out = {"checkpoint": Path(path).name, "family": ckpt.family, "fitted_on": where, "n_test": len(test_s),
           "n_nonfood": len(nonfood),
           "detectors": {OWN: compare(own["train"], own["val"], (nf_logits, nf_own), halves),
                         LITE0: compare(lite["train"], lite["val"], (nf_logits, nonfood_lite0), halves)}}
    if gate is None:
        out["gate"] = None
    else:
        test, nf = (lite["test"], (nf_logits, nonfood_lite0)) if gate.features == LITE0 else (own["test"], (nf_logits, nf_own))
        out["gate"] = {**gate.record(), **gate_figures(gate, test, nf, halves, ckpt.class_names)}
    return out


def table(runs: list[dict]) -> str:
    lines = ["| model | detector | AUROC (report half) | FPR@95 | test food accepted | non-food flagged | "
             "ECE before → after | NLL before → after | 90 % set coverage | mean set size |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        g = r["gate"]
        if g is None:
            lines.append(f"| {r['checkpoint']} | no gate | | | | | | | | |")
            continue
        det = next((d for d in r["detectors"][g["features"]] if d["detector"] == g["detector"]
                    and d["params"] == g["params"]), {"report": {"auroc": float("nan"), "fpr95": float("nan")}})
        lines.append(f"| {r['checkpoint']} | {g['detector']} {g['params']} on {g['features']} | {det['report']['auroc']:.3f} | "
                     f"{det['report']['fpr95']:.3f} | {g['test_food_accepted']:.1%} | {g['nonfood_flagged']:.1%} | "
                     f"{g['test_ece_before']:.3f} → {g['test_ece_after']:.3f} | "
                     f"{g['test_nll_before']:.3f} → {g['test_nll_after']:.3f} | {g['test_coverage']:.1%} | "
                     f"{g['test_mean_set_size']:.2f} |")
    return "\n".join(lines)


def detector_table(runs: list[dict]) -> str:
    lines = ["| model | features | detector | select AUROC | select FPR@95 | report AUROC | report FPR@95 |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        for source, rows in r["detectors"].items():
            for d in rows:
                lines.append(f"| {r['checkpoint']} | {source} | {d['detector']} {d['params']} | {d['select']['auroc']:.3f} | "
                             f"{d['select']['fpr95']:.3f} | {d['report']['auroc']:.3f} | {d['report']['fpr95']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.trust.ood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data-dir", action="append", help="ImageFolder root(s) with train/ (default: each recipe's)")
    p.add_argument("--test-dir", default=str(DEFAULT_TEST), help="test ImageFolder (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "checkpoints" / "ood.json"), help="the saved run (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        from vit.data.nonfood import nonfood_set  # lazy: its photos need the test requirements (requirements-test.txt)
    except ImportError as e:
        print(f"error: the non-food set needs the test requirements (pip install -r requirements-test.txt): {e}",
              file=sys.stderr)
        return 2
    nonfood = nonfood_set()
    NAMES[:] = [x.name for x in nonfood]
    nonfood_lite0 = backbone_features([x.image for x in nonfood])
    runs = []
    for path in args.checkpoints:
        try:
            runs.append(evaluate(path, args.data_dir, Path(args.test_dir), nonfood, nonfood_lite0))
        except (CheckpointError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    run = {"created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": "python -m vit.trust.ood " + " ".join(argv or sys.argv[1:]),
           "ece_bins": calibration.ECE_BINS, "nonfood": {"n": len(nonfood), "names": NAMES,
                                                         "halves": [x.half for x in nonfood]}, "runs": runs}
    Path(args.out).write_text(json.dumps(run, indent=1) + "\n")
    print(table(runs) + "\n\n" + detector_table(runs) + f"\n\nsaved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
