"""Regenerate the measured sections of the README and docs/ from the project's own files, never by hand.

    python -m vit.bench.readme                  # measures the latency column, saves it, rewrites the blocks
    python -m vit.bench.readme --performance    # ... and first runs vit.bench and the cold start (minutes), saved
    python -m vit.bench.readme --faithfulness   # ... and docs/explanations.md's table, from checkpoints/faithfulness.json
    python -m vit.bench.readme --explore        # ... and first `python -m vit.explore` on the checkpoints (minutes)
    python -m vit.bench.readme --from-records   # measures nothing: every block from its saved record
    python -m vit.bench.readme --print          # prints instead of rewriting (and saves nothing)

Each block lies between `<!-- name:start -->` and `<!-- name:end -->` in the file `BLOCK_FILES` names,
and is written from a committed record alone, so that tests/test_readme.py regenerates every block and
compares: the models table (README.md) and docs/results.md from the checkpoints' metadata (accuracy,
data, recipe) and `LATENCY` (the median of warm batch-size-1 forward passes, naming the machine);
docs/performance.md from `BENCH` (`python -m vit.bench`'s result plus `scripts/cold_start.py`'s);
docs/trust.md from checkpoints/ood.json (`python -m vit.trust.ood`); docs/explanations.md's table from
checkpoints/faithfulness.json (`python -m vit.explain`); docs/inside.md's tables and figures from
checkpoints/inside.json (`python -m vit.explore.inside`); docs/explore.md's tables and figure from
checkpoints/explorer.json and the banks (`python -m vit.explore`); docs/performance.md's issue-31 tables
from checkpoints/speed.json (`python -m vit.bench.speed`, before and after) and docs/explanations.md's
score check from checkpoints/score_bar.json (`scripts/score_bar_check.py`), both by vit.bench.speed_tables;
docs/package.md's module table from the modules' own docstrings.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import vit
from vit.bench.cli import Settings, run
from vit.bench.explore_tables import explore_block, write_figure
from vit.bench.inside_tables import inside_block, write_figures
from vit.bench.speed_tables import score_bar_block, speed_block
from vit.bench.machine import machine_info
from vit.bench.report import performance_markdown
from vit.explain.cli import markdown
from vit.models import families
from vit.models.checkpoint import CheckpointError, describe_epochs, describe_init
from vit.models.factory import load
from vit.serve.model_set import checkpoint_paths
from vit.serve.predictor import time_forward

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK_FILES = {"models": ROOT / "README.md", "results": DOCS / "results.md", "performance": DOCS / "performance.md",
               "faithfulness": DOCS / "explanations.md", "trust": DOCS / "trust.md", "package": DOCS / "package.md",
               "inside": DOCS / "inside.md", "road": DOCS / "explanations.md", "explore": DOCS / "explore.md",
               "speed": DOCS / "performance.md", "score_bar": DOCS / "explanations.md"}


def machine() -> str:
    """CPU model, cores, torch threads and version: where a timing was taken."""
    m = machine_info()
    return f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads"


LATENCY = ROOT / "checkpoints" / "latency.json"  # the results block's latency column, as last measured
BENCH = ROOT / "checkpoints" / "bench.json"  # the performance block's benchmark and cold start, as last measured


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def save_record(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def measure_performance(runs: int = 30) -> dict:
    """The performance block's record: `vit.bench.run` on the served checkpoints, then the app's cold start
    measured by scripts/cold_start.py, with and without the ONNX exports on disk."""
    record = {"command": f"python -m vit.bench.readme --performance --runs {runs}", "created": now(),
              "bench": run(checkpoint_paths(), Settings(runs=runs)), "cold_start": {}}
    for name, extra in (("exports", []), ("fresh", ["--without-exports"])):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "cold_start.py"), "--json", *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=900)
        if done.returncode:
            record["cold_start"] = {"error": f"`scripts/cold_start.py {' '.join(extra)}` failed "
                                             f"({done.stderr.strip()[-300:]})"}
            break
        record["cold_start"][name] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def performance_block(record: dict) -> str:
    """The benchmark's Markdown, then the app's cold start, from `measure_performance`'s record."""
    text = performance_markdown(record["bench"])
    if "error" in record["cold_start"]:
        return text + f"\n\nCold start: {record['cold_start']['error']}."
    c, f = record["cold_start"]["exports"], record["cold_start"]["fresh"]
    return text + (f"\n\n**Cold start** (`python scripts/cold_start.py`, same machine, {c['model']} asked for): "
                   f"the server answers {c['server_up_s']:.1f} s after `python app.py` starts ({c['server_up_ratio']:.2f} x "
                   f"the floor, `python -c \"import gradio, torch\"`: {c['floor_s']:.1f} s in the same run) and serves its "
                   f"first prediction {c['first_prediction_s']:.1f} s after the start ({c['first_prediction_ratio']:.2f} x "
                   f"the floor), answered by ONNX Runtime from the export on disk without importing timm (a fresh "
                   f"clone has the committed ones); a warm `/predict` request then takes {c['warm_request_s'] * 1e3:.0f} ms "
                   f"end to end through the API. A folder of checkpoints without exports (your own, on their first "
                   f"launch; `--without-exports`): server up "
                   f"{f['server_up_s']:.1f} s ({f['server_up_ratio']:.2f} x its floor of {f['floor_s']:.1f} s), first "
                   f"prediction {f['first_prediction_s']:.1f} s ({f['first_prediction_ratio']:.2f} x; it builds the model, "
                   f"and importing timm alone takes the floor to {f['floor_with_timm_s']:.1f} s), and it writes the "
                   f"exports that every later launch starts from.")


def measure_latency(runs: int = 30) -> dict:
    """The results block's latency record: each served checkpoint's median of `runs` warm forward passes at
    batch size 1, here and now, and the machine."""
    p50 = {}
    for family, path in checkpoint_paths().items():
        try:
            ckpt = load(path)
        except CheckpointError:
            continue
        size = ckpt.preprocessing.image_size
        p50[family] = float(np.median(time_forward(ckpt.model, torch.zeros(1, 3, size, size), runs=runs, warmup=5)))
    return {"command": f"python -m vit.bench.readme --runs {runs}", "created": now(), "machine": machine(),
            "runs": runs, "p50_ms": p50}


def results_block(latency: dict) -> str:
    """The models and their figures: the checkpoints' own metadata, and `latency` (`measure_latency`'s record)."""
    rows, classes_rows, curves = [], [], []
    for family, path in checkpoint_paths().items():
        try:
            ckpt = load(path, lazy=True)
        except CheckpointError as e:
            rows.append(f"| {family} | missing: {e} | | | | | | |")
            continue
        m, r, title = ckpt.meta, ckpt.meta["recipe"], families.get(ckpt.family).title
        test, val = m["metrics"]["test"], m["metrics"].get("val", {})
        p50 = f"{latency['p50_ms'][family]:.1f}" if family in latency["p50_ms"] else "not measured"
        init = describe_init(m["init"]) if m["init"].get("weights") == "checkpoint" else \
            m["init"]["weights"] + (f" ({m['init']['source'].split(':')[0]})" if m["init"].get("source") else "")
        data = f"{r['n_train']} train + {r['n_val']} val photos"
        if r.get("distillation"):
            data += f"; distilled from {families.get(r['distillation']['teacher_family']).title}"
        rows.append(f"| {title} | {init} | {data} | {describe_epochs(r, short=True)} (best: {r['selected_epoch']}) "
                    f"| **{test['accuracy']:.1%}** ({round(test['accuracy'] * test['n_images'])}/{test['n_images']}) "
                    f"| {m['num_params'] / 1e6:.2f} M | {ckpt.size_mb:.1f} | {p50} |")
        per_class = " / ".join(f"{v:.0%}" for v in test["per_class_accuracy"].values())
        classes_rows.append(f"| {title} | {per_class} | {val.get('accuracy', float('nan')):.1%} "
                            f"| {test['loss']:.3f} | `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}` |")
        curves.append(f"![{title} training curves](../checkpoints/{family}.png)")  # from docs/
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
        f"CPU p50: median of {latency['runs']} warm forward passes at batch size 1, measured by "
        f"`python -m vit.bench.readme` on {latency['machine']}.",
        "",
        *curves,
    ])


def models_block(results: str) -> str:
    """The README's one table of the models: the first table of the results block, and where the rest is."""
    table = results.split("\n\n", 1)[0]
    return (table + "\n\nTest split: `pizza_steak_sushi/test` (75 photos), never used for training or model selection. "
            "Per-class accuracy, training curves and how the scratch ViT got there: [docs/results.md](docs/results.md).")


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


FAITHFULNESS = ROOT / "checkpoints" / "faithfulness.json"


def faithfulness_block(path: Path = FAITHFULNESS) -> str:
    """`python -m vit.explain --json`'s saved output (checkpoints/faithfulness.json) as its Markdown
    table, with the run's size and commands under it."""

    run = json.loads(path.read_text())
    commands = "; ".join(f"`{c}`" for c in run.get("commands", []))
    text = (markdown(run["results"]) + f"\n\n{run['images']} photos of `{run['data_dir']}/{run['split']}`, "
            f"K = {run['steps']}, random bar: seeds {run['seeds']}. Made by {commands}. {run.get('note', '')}")
    held = run.get("held_out")
    if held:  # the same scores on photos no choice was made on
        text += (f"\n\n**Held out:** the other {held['images']} photos of the split (`--skip {held['skipped']}`), "
                 f"on which no method or default was chosen:\n\n" + markdown(held["results"])
                 + f"\n\nMade by `{held['command']}`.")
    return text


def road_block(path: Path = FAITHFULNESS) -> str:
    """The ROAD table of docs/explanations.md from the `road` run saved in checkpoints/faithfulness.json: per
    model, each method's deletion / insertion ratios beside ROAD's MoRF and LeRF, each method's rank within
    its model under both (by insertion minus deletion ratio, and by LeRF minus MoRF), best first."""
    run = json.loads(path.read_text())["road"]
    lines = ["| model | method | del/rand ↓ | ins/rand ↑ | ins − del ↑ | rank | ROAD MoRF ↓ | ROAD LeRF ↑ | "
             "LeRF − MoRF ↑ | rank |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model, per_method in run["results"].items():
        pair = {m: r["insertion_ratio"] - r["deletion_ratio"] for m, r in per_method.items()}
        road_rank = {m: i + 1 for i, m in enumerate(sorted(per_method, key=lambda m: -per_method[m]["road_combined"]))}
        for i, m in enumerate(sorted(per_method, key=lambda m: -pair[m])):
            r = per_method[m]
            lines.append(f"| {model} | {m} | {r['deletion_ratio']:.2f} | {r['insertion_ratio']:.2f} | {pair[m]:.2f} | "
                         f"{i + 1} | {r['road_morf']:.3f} | {r['road_lerf']:.3f} | {r['road_combined']:.3f} | "
                         f"{road_rank[m]} |")
    agreement = ", ".join(f"{m} {rho:.2f}" for m, rho in run["agreement"].items())
    return ("\n".join(lines) + f"\n\nMade by `{run['command']}` (saved under `road` in `checkpoints/faithfulness.json`)."
            f" Rank agreement between the two metrics (Spearman ρ over each model's methods): {agreement}.")


OOD_RUN = ROOT / "checkpoints" / "ood.json"


def trust_block(path: Path = OOD_RUN) -> str:
    """`python -m vit.trust.ood`'s saved run (checkpoints/ood.json) as three tables: the out-of-distribution gate,
    calibration by temperature scaling, and the conformal prediction sets, per model."""
    run = json.loads(path.read_text())
    n_report = run["nonfood"]["halves"].count("report")
    ood = ["| model | gate | AUROC | FPR@95 | test food accepted | non-food flagged | kNN on the model's own "
           "features: AUROC |", "|---|---|---|---|---|---|---|"]
    cal = ["| model | T | ECE before → after | after: 95 % interval | perfectly calibrated, by chance: median / "
           "95th pct | after, other bins: 10 / 20 / equal-mass | NLL before → after | test accuracy |",
           "|---|---|---|---|---|---|---|---|"]
    sets = ["| model | method | q̂ | coverage | mean set size |", "|---|---|---|---|---|"]
    for r in run["runs"]:
        title, g = families.get(r["family"]).title if r["family"] in families.names() else r["family"], r["gate"]
        if g is None:
            ood.append(f"| {title} | no gate | | | | | |")
            continue
        mine = _detector(r, g["features"], g["detector"], g["params"])
        own = _detector(r, "own", g["detector"], g["params"])
        k = ", ".join(f"{key} = {v}" for key, v in g["params"].items())
        ood.append(f"| {title} | {g['detector']} ({k}) on {g['features']} | {mine['auroc']:.3f} | {mine['fpr95']:.3f} "
                   f"| {g['test_food_accepted']:.1%} of {r['n_test']} | {g['nonfood_flagged']:.1%} of {r['n_nonfood']} "
                   f"| {own['auroc']:.3f} |")
        lo, hi = g.get("test_ece_after_interval", (float("nan"),) * 2)
        chance = g.get("test_ece_by_chance", {"median": float("nan"), "p95": float("nan")})
        binned = " / ".join(f"{v:.3f}" for v in g.get("test_ece_after_by_binning", {}).values()) or "—"
        cal.append(f"| {title} | {g['temperature']:.3f} | {g['test_ece_before']:.3f} → {g['test_ece_after']:.3f} "
                   f"| {lo:.3f}–{hi:.3f} | {chance['median']:.3f} / {chance['p95']:.3f} | {binned} "
                   f"| {g['test_nll_before']:.3f} → {g['test_nll_after']:.3f} | {g['test_accuracy']:.1%} |")
        c = g["conformal"]
        sets.append(f"| {title} | {c['method'].upper()} at {1 - c['alpha']:.0%} ({c['n_calibration']} calibration "
                    f"photos) | {c['qhat']:.3f} | {g['test_coverage']:.1%} | {g['test_mean_set_size']:.2f} |")
    return "\n".join([*ood, "", f"AUROC and FPR@95 (false-positive rate at 95 % true-positive rate): validation food "
                       f"against the report half of the non-food set ({n_report} of {run['nonfood']['n']} images; the "
                       "other half chose the detector); accepted / flagged: the stored threshold on the test food and on "
                       "every non-food image.", "", *cal, "", f"On the test split: ECE with {run['ece_bins']} equal-width "
                       "bins of the top-class probability (Guo et al. 2017, Eq. 3); T fitted on the validation photos. "
                       "The interval resamples the test photos (bootstrap, 2000 draws); *by chance* is the ECE that a "
                       "perfectly calibrated model with the same confidences shows on this many photos (each top "
                       "class drawn correct with its own probability, 2000 draws; Bröcker & Smith 2007): an ECE "
                       "below its 95th percentile is no evidence of miscalibration. *Other bins*: the same ECE "
                       f"with 10 and 20 equal-width bins and with {run['ece_bins']} bins of equal photo counts (Nixon "
                       "et al. 2019); on 75 photos it moves with where the bin edges fall.",
                       "", *sets, "", f"Coverage and mean size of the sets on the test split. Made by `{run['command']}` "
                       f"({run['created']})."])


def _detector(run: dict, features: str, detector: str, params: dict) -> dict:
    """The report-half figures of one detector in a vit.trust.ood run (NaN where it was not measured)."""
    found = next((d for d in run["detectors"].get(features, []) if d["detector"] == detector and d["params"] == params),
                 None)
    return found["report"] if found else {"auroc": float("nan"), "fpr95": float("nan")}


def summary(path: Path) -> str:
    """A module's docstring, first sentence ("et al.", "e.g.", "Sec.", "Fig.", "Eq." do not end one), on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<!et al)(?<!e\.g)(?<!Sec)(?<!Fig)(?<!Eq)\.(?:\s|$)", paragraph, maxsplit=1)[0].rstrip(".") + ("." if paragraph else "")


def package_block(root: Path = ROOT) -> str:
    """docs/package.md's table: every module of `vit`, layer by layer (vit.LAYERS), each with the first sentence
    of its docstring and, for a command-line tool, its command."""
    lines = ["| layer | module | what it holds |", "|---|---|---|",
             f"| | `vit/__init__.py` | {summary(root / 'vit' / '__init__.py')} |"]
    for n, layer in enumerate(vit.LAYERS, start=1):
        for name in layer:
            folder = root / "vit" / name
            paths = sorted(folder.glob("*.py")) if folder.is_dir() else sorted(root.glob(f"vit/{name}.py"))
            for path in paths:
                if path.name == "__main__.py":
                    continue
                module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                command = (f" `python -m {module.removesuffix('.cli')}`" if path.stem == "cli"
                           else f" `python -m {module}`" if '__name__ == "__main__"' in path.read_text() else "")
                lines.append(f"| {n} | `{path.relative_to(root)}` | {summary(path)}{command} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.bench.readme", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="the folder holding README.md and docs/ (default: this clone)")
    p.add_argument("--runs", type=int, default=30, help="timed forward passes per model")
    p.add_argument("--performance", action="store_true",
                   help=f"first run the benchmark and the cold start, saved in {BENCH.name} (minutes)")
    p.add_argument("--faithfulness", action="store_true", help=f"also the explanations table, from {FAITHFULNESS.name}")
    p.add_argument("--explore", action="store_true", help="first run python -m vit.explore on the checkpoints (minutes)")
    p.add_argument("--from-records", action="store_true",
                   help=f"measure nothing: every block from its saved record ({LATENCY.name}, {BENCH.name}, ...)")
    p.add_argument("--print", action="store_true", help="print the blocks instead of rewriting the README")
    args = p.parse_args(argv)
    if args.from_records and (args.performance or args.explore):
        p.error("--from-records measures nothing: drop --performance and --explore")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.explore:
        subprocess.run([sys.executable, "-m", "vit.explore", *map(str, checkpoint_paths().values())], cwd=ROOT,
                       check=True)
    latency = json.loads(LATENCY.read_text()) if args.from_records else measure_latency(args.runs)
    performance = measure_performance(args.runs) if args.performance else json.loads(BENCH.read_text())
    if not args.print:  # a new measurement is kept beside the blocks written from it
        for path, record, measured in ((LATENCY, latency, not args.from_records), (BENCH, performance, args.performance)):
            if measured:
                print(f"saved {save_record(path, record)}")
    results = results_block(latency)
    blocks = {"models": models_block(results), "results": results, "trust": trust_block(),
              "performance": performance_block(performance), "package": package_block(),
              "inside": inside_block(), "explore": explore_block(), "speed": speed_block(),
              "score_bar": score_bar_block()}
    if args.faithfulness or args.from_records:
        blocks["faithfulness"], blocks["road"] = faithfulness_block(), road_block()
    if args.print:
        print("\n\n".join(blocks.values()))
        return 0
    for name, block in blocks.items():
        path = Path(args.root) / BLOCK_FILES[name].relative_to(ROOT)
        path.write_text(replace_block(path.read_text(), name, block))
        print(f"updated the {name} block of {path}")
    docs = Path(args.root) / DOCS.relative_to(ROOT)
    for path in [*write_figures(docs), write_figure(docs)]:
        print(f"drew {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
