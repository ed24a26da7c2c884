"""Regenerate the measured sections of the README and docs/ from the project's own files, never by hand.

    python -m vit.bench.readme                  # rewrites the models table (README.md) and docs/results.md in place
    python -m vit.bench.readme --performance    # ... and docs/performance.md (runs vit.bench, minutes)
    python -m vit.bench.readme --faithfulness   # ... and docs/explanations.md's table, from checkpoints/faithfulness.json
    python -m vit.bench.readme --explore        # ... and first `python -m vit.explore` on the checkpoints (minutes)
    python -m vit.bench.readme --print          # prints instead of rewriting
    (always: docs/trust.md's tables, from checkpoints/ood.json, the saved `python -m vit.trust.ood` run,
    docs/explore.md's tables and figure, from checkpoints/explorer.json and the banks (`python -m vit.explore`),
    and docs/package.md's module table, from the modules' own docstrings)

Each block lies between `<!-- name:start -->` and `<!-- name:end -->` in the file `BLOCK_FILES` names.

The Results block comes from the committed checkpoints' metadata (accuracy, data, recipe) plus a
latency measured here and now (median of warm batch-size-1 forward passes), naming this machine.
The Performance block is `python -m vit.bench --markdown` plus `scripts/cold_start.py`.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import vit
from vit.bench.cli import Settings, run
from vit.bench.machine import machine_info
from vit.bench.report import performance_markdown
from vit.explain.cli import markdown
from vit.explore.bank import Bank, bank_path
from vit.models import families
from vit.models.checkpoint import CheckpointError, describe_epochs, describe_init, read_meta
from vit.models.factory import load
from vit.serve.model_set import checkpoint_paths
from vit.serve.predictor import time_forward

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK_FILES = {"models": ROOT / "README.md", "results": DOCS / "results.md", "performance": DOCS / "performance.md",
               "faithfulness": DOCS / "explanations.md", "trust": DOCS / "trust.md", "package": DOCS / "package.md",
               "explore": DOCS / "explore.md"}


def machine() -> str:
    """CPU model, cores, torch threads and version: where a timing was taken."""
    m = machine_info()
    return f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads"


def performance_block(runs: int = 30) -> str:
    """The benchmark's Markdown, then the app's cold start measured by scripts/cold_start.py."""
    text = performance_markdown(run(checkpoint_paths(), Settings(runs=runs)))
    runs_ = {}
    for name, extra in (("exports", []), ("fresh", ["--without-exports"])):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "cold_start.py"), "--json", *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=900)
        if done.returncode:
            return text + f"\n\nCold start: `scripts/cold_start.py {' '.join(extra)}` failed ({done.stderr.strip()[-300:]})."
        runs_[name] = json.loads(done.stdout.strip().splitlines()[-1])
    c, f = runs_["exports"], runs_["fresh"]
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


def results_block(runs: int = 30) -> str:
    rows, classes_rows, curves = [], [], []
    for family, path in checkpoint_paths().items():
        try:
            ckpt = load(path)
        except CheckpointError as e:
            rows.append(f"| {family} | missing: {e} | | | | | | |")
            continue
        m, r, title = ckpt.meta, ckpt.meta["recipe"], families.get(ckpt.family).title
        test, val = m["metrics"]["test"], m["metrics"].get("val", {})
        size = ckpt.preprocessing.image_size
        p50 = float(np.median(time_forward(ckpt.model, torch.zeros(1, 3, size, size), runs=runs, warmup=5)))
        init = describe_init(m["init"]) if m["init"].get("weights") == "checkpoint" else \
            m["init"]["weights"] + (f" ({m['init']['source'].split(':')[0]})" if m["init"].get("source") else "")
        data = f"{r['n_train']} train + {r['n_val']} val photos"
        if r.get("distillation"):
            data += f"; distilled from {families.get(r['distillation']['teacher_family']).title}"
        rows.append(f"| {title} | {init} | {data} | {describe_epochs(r, short=True)} (best: {r['selected_epoch']}) "
                    f"| **{test['accuracy']:.1%}** ({round(test['accuracy'] * test['n_images'])}/{test['n_images']}) "
                    f"| {m['num_params'] / 1e6:.2f} M | {ckpt.size_mb:.1f} | {p50:.1f} |")
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
        f"CPU p50: median of {runs} warm forward passes at batch size 1, measured by `python -m vit.bench.readme` on "
        f"{machine()}.",
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


EXPLORER_RUN = ROOT / "checkpoints" / "explorer.json"
EXPLORE_FIGURE = DOCS / "explore-maps.png"


def explore_block(path: Path = EXPLORER_RUN) -> str:
    """docs/explore.md's tables, from `python -m vit.explore`'s committed record and banks: per model the test
    and validation answers, the neighbours' agreement with the answer, what a neighbour's distance is, how well
    the map keeps neighbourhoods; the confusion matrices; the photos every model gets wrong."""
    records = json.loads(path.read_text())["models"]
    order = explored_models(records)
    title = {i: families.get(read_meta_family(i)).title for i in order}
    rows = ["| model | test photos right | mistakes: test + validation | 5 neighbours' majority = the answer: test / "
            "validation | validation photo → nearest training photo, cosine distance: 5th / 50th / 95th percentile | "
            "map: trustworthiness (k = 10), t-SNE / PCA |", "|---|---|---|---|---|---|"]
    confusion = [f"| model | truth | {' | '.join(records[order[0]]['classes'])} |" if order else "",
                 "|---|---|" + "---|" * len(records[order[0]]["classes"]) if order else ""]
    wrong = []
    for i in order:
        r, bank = records[i], bank_reference(i)
        t, v = r["test"], r["val"]
        agree = r.get("neighbours", {}).get("agreement_with_answer", {})
        q = r["map"].get("trustworthiness", {})
        pct = " / ".join(f"{np.percentile(bank, p):.4f}" for p in (5, 50, 95)) if bank else "no bank"
        rows.append(f"| {title[i]} | {round(t['accuracy'] * t['n'])} / {t['n']} ({t['accuracy']:.1%}) "
                    f"| {len(t['mistakes'])} + {len(v['mistakes'])} | {agree.get('test', float('nan')):.1%} / "
                    f"{agree.get('val', float('nan')):.1%} | {pct} | {q.get('tsne', float('nan')):.3f} / "
                    f"{q.get('pca', float('nan')):.3f} |")
        confusion += [f"| {title[i] if k == 0 else ''} | {c} | " + " | ".join(f"**{n}**" if j == k else str(n)
                      for j, n in enumerate(row)) + " |" for k, (c, row) in enumerate(zip(r["classes"], t["confusion"]))]
        wrong.append({m["photo"]: m for m in t["mistakes"] + v["mistakes"]})
    common = sorted(set.intersection(*(set(w) for w in wrong))) if wrong else []
    hard = ", ".join(f"`{p}` ({wrong[0][p]['truth']}: " + " / ".join(w[p]["answer"] for w in wrong) + ")"
                     for p in common) or "none"
    m = records[order[0]]["map"] if order else {}
    return "\n".join([*rows, "", f"Made by `python -m vit.explore checkpoints/*.safetensors` (t-SNE: scikit-learn "
                      f"{m.get('sklearn', '?')}, perplexity {m.get('perplexity', '?')}, {m.get('init', '?')} start, "
                      f"{m.get('metric', '?')} metric, seed {m.get('seed', '?')}). *Trustworthiness*: 1 when every "
                      "photo's 10 nearest on the map are among its 10 nearest in feature space.", "",
                      "**Confusion matrices** of the test split (rows: the truth, columns: the answer):", "",
                      *confusion, "", f"**Every model gets these wrong** (test or validation; truth: answers in "
                      f"the order above): {hard}."])


def read_meta_family(model: str) -> str:
    return read_meta(checkpoint_paths()[model])["family"]


def explored_models(records: dict) -> list[str]:
    """The served checkpoints that have a record, in the family registry's order (as the app lists them)."""
    rank = {name: k for k, name in enumerate(families.names())}
    return sorted((i for i in checkpoint_paths() if i in records), key=lambda i: (rank[read_meta_family(i)], i))


def bank_reference(model: str) -> list[float]:
    """The validation photos' nearest-training-photo distances kept in the model's committed bank ([] without)."""
    path = checkpoint_paths().get(model)
    bank = bank_path(path) if path is not None else None
    return Bank.load(bank).meta.get("reference", {}).get("nearest", []) if bank is not None and bank.is_file() else []


def explore_figure(path: Path = EXPLORER_RUN):
    """The committed maps side by side (matplotlib): colour by true class, shape by split, wrong answers outlined."""
    import matplotlib  # lazy: matplotlib is for the figure only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen

    records = json.loads(path.read_text())["models"]
    order = explored_models(records)
    fig, axes = plt.subplots(1, len(order), figsize=(4.2 * len(order), 4.6), squeeze=False)
    marks = {"train": ("o", 9, 0.45), "nonfood": ("x", 22, 0.9), "val": ("s", 20, 0.9), "test": ("^", 26, 0.9)}
    colours = ["#E69F00", "#0072B2", "#009E73", "#CC79A7"]
    for ax, i in zip(axes[0], order):
        r, p = records[i], records[i]["points"]
        for split, (marker, size, alpha) in marks.items():
            sel = [k for k, s in enumerate(p["split"]) if s == split]
            colour = [colours[p["label"][k]] if p["label"][k] >= 0 else "#8c8c8c" for k in sel]
            wrong = [0 <= p["label"][k] != p["answer"][k] for k in sel]
            xy = np.array([[p["x"][k], 1 - p["y"][k]] for k in sel]).reshape(-1, 2)
            ax.scatter(xy[:, 0], xy[:, 1], s=size, marker=marker, c=colour, alpha=alpha, label=split,
                       edgecolors=None if marker == "x" else "#111",
                       linewidths=1.2 if marker == "x" else [1.4 * w for w in wrong])
        method = {"tsne": "t-SNE", "pca": "PCA"}.get(r["map"]["method"], r["map"]["method"])
        ax.set_title(f"{families.get(read_meta_family(i)).title}: {method} of its own features", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=n) for c, n in
               zip(colours, records[order[0]]["classes"] + ["non-food"])] if order else []
    handles[-1:] = [plt.Line2D([], [], marker="x", ls="", color="#8c8c8c", label="non-food")]
    handles += [plt.Line2D([], [], marker=m, ls="", color="#555", label=s) for s, (m, _, _) in marks.items()
                if s != "nonfood"]
    handles.append(plt.Line2D([], [], marker="o", ls="", mfc="none", mec="#111", label="wrong answer"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


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
    p.add_argument("--performance", action="store_true", help="also run the benchmark for the Performance block")
    p.add_argument("--faithfulness", action="store_true", help=f"also the explanations table, from {FAITHFULNESS.name}")
    p.add_argument("--explore", action="store_true", help="first run python -m vit.explore on the checkpoints (minutes)")
    p.add_argument("--print", action="store_true", help="print the blocks instead of rewriting the README")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.explore:
        subprocess.run([sys.executable, "-m", "vit.explore", *map(str, checkpoint_paths().values())], cwd=ROOT,
                       check=True)
    results = results_block(args.runs)
    blocks = {"models": models_block(results), "results": results, "trust": trust_block(), "package": package_block(),
              "explore": explore_block()}
    if args.performance:
        blocks["performance"] = performance_block(args.runs)
    if args.faithfulness:
        blocks["faithfulness"] = faithfulness_block()
    if args.print:
        print("\n\n".join(blocks.values()))
        return 0
    for name, block in blocks.items():
        path = Path(args.root) / BLOCK_FILES[name].relative_to(ROOT)
        path.write_text(replace_block(path.read_text(), name, block))
        print(f"updated the {name} block of {path}")
    figure = Path(args.root) / EXPLORE_FIGURE.relative_to(ROOT)
    explore_figure().savefig(figure, dpi=80)
    print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
