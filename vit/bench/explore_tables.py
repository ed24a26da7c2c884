"""docs/explore.md's generated parts: the tables of checkpoints/explorer.json and the banks of training photos
(`python -m vit.explore`), and the figure of every model's map side by side.

Written by `python -m vit.bench.readme` with the other tables; nothing here embeds or queries a photo again.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vit.explore.bank import Bank, bank_path
from vit.models import families
from vit.models.checkpoint import read_meta
from vit.serve.model_set import checkpoint_paths

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
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



def write_figure(docs: Path, path: Path = EXPLORER_RUN) -> Path:
    """docs/explore-maps.png from the committed record."""
    figure = docs / EXPLORE_FIGURE.name
    explore_figure(path).savefig(figure, dpi=80)
    return figure
