"""Issue 22's bar, checked as a visitor's client would: through the running app's API, not the library.

    python scripts/explain_bar.py [--photos 45] [--skip 30] [--data-dir ../shared/data/pizza_steak_sushi]

Starts app.py on the committed checkpoints (a free port), waits until every model has built its
PyTorch model, and with gradio_client:
- prints `/methods`;
- for each model, `/explain` with its default method (method left empty) on --photos test photos
  after the first --skip (the 45 on which no default was chosen, by default), and prints the
  deletion and insertion AUCs against the random bar, as ratios of their means (the bar: <= 0.85
  and >= 1.15), with the median `map_ms`;
- for each model, every method's `map_ms` on two photos outside those (a map the app has made before
  comes from its cache, in 0 ms), and the default's as a multiple of each (the bar: the ViTs' `lrp`
  in <= 0.15 x the time of their RISE).
Nothing is asserted: the figures are the point. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cold_start import serving  # noqa: E402 - scripts/ is on the path when run

SETTLE_S = 30  # after the server answers: the models build their PyTorch copies behind it


def main(argv: list[str] | None = None) -> int:
    from gradio_client import Client, handle_file

    from vit.explain.cli import BAR_DELETION, BAR_INSERTION, image_paths, summarise

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=45, help="photos per model")
    p.add_argument("--skip", type=int, default=30, help="skip the first N test photos (those the defaults were chosen on)")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "pizza_steak_sushi")
    args = p.parse_args(argv)
    every = image_paths(args.data_dir, "test", None)
    photos = every[args.skip:args.skip + args.photos]
    others = every[:args.skip] + every[args.skip + args.photos:]  # new to the app for lrp vs rise: no cached map
    if not photos:
        p.error(f"no test photos under {args.data_dir} after skipping {args.skip}")
    with serving() as url:
        time.sleep(SETTLE_S)
        client = Client(url, verbose=False)
        methods = client.predict(api_name="/methods")
        print(f"/methods: {methods}", flush=True)
        for model, offered in methods.items():
            records = [client.predict(handle_file(str(photo)), model, "", api_name="/explain")[1] for photo in photos]
            s = summarise({"rho": [], **{k: [r[f"{k}_auc"] for r in records]
                                         for k in ("deletion", "insertion", "random_deletion", "random_insertion")}})
            print(f"{model}, default {records[0]['method']}: {len(records)} photos through /explain: deletion "
                  f"{s['deletion_ratio']:.3f} x random, insertion {s['insertion_ratio']:.3f} x random "
                  f"(bar <= {BAR_DELETION}, >= {BAR_INSERTION}: {'met' if s['meets_bar'] else 'NOT met'}); "
                  f"median map_ms {statistics.median(r['map_ms'] for r in records):.0f}", flush=True)
            default = records[0]["method"]
            for photo in others[:2]:
                ms = {m: client.predict(handle_file(str(photo)), model, m, api_name="/explain")[1]["map_ms"]
                      for m in offered}
                print(f"{model}, {photo.name}: map_ms of {default} {ms[default]:.1f}; of the others, and "
                      f"{default}'s as a multiple of theirs: " + ", ".join(
                          f"{m} {v:.1f} ({ms[default] / v:.3f} x)" for m, v in ms.items() if m != default and v > 0),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
