"""The gate's input side against its cost and its verdicts (issue 20, docs/trust.md#cost).

    python scripts/gate_input_size.py [--sides 224 160 128 112] [--data-dir DIR --data-dir DIR] [--json]

For each side: the shared ImageNet Lite0 (vit.trust.backbone) on ONNX Runtime, its input resized to that
side (the same crop fraction), a kNN gate (k = 10) fitted on the training photos and thresholded at 97.5 %
of the validation photos, as vit.trust.fit does; then the share of test food accepted, of the offline
non-food set (vit.data.nonfood) flagged, AUROC (test food against non-food), the example photos
accepted, and the median time of the backbone's pass and of its resize on one test photo (batch 1).
Run it on an idle machine: the times are its point.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from vit.data import nonfood
from vit.data.datasets import list_images, split_train_val, train_samples  # noqa: E402
from vit.data.images import open_image  # noqa: E402
from vit.data.preprocess import eval_transform  # noqa: E402
from vit.trust import backbone  # noqa: E402
from vit.trust.detectors import KNN, auroc, threshold_at_tpr  # noqa: E402
from vit.trust.fit import TPR, VAL_FRACTION, K  # noqa: E402


def session(path: str):
    """An ONNX Runtime session of the pooled Lite0 with a free batch, height and width."""
    import onnxruntime as ort

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone._Pooled(backbone.build_model()).eval(), (torch.randn(1, 3, 224, 224),), path,
                          dynamo=False, input_names=["image"], output_names=["features"], opset_version=17,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def median_ms(fn, runs: int = 40, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=[224, 160, 128, 112])
    p.add_argument("--data-dir", action="append", help="ImageFolder roots with train/ (default: the two in ../shared/data)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    dirs = [Path(d) for d in args.data_dir or (DATA / "pizza_steak_sushi_20_percent", DATA / "pizza_steak_sushi")]
    train, val = split_train_val(train_samples(dirs)[0], VAL_FRACTION)
    test = list_images(next(d / "test" for d in dirs if (d / "test").is_dir()))[0]
    photos = {"train": [open_image(s.path) for s in train], "val": [open_image(s.path) for s in val],
              "test": [open_image(s.path) for s in test], "nonfood": [x.image for x in nonfood.nonfood_set()],
              "examples": [open_image(x) for x in sorted((ROOT / "examples").iterdir())
                           if x.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]}
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        sess = session(path)
        rows = []
        for side in args.sides:
            transform = eval_transform(dict(backbone.PREPROCESSING, input_size=[3, side, side]))

            def features(images, transform=transform):
                return torch.cat([torch.from_numpy(sess.run(["features"], {"image": torch.stack(
                    [transform(im.convert("RGB")) for im in images[i:i + 32]]).numpy()})[0])
                    for i in range(0, len(images), 32)])
            f = {name: features(images) for name, images in photos.items()}
            knn = KNN(k=K).fit(f["train"])
            s = {name: knn.score(v) for name, v in f.items()}
            threshold = threshold_at_tpr(s["val"], TPR)
            photo = photos["test"][0].convert("RGB")
            x = transform(photo).unsqueeze(0).numpy()
            rows.append({"side": side, "backbone_ms": median_ms(lambda: sess.run(["features"], {"image": x})),
                         "resize_ms": median_ms(lambda: transform(photo), runs=20),
                         "test_food_accepted": float((s["test"] <= threshold).float().mean()),
                         "nonfood_flagged": float((s["nonfood"] > threshold).float().mean()),
                         "auroc": auroc(s["test"], s["nonfood"]),
                         "examples_accepted": f"{int((s['examples'] <= threshold).sum())} of {len(s['examples'])}"})
            print(json.dumps(rows[-1]) if args.json else
                  "{side} px: backbone {backbone_ms:.1f} ms + resize {resize_ms:.1f} ms; test food accepted "
                  "{test_food_accepted:.1%}, non-food flagged {nonfood_flagged:.1%}, AUROC {auroc:.4f}, examples "
                  "accepted {examples_accepted}".format(**rows[-1]), flush=True)
    finally:
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
