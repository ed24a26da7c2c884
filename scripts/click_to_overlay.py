"""Click-to-overlay in a real browser: seconds from pressing Classify on a photo the model has not seen
to its explanation overlay loaded on the page, and to the map's score shown under it (issue 22).

    python scripts/click_to_overlay.py [--photos 4] [--models effnet ...] [--data-dir ../shared/data/pizza_steak_sushi] [--json]

Starts app.py on the committed checkpoints (a free port), drives Debian's Chromium with Playwright
(as tests/test_browser.py does; $FOODVISION_CHROMIUM to use another), and for each model with its
default method: picks the model, then for each of --photos test photos new to that model uploads it,
clicks Classify and times, inside the page (performance.now), the click until the overlay's new
image has loaded, and until the faithfulness text appears. Prints the median and the range per
model. Run it on an idle machine: the times are its point (nothing is asserted).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cold_start import serving  # noqa: E402 - scripts/ is on the path when run

CHROMIUM = Path(os.environ.get("FOODVISION_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLICK = """async ([old, oldScore]) => {
    const t0 = performance.now();
    document.querySelector('#classify-btn').click();
    let overlay = null;
    for (;;) {
        const img = document.querySelector('#overlay img');
        if (overlay === null && img && img.src && img.src !== old && img.complete && img.naturalWidth > 0)
            overlay = performance.now() - t0;
        const score = document.querySelector('#faithfulness')?.textContent ?? '';
        if (overlay !== null && score.includes('deletion AUC') && score !== oldScore)
            return [overlay, performance.now() - t0, img.src];
        if (performance.now() - t0 > 120000) return [overlay, null, img?.src ?? ''];
        await new Promise(r => setTimeout(r, 5));
    }
}"""


SETTLED = """title => {  // the switch's own explanation of the photo shown has been scored
    const card = document.querySelector('#model-card')?.innerText ?? '';
    const busy = document.querySelector('#faithfulness.pending, #faithfulness .pending, #curves.pending, #curves .pending');
    return card.includes(title) && !busy && (document.querySelector('#faithfulness')?.textContent ?? '')
        .includes('deletion AUC');
}"""


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    from vit.explain.cli import image_paths  # the test photos, round-robin over the classes
    from vit.models import families

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=4, help="new photos per model")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "pizza_steak_sushi")
    p.add_argument("--json", action="store_true")
    p.add_argument("--models", nargs="+", metavar="ID", help="only these models (ids as in checkpoints/, default all)")
    p.add_argument("--verbose", action="store_true", help="each click's times and the page's timing text")
    args = p.parse_args(argv)
    unknown = set(args.models or ()) - set(families.names())
    if unknown:
        p.error(f"unknown model id(s) {sorted(unknown)}; choose from {list(families.names())}")
    rows = []
    with serving() as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.locator("#classify-btn").wait_for()
            ids = [i for i in families.names() if (ROOT / "checkpoints" / f"{i}.safetensors").is_file()
                   and (args.models is None or i in args.models)]
            pool = image_paths(args.data_dir, "test", (len(ids) + 1) * args.photos)

            def click(photo: Path) -> tuple[float | None, float | None]:
                page.locator("#image-input input[type=file]").set_input_files(str(photo))
                page.locator("#image-input img").first.wait_for()
                page.wait_for_timeout(500)
                old = page.evaluate("() => document.querySelector('#overlay img')?.src ?? ''")
                old_score = page.evaluate("() => document.querySelector('#faithfulness')?.textContent ?? ''")
                t_overlay, t_score, _ = page.evaluate(CLICK, [old, old_score])
                if args.verbose:
                    print(f"  {photo.name}: {t_overlay} ms / {t_score} ms; the page's timing: "
                          + page.locator("#timing").inner_text().replace("\n", " "), file=sys.stderr)
                return (None if t_overlay is None else t_overlay / 1e3), (None if t_score is None else t_score / 1e3)

            click(pool[0])  # untimed: the default model's first request (its first-call costs)
            for n, family in enumerate(ids):
                page.locator("#model-radio").get_by_label(families.get(family).title, exact=True).check()
                page.wait_for_function(SETTLED, arg=families.get(family).title, timeout=120_000)
                overlay, scored = [], []
                for photo in pool[(n + 1) * args.photos:(n + 2) * args.photos]:
                    t_overlay, t_score = click(photo)
                    if t_overlay is None or t_score is None:
                        print(f"{family}: {photo.name}: no overlay or score within 120 s", file=sys.stderr)
                        continue
                    overlay.append(t_overlay)
                    scored.append(t_score)
                if not overlay:
                    continue
                method = page.locator("#method-dropdown input").input_value()
                rows.append({"model": family, "method": method, "photos": len(overlay),
                             "overlay_s": statistics.median(overlay), "overlay_range": [min(overlay), max(overlay)],
                             "scored_s": statistics.median(scored)})
                r = rows[-1]
                print(json.dumps(r) if args.json else
                      f"{families.get(family).title} ({method}): click to overlay {r['overlay_s']:.2f} s "
                      f"(median of {r['photos']} new photos; {min(overlay):.2f}-{max(overlay):.2f}), "
                      f"to its score {r['scored_s']:.2f} s", flush=True)
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
