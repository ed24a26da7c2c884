"""Does the request's cheaper score change any verdict? (issue 31: the score in half a second)

Until issue 31 a request scored its map with K = 10 steps against two random orders whose deletion and
insertion curves ran separate masks (58 images a photo). The cheaper setting: each order's masks serve
both curves (explain.random_curves(shared=True)), with the same two seeds, at K = --steps (the
predictor's SCORE_STEPS). On the held-out test photos (the first 30, on which the defaults were chosen,
skipped), per model and method: deletion / insertion AUC over random both ways, each method's rank by
either ratio, and whether it clears the bar (deletion <= 0.85, insertion >= 1.15 x random). The maps are
computed once and scored both ways, so only the score differs.

    python scripts/score_bar_check.py --data-dir ../shared/data/pizza_steak_sushi [--steps K] [--skip 30] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit.data.preprocess import split_eval_transform  # noqa: E402
from vit.explain import compute, random_curves, score  # noqa: E402
from vit.explain import methods as registry  # noqa: E402
from vit.explain.cli import BAR_DELETION, BAR_INSERTION, image_paths  # noqa: E402
from vit.models import families  # noqa: E402
from vit.models.factory import load  # noqa: E402
from vit.runtime.choice import make_engine  # noqa: E402
from vit.serve.predictor import SCORE_SEEDS, SCORE_STEPS  # noqa: E402

BARS = ("separate", "shared")  # until issue 31 (K = 10, separate masks) and the cheaper setting
BEFORE_STEPS = 10


def check(path: Path, photos: list[Path], steps: int = SCORE_STEPS) -> dict:
    ckpt = load(path)
    model, forward = ckpt.model.eval(), make_engine(ckpt).forward
    view, to_tensor = split_eval_transform(ckpt.meta["preprocessing"])
    methods = registry.of(families.get(ckpt.family))
    sums = {(m, b): np.zeros(4) for m in methods for b in BARS}  # deletion, insertion, random del., random ins.
    for photo in tqdm(photos, desc=path.stem, unit="img"):
        x = to_tensor(view(Image.open(photo).convert("RGB"))).unsqueeze(0)
        bars = {}
        for method in methods:
            h = compute(model, x, method, forward_batch=forward)
            for b in BARS:
                key = (b, h.heat.shape, h.target)
                k = steps if b == "shared" else BEFORE_STEPS
                if key not in bars:
                    bars[key] = random_curves(forward, x, h.heat.shape, h.target, steps=k, seeds=SCORE_SEEDS,
                                              shared=b == "shared")
                f = score(forward, x, h.heat, h.target, steps=k, seeds=SCORE_SEEDS, random=bars[key])
                sums[method, b] += [f.deletion_auc, f.insertion_auc, f.random_deletion_auc, f.random_insertion_auc]
    out = {}
    for b in BARS:
        ratios = {m: (sums[m, b][0] / sums[m, b][2], sums[m, b][1] / sums[m, b][3]) for m in methods}
        by_deletion = sorted(methods, key=lambda m: ratios[m][0])
        by_insertion = sorted(methods, key=lambda m: -ratios[m][1])
        out[b] = {m: {"deletion_ratio": round(ratios[m][0], 4), "insertion_ratio": round(ratios[m][1], 4),
                      "rank_deletion": by_deletion.index(m) + 1, "rank_insertion": by_insertion.index(m) + 1,
                      "meets_bar": bool(ratios[m][0] <= BAR_DELETION and ratios[m][1] >= BAR_INSERTION)}
                  for m in methods}
    same = all(out["separate"][m][k] == out["shared"][m][k] for m in methods
               for k in ("rank_deletion", "rank_insertion", "meets_bar"))
    return {"default": methods[0], "photos": len(photos), "steps": {"separate": BEFORE_STEPS, "shared": steps},
            "same_ranks_and_verdicts": same, **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--skip", type=int, default=30, help="leave out the first N test photos (default: %(default)s)")
    p.add_argument("--checkpoints", nargs="+", type=Path, default=sorted((ROOT / "checkpoints").glob("*.safetensors")))
    p.add_argument("--steps", type=int, default=SCORE_STEPS, help="K of the cheaper setting (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    photos = image_paths(args.data_dir, "test", None)[args.skip:]
    result = {c.stem: check(c, photos, args.steps) for c in args.checkpoints}
    for name, r in result.items():
        print(f"{name} ({r['photos']} photos, default {r['default']}): ranks and verdicts the same: "
              f"{r['same_ranks_and_verdicts']}")
        for m in r["separate"]:
            a, b = r["separate"][m], r["shared"][m]
            print(f"  {m:10s} separate {a['deletion_ratio']:.3f} / {a['insertion_ratio']:.3f} "
                  f"(ranks {a['rank_deletion']}, {a['rank_insertion']}, bar {a['meets_bar']})   shared "
                  f"{b['deletion_ratio']:.3f} / {b['insertion_ratio']:.3f} (ranks {b['rank_deletion']}, "
                  f"{b['rank_insertion']}, bar {b['meets_bar']})")
    if args.json:
        record = {"command": "python scripts/score_bar_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": result}
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
