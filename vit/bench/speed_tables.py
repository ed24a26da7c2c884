"""The generated parts of issue 31's figures: docs/performance.md's *One pass for every model* (two runs of
`python -m vit.bench.speed` in one sitting, before and after the change, saved in checkpoints/speed.json)
and docs/explanations.md's check of the request's cheaper score (`scripts/score_bar_check.py`, saved in
checkpoints/score_bar.json).

Written by `python -m vit.bench.readme` with the other tables, from the records alone.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from vit.explain import methods as registry

ROOT = Path(__file__).resolve().parents[2]
RISE = next(m for m in registry.ids() if registry.title(m) == "RISE")  # the map the issue's ratio is against
SPEED = ROOT / "checkpoints" / "speed.json"  # issue 31's figures, before and after, from `python -m vit.bench.speed`


def _pair(before, after, fmt: str) -> str:
    """'before → after', a missing side shown as –."""
    def show(v) -> str:
        return "–" if v is None else format(v, fmt)
    return f"{show(before)} → **{show(after)}**"


def speed_block(path: Path = SPEED) -> str:
    """docs/performance.md's issue-31 tables from checkpoints/speed.json: two `python -m vit.bench.speed` runs
    of one sitting, `before` on the code before the change and `after` on this one, the same photos in both.
    Per model: the default map's time against RISE's before (the same photos, photo by photo), the score's
    server time, click -> overlay and click -> score in Chromium, /predict against two bare ONNX Runtime
    sessions; then the app's memory over two bursts."""
    record = json.loads(path.read_text())
    before, after = record["before"], record["after"]
    lines = ["| model | default map (before → after) | its map, ms | ÷ RISE before (≤ 0.15) | score, ms (≤ 500) | "
             "click → overlay, s (≤ 0.3) | click → score, s (≤ 0.8) | request ÷ bare sessions (≤ 1.1) | same top-1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, a in after["models"].items():
        b = before["models"].get(name, {})
        bm, am = b.get("maps", {}), a["maps"]
        rise = {r["photo"]: r["map_ms"] if r["default"] == RISE else r["rise_map_ms"]  # RISE the default: its map
                for r in bm.get("rows", ()) if r.get("rise_map_ms") is not None}
        over = [r["map_ms"] / rise[r["photo"]] for r in am["rows"] if r["photo"] in rise]
        bc, ac = before.get("clicks", {}).get(name, {}), after.get("clicks", {}).get(name, {})
        br, ar = b.get("request", {}), a["request"]
        lines.append(f"| {name} | {bm.get('default', '–')} → {am['default']} | {_pair(bm.get('map_ms'), am['map_ms'], '.0f')} | "
                     f"{statistics.median(over):.2f} | {_pair(bm.get('score_ms'), am['score_ms'], '.0f')} | "
                     f"{_pair(bc.get('overlay_s'), ac.get('overlay_s'), '.2f')} | "
                     f"{_pair(bc.get('scored_s'), ac.get('scored_s'), '.2f')} | "
                     f"{_pair(br.get('ratio', {}).get('p50'), ar.get('ratio', {}).get('p50'), '.2f')} | "
                     f"{'yes' if ar.get('top1_same') else 'no'} |")
    memory = ["| app | after start | after warm-up | after burst 1 | after burst 2 | burst 1 grows (≤ 300) | "
              "burst 2 grows (≤ 50) | requests: answered / queue full / failed / hung |", "|---|---|---|---|---|---|---|---|"]
    for when, run in (("before", before), ("after", after)):
        m = run["memory"]
        rss, growth = m["rss_mb"], m["growth_mb"]
        ends = " + ".join(f"{b['answered']} / {b['queue_full']} / {b['failed']} / {b['hung']}" for b in m["bursts"])
        memory.append(f"| {when} | {rss['start']:.0f} MB | {rss['warm']:.0f} MB | {rss['burst 1']:.0f} MB | "
                      f"{rss['burst 2']:.0f} MB | {growth['warm -> burst 1']:+.0f} MB | {growth['burst 1 -> burst 2']:+.0f} MB | {ends} |")
    cold = {when: run.get("cold_start", {}) for when, run in (("before", before), ("after", after))}
    if all("server_up_s" in c for c in cold.values()):
        b, a = cold["before"], cold["after"]
        memory.append(f"\n**Cold start** (`scripts/cold_start.py`, median of {a['runs']}): server up "
                      f"{_pair(b['server_up_s'], a['server_up_s'], '.1f')} s ({a['server_up_s'] / b['server_up_s'] - 1:+.0%}; "
                      f"{b['server_up_ratio']:.2f} → {a['server_up_ratio']:.2f} × the floor of the same run), first "
                      f"prediction {_pair(b['first_prediction_s'], a['first_prediction_s'], '.1f')} s "
                      f"({a['first_prediction_s'] / b['first_prediction_s'] - 1:+.0%}; {b['first_prediction_ratio']:.2f} → "
                      f"{a['first_prediction_ratio']:.2f} × the floor).")
    return ("\n".join(lines) + "\n\n" + "\n".join(memory) +
            f"\n\nMade by `{after['command']}` on {after['machine']['cpu']}, {after['machine']['cores']} cores ({after['created']}; load average at its end "
            f"{after['load_avg_end']:.2f}), and before it by `{before['command']}` on the code before the change "
            f"({before['created']}), the same {after['models'][next(iter(after['models']))]['maps']['photos']} test "
            "photos in both, saved in `checkpoints/speed.json`.")


SCORE_BAR = ROOT / "checkpoints" / "score_bar.json"  # the request's score, K = 10 with separate or shared masks


def score_bar_block(path: Path = SCORE_BAR) -> str:
    """docs/explanations.md's check of the request's cheaper score (issue 31) from checkpoints/score_bar.json
    (scripts/score_bar_check.py): per model and method, deletion / insertion over random with the random
    orders' masks separate (until issue 31) and shared by both curves, their ranks and bar verdicts."""
    record = json.loads(path.read_text())
    lines = ["| model | method | separate: del / ins ÷ random | shared | ranks (del, ins) the same | bar verdict |",
             "|---|---|---|---|---|---|"]
    for name, r in record["results"].items():
        for m, a in r["separate"].items():
            b = r["shared"][m]
            same = (a["rank_deletion"], a["rank_insertion"]) == (b["rank_deletion"], b["rank_insertion"])
            verdict = ("clears" if b["meets_bar"] else "misses") if a["meets_bar"] == b["meets_bar"] else \
                f"{'clears' if a['meets_bar'] else 'misses'} → **{'clears' if b['meets_bar'] else 'misses'}**"
            default = " (default)" if m == r["default"] else ""
            lines.append(f"| {name} | {m}{default} | {a['deletion_ratio']:.3f} / {a['insertion_ratio']:.3f} | "
                         f"{b['deletion_ratio']:.3f} / {b['insertion_ratio']:.3f} | {'yes' if same else '**no**'} | {verdict} |")
    first = next(iter(record["results"].values()))
    return ("\n".join(lines) + f"\n\n{first['photos']} held-out test photos a model, K = {first['steps']['shared']} "
            f"steps both ways. Made by `{record['command']}` ({record['created']}), saved in `checkpoints/score_bar.json`.")
