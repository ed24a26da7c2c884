"""Write each checkpoint's bank of training photos and its explorer record: `python -m vit.explore`.

    python -m vit.explore checkpoints/*.safetensors [--data-dir DIR ...] [--test-dir DIR] [--map tsne|pca]
        [--out checkpoints/explorer.json] [--banks-only]

For each checkpoint, on the engine that serves it (its ONNX export when current, else PyTorch): the model's
own features and logits of its training and validation photos (the trainer's hash split of the pooled
train/ folders of --data-dir, default: its recipe's, exactly the gate's), of its test split (--test-dir,
default: its recipe's) and of the non-food images the gate is measured against (vit.data.nonfood; test
requirements: scikit-image, scikit-learn). Then it writes the bank (banks/NAME.safetensors beside the
checkpoint, vit.explore.bank) and the model's record into --out (default: explorer.json beside the
first checkpoint; other models' records in it are kept). It refuses to write a record whose test
accuracy differs from the one the checkpoint recorded (a stale export, or other photos). Offline; the
app only reads what this writes. Regenerate after a retrain, with the other tables (vit.bench.readme).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from vit.data.datasets import list_images
from vit.explore import bank as banks
from vit.explore import explorer
from vit.models import factory
from vit.models.checkpoint import CheckpointError
from vit.runtime.choice import make_engine
from vit.trust import GateError, load_gate
from vit.trust.fit import samples

log = logging.getLogger(__name__)


def agreement(bank: banks.Bank, features: np.ndarray, answers: np.ndarray, k: int = banks.K) -> float:
    """Share of photos whose k nearest training photos' majority label is the model's answer."""
    idx, _ = bank.nearest(features, k)
    return float((banks.vote(bank.labels[idx], len(bank.class_names)) == answers).mean())


def nonfood_images() -> tuple[list[str], list]:
    """The non-food images (names by source, PIL images), built once for every model."""
    from vit.data.nonfood import nonfood_set  # lazy: test requirements (scikit-image, scikit-learn)

    items = nonfood_set()
    return [i.name for i in items], [i.image for i in items]


def explore(path: Path, args: argparse.Namespace, nonfood: tuple[list[str], list]) -> dict | None:
    """One checkpoint: its bank written beside it, and its explorer record returned (None with --banks-only)."""
    started = time.perf_counter()
    ckpt = factory.load(path, lazy=True)
    engine = make_engine(ckpt, "auto")
    train, val, where = samples(ckpt, args.data_dir, args.val_fraction)
    root = Path(args.data_root) if args.data_root else banks.data_root(where["data_dirs"])
    pp, classes = ckpt.meta["preprocessing"], ckpt.class_names
    logits, features = {}, {}
    for name, photos in (("train", [s.path for s in train]), ("val", [s.path for s in val])):
        logits[name], features[name] = banks.features_of(engine, photos, pp)
    bank = banks.build_bank(engine, train, val, root, path, classes, pp, where, (features["train"], features["val"]))
    log.info("%s: wrote %s (%d x %d)", path.name, bank.save(banks.bank_path(path)), len(bank.photos), bank.dim)
    if args.banks_only:
        return None
    test_dir = Path(args.test_dir or ckpt.meta.get("recipe", {}).get("test_dir") or "")
    test, test_classes = list_images(test_dir)
    if test_classes != classes:
        raise ValueError(f"{test_dir}: classes {test_classes}, the checkpoint has {classes}")
    logits["test"], features["test"] = banks.features_of(engine, [s.path for s in test], pp)
    logits["nonfood"], features["nonfood"] = banks.features_of(engine, nonfood[1], pp)
    try:
        gate = load_gate(ckpt)
    except GateError as e:
        raise ValueError(f"{path.name}: {e}") from e
    labelled = {"train": train, "val": val, "test": test}
    splits = [explorer.Split(s, [banks.photo_name(x.path, root) for x in labelled[s]],
                             np.array([x.label for x in labelled[s]]), logits[s], features[s])
              for s in ("train", "val", "test")]
    splits.append(explorer.Split(explorer.NONFOOD, nonfood[0], np.full(len(nonfood[0]), -1), logits["nonfood"],
                                 features["nonfood"]))
    recorded = ckpt.meta.get("metrics", {}).get("test", {}).get("accuracy")
    agree = {s: round(agreement(bank, features[s], logits[s].argmax(1)), 4) for s in ("val", "test")}
    record = explorer.build(path.stem, classes, splits, gate.temperature if gate else 1.0, method=args.map, extra={
        "recorded_test_accuracy": recorded, "engine": engine.name, "weights_sha256": bank.meta["weights_sha256"],
        "neighbours": {"k": banks.K, "vote": "majority, a tie to the nearest", "agreement_with_answer": agree}})
    measured = record["test"]["accuracy"]
    if recorded is not None and abs(measured - recorded) > 0.5 / len(test):
        raise ValueError(f"{path.name}: test accuracy {measured:.4f} on {engine.name}, {recorded:.4f} recorded in the "
                         "checkpoint: a stale export or other photos")
    log.info("%s: test %d/%d right, %d + %d mistakes, neighbours agree with the answer on %.1f %% / %.1f %% (test / "
             "val); %.0f s", path.name, round(measured * len(test)), len(test), len(record["test"]["mistakes"]),
             len(record["val"]["mistakes"]), 100 * agree["test"], 100 * agree["val"], time.perf_counter() - started)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.explore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, help=".safetensors checkpoints")
    p.add_argument("--data-dir", action="append", help="ImageFolder root(s) with train/ (default: the recipe's)")
    p.add_argument("--val-fraction", type=float, help="validation share (default: the recipe's, else 0.15)")
    p.add_argument("--data-root", help="the folder photos are named from (default: the one holding the data dirs)")
    p.add_argument("--test-dir", help="the test split (default: the recipe's test_dir)")
    p.add_argument("--map", default=explorer.DEFAULT_METHOD, choices=explorer.METHODS, help="the 2-D map (default: "
                   "%(default)s)")
    p.add_argument("--out", type=Path, help=f"the explorer file (default: {explorer.FILE} beside the checkpoints)")
    p.add_argument("--banks-only", action="store_true", help="write the banks, not the explorer record")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    out = args.out or args.checkpoints[0].parent / explorer.FILE
    records = explorer.Records.read(out).models
    nonfood = ([], []) if args.banks_only else nonfood_images()
    status = 0
    for path in args.checkpoints:
        try:
            record = explore(path, args, nonfood)
        except (CheckpointError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        if record is not None:
            records[path.stem] = record
    if not args.banks_only and records:
        print(f"wrote {explorer.write(records, out)} ({out.stat().st_size / 1e3:.0f} kB, {len(records)} models)")
    return status


if __name__ == "__main__":
    sys.exit(main())
