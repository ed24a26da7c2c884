"""What the page shows, computed without Gradio: model cards, texts, overlays, tables.

The app's handlers (vit.app.handlers) call these for every answer; everything here is testable without a
browser. Importing this module imports no timm: explanations are drawn by vit.explain, imported
when a result is drawn.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from vit import explain
from vit.explain import methods as registry
from vit.explain.rollout import parse_head
from vit.models import families
from vit.models.checkpoint import Preprocessing, describe_epochs, describe_init
from vit.trust import reliability as rel

if TYPE_CHECKING:  # vit.serve.predictor imports timm (seconds): only the loading thread needs it
    from vit.serve.model_set import ModelSet
    from vit.serve.predictor import Predictor, Result

log = logging.getLogger(__name__)

LAYER_DEFAULT = 4  # the layer an example's overlay shows (clipped to the model's last)
DISPLAY_SIDE = 336  # overlays are drawn on the model's view, enlarged to this for the screen


def classes_text(names: list[str]) -> str:
    """["pizza", "steak", "sushi"] -> "pizza, steak or sushi"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1] if names else "?"


def header_text(models: ModelSet) -> str:
    """The page's title and what it does, for the models served: each model's default explanation
    named from its family in the registry."""
    n = len(models.ids)
    defaults = sorted({registry.title(m) for i in models.ids if i in models.meta
                       for m in registry.of(families.get(models.meta[i]["family"]))[:1]})
    named = " and ".join(defaults) if defaults else "an explanation"
    return ("# 🍕🥩🍣 FoodVision ViT\n"
            f"Classify a food photo as **{classes_text(models.class_names())}** with {n} model{'s' * (n != 1)} and see "
            f"*why*: each answer comes with a map of the pixels it rests on ({named} by default; attention, rollout "
            "and relevance for the Vision Transformers) and a score of how faithful that map is. The ViT trained "
            "here from scratch saw only a few hundred photos; no ViT ImageNet weights were used anywhere (see each "
            "model's card).")


def status_text(models: ModelSet) -> str:
    """The header's line about models still loading or unavailable."""
    lines = [f"> ⏳ **{models.titles[i]} is loading** (requests for it wait)" for i in models.ids
             if models.status(i) == "loading"]
    lines += [f"> ⚠️ **{models.titles[i]} unavailable:** {why}" for i, why in models.errors.items()]
    return "\n".join(lines)


def status_card(models: ModelSet, i: str) -> str:
    """Model `i`'s card, headed by a line while it loads or when it failed."""
    card = model_card(models.meta[i], models.titles[i], models.paths[i])
    status = models.status(i)
    if status == "loading":
        return "⏳ *Loading this model; a request for it waits until it is ready.*\n\n" + card
    return card if status == "ready" else f"⚠️ **Unavailable:** {models.errors[i]}\n\n" + card


def unavailable_card(models: ModelSet, i: str) -> str:
    """What the card says for a model whose checkpoint could not be read."""
    return f"**{models.titles.get(i, i)} is unavailable:** {models.errors.get(i)}"


def model_card(meta: dict, title: str, path: Path) -> str:
    """Markdown from the checkpoint's metadata alone: what the model is, what it started from, how it
    was trained, what it scores."""
    m = meta
    recipe, init = m.get("recipe", {}), m.get("init", {})
    test, val = m.get("metrics", {}).get("test", {}), m.get("metrics", {}).get("val", {})
    lines = [f"**{title}** — {describe_arch(m)}",
             f"- **Started from:** {describe_init(init)}"]
    if "n_train" in recipe:
        distill = recipe.get("distillation") or {}
        teacher = distill.get("teacher_family")
        name = families.get(teacher).title if teacher in families.names() else teacher
        learned = ""
        if teacher:
            learned = (f"; learned from their labels and from the {name}'s predictions"
                       + (" and feature maps" if recipe.get("feature_distill") else ""))
            if distill.get("teacher_init") not in (None, "random"):
                learned += f" (the teacher started from {distill['teacher_init']} weights: that knowledge reaches " \
                           "this model through it)"
        lines.append(f"- **Trained on:** {recipe['n_train']} photos ({recipe.get('n_val', 0)} more held "
                     f"out for validation), {describe_epochs(recipe)}{learned}")
    size_mb = path.stat().st_size / 1e6 if path.is_file() else 0.0
    lines += ["- **Classes:** " + ", ".join(m["class_names"]),
              "- **Explanations:** " + ", ".join(registry.title(x) for x in registry.of(families.get(m["family"]))),
              "- **Test accuracy:** " + (f"{test['accuracy']:.1%} on {test['n_images']} photos" if test else "not measured")
              + (f" (validation: {val['accuracy']:.1%} on {val['n_images']})" if val else ""),
              f"- **Size:** {size_mb:.1f} MB on disk, {m.get('num_params', 0):,} parameters, "
              f"input {Preprocessing.from_dict(m['preprocessing']).image_size} px"]
    return "\n".join(lines)


def describe_arch(meta: dict) -> str:
    """One line from the family's description and the architecture record."""
    a, family = meta["arch"], families.get(meta["family"])
    parts = [a["model_name"]] if "model_name" in a else []
    if "depth" in a and "num_heads" in a:
        parts.append(f"{a['depth']} layers × {a['num_heads']} heads, width {a.get('embed_dim', '?')}")
    if "patch_size" in a and "image_size" in a:
        parts.append(f"{a['patch_size']} px patches on {a['image_size']} px")
    if a.get("distilled"):
        parts.append("DeiT distillation token")
    return ", ".join(parts) + (f" ({family.description})" if family.description else "")


def latency_text(p: "Predictor", r: "Result") -> str:
    """Model time of this request (its one timed pass, then its map), where it ran, and the model's size."""
    return (f"⏱️ **{r.latency_ms:.1f} ms prediction** ({r.timed}) · {r.explain_ms:.1f} ms {r.method} map · "
            f"{device_text()}  \n"
            f"📦 {p.ckpt.size_mb:.1f} MB on disk · {p.meta.get('num_params', 0) / 1e6:.2f} M parameters")


def compare_text(p: "Predictor", r: "Result", method: str, applies: bool) -> str:
    """One model's text under Compare all: its verdict, then timing and faithfulness, after a note when
    `method` is not its own."""
    note = "" if applies else f"*{registry.title(method)} does not apply: its default instead.*  \n"
    return verdict_text(p, r) + "\n\n" + note + answer_text(p, r) + "  \n" + faithfulness_text(r)


def verdict_text(p: "Predictor", r: "Result") -> str:
    """Markdown that opens the prediction area: whether the photo is one the model can answer for
    (vit.trust's gate), then, when it is, the conformal prediction set; or that the model has no gate."""
    t, classes = r.trust, classes_text(p.class_names)
    if t is None or t.in_distribution is None:
        why = f" ({t.note})" if t is not None and t.note else ""
        return (f"ℹ️ **This model has no out-of-distribution gate**: it cannot tell whether the photo shows "
                f"{classes} at all{why}.")
    score = f"out-of-distribution score {t.ood_score:.3f} {'>' if not t.in_distribution else '≤'} threshold " \
            f"{t.ood_threshold:.3f}"
    if not t.in_distribution:
        return (f"### ⚠️ This doesn't look like {classes}\n"
                f"The photo is far from every training photo ({score}). The model can only answer with one of its "
                f"classes: its guess and the map below are **unreliable**.")
    if len(t.prediction_set) > 1:
        answer = f"**{classes_text(t.prediction_set)}** ({coverage_text(p)} set: the model is unsure between them)"
    elif t.prediction_set:
        answer = f"**{t.prediction_set[0]}** alone in the {coverage_text(p)} set"
    else:
        answer = f"no class in the {coverage_text(p)} set"
    return f"✅ Looks like {classes}: {answer} · {score}"


def coverage_text(p: "Predictor") -> str:
    """The conformal set's target coverage, e.g. "90 %"."""
    gate = getattr(p, "gate", None)
    return f"{(1 - gate.conformal.alpha) * 100:.0f} %" if gate is not None else "90 %"


def unreliable(r: "Result") -> bool:
    """The gate says the photo is out of distribution (False without a gate)."""
    return r.trust is not None and r.trust.in_distribution is False


def answer_text(p: "Predictor", r: "Result") -> str:
    """The text under the label and above the map: a warning when the guess is unreliable, then timing."""
    warning = ("⚠️ ***Unreliable:*** *the guess above and the map below are for a photo outside what this model "
               "learned.*  \n") if unreliable(r) else ""
    return warning + latency_text(p, r)


def device_text() -> str:
    return f"CPU, {torch.get_num_threads()} threads" if not torch.cuda.is_available() else torch.cuda.get_device_name()


def _display(view: Image.Image) -> tuple[Image.Image, float]:
    scale = DISPLAY_SIDE / view.width
    return view.resize((DISPLAY_SIDE, round(view.height * scale)), Image.BICUBIC), scale


def method_choices(methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """The method menu's (title, id) pairs, titles from the method registry."""
    return [(registry.title(m), m) for m in methods]


def render_overlay(r: "Result", opacity: float = 0.5) -> Image.Image:
    """The result's map over the pixels the model saw, enlarged for the screen."""
    shown, _ = _display(r.view)
    return explain.colour_bar(explain.overlay(shown, r.heat, opacity))


def faithfulness_text(r: "Result", title: str = "") -> str:
    """Markdown: how faithful the map is, against random orders of the same cells."""
    f = r.faithfulness
    if f is None:
        return ""
    return (f"**Is the map faithful?** ({registry.title(r.method)}{', ' + title if title else ''})  \n"
            f"Blurring the hottest cells first: deletion AUC **{f.deletion_auc:.3f}** vs "
            f"{f.random_deletion_auc:.3f} at random (lower is better).  \n"
            f"Revealing them first: insertion AUC **{f.insertion_auc:.3f}** vs "
            f"{f.random_insertion_auc:.3f} at random (higher is better).")


def curves_image(r: "Result", title: str = "") -> Image.Image | None:
    """The deletion / insertion curves against random orders (None where not scored)."""
    return None if r.faithfulness is None else explain.curves_plot(r.faithfulness, title)


def render_layers(r: "Result", head: int | str = "mean", opacity: float = 0.5) -> Image.Image | None:
    """Every layer's class-token attention at once (models with attention only); `head` as the page's
    menu says it (RequestError for a head the model lacks)."""
    if not r.maps:
        return None
    head = parse_head(head, r.maps[0].shape[0])
    heats = [explain.cls_attention(m, r.grid, r.prefix, head) for m in r.maps]
    return explain.colour_bar(explain.layer_mosaic(r.view, heats, opacity))


def render_patches(r: "Result") -> Image.Image:
    """The model's view cut into its patches (ViTs) or its map's cells (CNNs)."""
    shown, scale = _display(r.view)
    return explain.patch_grid(shown, max(1, round(r.cell_px * scale)))


def comparison_rows(models: ModelSet, latency_p50: dict[str, float] | None = None) -> list[list]:
    """One row per model for the comparison table: name, init, data, epochs, accuracy, params, MB, p50 ms.
    From the metadata alone, so a model still loading has its row."""
    rows = []
    for i in models.ids:
        title = models.titles[i]
        if i in models.errors:
            rows.append([title, "unavailable: " + models.errors[i]] + [""] * 6)
            continue
        m = models.meta[i]
        recipe, test = m.get("recipe", {}), m.get("metrics", {}).get("test", {})
        size_mb = models.paths[i].stat().st_size / 1e6
        rows.append([
            title, describe_init(m.get("init", {}), short=True),
            f"{recipe.get('n_train', '?')} train / {recipe.get('n_val', 0)} val",
            describe_epochs(recipe, short=True) if recipe else "",
            f"{test['accuracy']:.1%}" if test else "",
            f"{m.get('num_params', 0) / 1e6:.2f} M", f"{size_mb:.1f}",
            f"{latency_p50[i]:.1f}" if latency_p50 and i in latency_p50 else "",
        ])
    return rows


def reliability(models: ModelSet) -> tuple[Image.Image | None, str]:
    """The Compare models tab's reliability diagram (before / after temperature scaling, per model) and
    its caption, which names each model that has none and why (vit.trust.reliability)."""
    found, missing, runs = [], [], {}
    for i in models.ids:
        if i not in models.meta:
            missing.append(f"{models.titles.get(i, i)}: unavailable")
            continue
        folder = models.paths[i].parent
        runs.setdefault(folder, rel.ood_runs(folder))
        bars = rel.bars_for(models.titles[i], models.meta[i], models.paths[i], runs[folder])
        (found if isinstance(bars, rel.Bars) else missing).append(bars)
        if isinstance(bars, rel.Bars) and not bars.before:
            missing.append(f"{bars.title}: no bars before temperature scaling in {rel.OOD_RUN} (an older run)")
    text = ("**Reliability diagram**: accuracy against confidence per confidence bin (15 equal-width bins), before "
            "(grey) and after (blue) temperature scaling; on the diagonal a model's \"80 %\" is right 80 % of the time. "
            "See docs/trust.md.")
    return rel.diagram(found), text + "".join(f"  \n⚠️ {m}" for m in missing)


COMPARISON_HEADERS = ["model", "started from", "data", "epochs", "test accuracy", "parameters", "MB", "p50 ms (bs=1)"]
HISTORY_COLUMNS = ["model", "epoch", "curve", "value"]


def history_rows(models: ModelSet, metric: str) -> list[list]:
    """Long-form rows (model, epoch, curve, value) of every model's per-epoch `metric` ("loss" or
    "acc"), train and val, from each checkpoint's meta["history"]: what a gr.LinePlot draws."""
    rows = []
    for i in models.ids:
        for h in models.meta.get(i, {}).get("history", []):
            for split in ("train", "val"):
                value = h.get(f"{split}_{metric}")
                if value is not None and "epoch" in h:
                    rows.append([models.titles[i], h["epoch"], f"{models.titles[i]} · {split}", float(value)])
    return rows


FAR_PERCENTILE = 95.0  # vit.explore.bank.FAR: a nearest distance above it is farther than usual


def neighbour_caption(n) -> str:
    """One neighbour under its thumbnail: its class, distance and the distance's percentile (`neighbours_text`)."""
    return f"{n.label} · {n.distance:.3f}" + ("" if n.percentile is None else f" · p{n.percentile:.0f}")


def neighbours_text(p: "Predictor", r: "Result", shown: bool) -> str:
    """Markdown above (or, without the photos on disk, instead of) the nearest training photos: what they are,
    whether they are as near as usual, or far (the gate says the photo is not one the model knows)."""
    if not r.neighbours:
        return f"ℹ️ *No nearest training photos: {r.neighbours_note or 'this model has none'}.*" if r.neighbours_note \
            else ""
    nearest = r.neighbours[0].percentile
    if unreliable(r):
        head = ("**The training photos closest to it are far: not look-alikes.** The gate says this photo is not "
                f"{classes_text(p.class_names)}; these are only the nearest photos the model knows")
    elif nearest is not None and nearest > FAR_PERCENTILE:
        head = (f"**Nearest training photos, farther than usual**: the nearest is farther than it is for "
                f"{nearest:.0f} % of held-back food photos")
    else:
        head = "**Nearest training photos**, as near as usual for food photos"
    votes = [n.label for n in r.neighbours]
    majority = max(dict.fromkeys(votes), key=votes.count)
    text = (f"{head} (in this model's own feature space: cosine distance, and pN: farther than the nearest training "
            f"photo of N % of held-back food photos; {votes.count(majority)} of {len(votes)} are {majority}).")
    if shown:
        return text
    rows = [f"{i}. `{n.photo}`: {neighbour_caption(n)}" for i, n in enumerate(r.neighbours, 1)]
    return text + "  \n*The photos are not on this server (yet): their names.*\n\n" + "\n".join(rows)
