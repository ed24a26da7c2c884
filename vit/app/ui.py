"""What the page shows, computed without Gradio: model cards, texts, overlays, tables.

The app's handlers (vit.app.handlers) call these for every answer; everything here is testable without a
browser. Every text takes the page's language (`lang`, "en" by default: the API's and MCP's) and says it
from vit.app.i18n's tables: words first, figures behind them in a <details>. Pictures carry no words
(numbers, colours and the models' names only): their labels on the page say what they show. Importing this module imports no timm: explanations are drawn by vit.explain, imported
when a result is drawn.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from PIL import Image

from vit import explain
from vit.app import i18n
from vit.app.i18n import DEFAULT, say
from vit.explain import methods as registry
from vit.explain.cli import BAR_DELETION, BAR_INSERTION
from vit.explain.rollout import head_choices, parse_head
from vit.explore.bank import FAR, Neighbour  # a nearest distance above this percentile is "farther than usual"
from vit.models import families
from vit.models.attention import NEARLY_UNIFORM
from vit.models.checkpoint import Preprocessing, passes_per_epoch
from vit.trust import reliability as rel
from vit.trust.gate import DAMAGED, NO_GATE

if TYPE_CHECKING:  # vit.serve.predictor imports timm (seconds): only the loading thread needs it
    from vit.serve.model_set import ModelSet
    from vit.serve.predictor import Predictor, Result

log = logging.getLogger(__name__)

LAYER_DEFAULT = 4  # the layer an example's overlay shows (clipped to the model's last)
DISPLAY_SIDE = 336  # overlays are drawn on the model's view, enlarged to this for the screen


def classes_text(names: list[str], lang: str = DEFAULT) -> str:
    """["pizza", "steak", "sushi"] -> "pizza, steak or sushi" (ja: "ピザかステーキか寿司")."""
    return i18n.listed([i18n.class_name(n, lang) for n in names], lang, "fv.or", "fv.or.sep")


def header_text(models: ModelSet, lang: str = DEFAULT) -> str:
    """The page's title and what it does, for the models served: each model's default explanation
    named from its family in the registry."""
    n = len(models.ids)
    defaults = sorted({i18n.method_title(m, lang) for i in models.ids if i in models.meta
                       for m in registry.of(families.get(models.meta[i]["family"]))[:1]})
    return say(lang, "fv.header", classes=classes_text(models.class_names(), lang),
               models=say(lang, "fv.header.one_model") if n == 1 else say(lang, "fv.header.models", n=n),
               named=i18n.listed(defaults, lang, "fv.and") if defaults else say(lang, "fv.header.no_method"))


def status_text(models: ModelSet, lang: str = DEFAULT) -> str:
    """The line about models still loading or unavailable."""
    lines = [say(lang, "fv.status.loading", model=models.titles[i]) for i in models.ids if models.status(i) == "loading"]
    lines += [say(lang, "fv.status.unavailable", model=models.titles[i], why=why) for i, why in models.errors.items()]
    return "\n".join(lines)


def status_card(models: ModelSet, i: str, lang: str = DEFAULT) -> str:
    """Model `i`'s card, headed by a line while it loads or when it failed."""
    card = model_card(models.meta[i], models.titles[i], models.paths[i], lang)
    status = models.status(i)
    if status == "loading":
        return say(lang, "fv.card.loading") + "\n\n" + card
    return card if status == "ready" else say(lang, "fv.card.unavailable", why=models.errors[i]) + "\n\n" + card


def unavailable_card(models: ModelSet, i: str, lang: str = DEFAULT) -> str:
    """What the card says for a model whose checkpoint could not be read."""
    return say(lang, "fv.card.unavailable_model", model=models.titles.get(i, i), why=models.errors.get(i))


def model_card(meta: dict, title: str, path: Path, lang: str = DEFAULT) -> str:
    """Markdown from the checkpoint's metadata alone: what the model is, what it started from, how it
    was trained, what it scores."""
    m = meta
    recipe, init = m.get("recipe", {}), m.get("init", {})
    test, val = m.get("metrics", {}).get("test", {}), m.get("metrics", {}).get("val", {})
    lines = [f"**{title}** — {describe_arch(m, lang)}", say(lang, "fv.card.started", init=init_text(init, lang))]
    if "n_train" in recipe:
        distill = recipe.get("distillation") or {}
        teacher = distill.get("teacher_family")
        name = families.get(teacher).title if teacher in families.names() else teacher
        learned = ""
        if teacher:
            learned = say(lang, "fv.card.learned", teacher=name,
                          features=say(lang, "fv.card.features") if recipe.get("feature_distill") else "")
            if distill.get("teacher_init") not in (None, "random"):
                learned += say(lang, "fv.card.teacher", init=init_text({"weights": distill["teacher_init"]}, lang))
        lines.append(say(lang, "fv.card.trained", n_train=recipe["n_train"], n_val=recipe.get("n_val", 0),
                         epochs=epochs_text(recipe, lang), learned=learned))
    size_mb = path.stat().st_size / 1e6 if path.is_file() else 0.0
    accuracy = say(lang, "fv.card.no_accuracy") if not test else \
        say(lang, "fv.card.accuracy", accuracy=f"{test['accuracy']:.1%}", n=test["n_images"]) + (
            say(lang, "fv.card.validation", accuracy=f"{val['accuracy']:.1%}", n=val["n_images"]) if val else "")
    lines += [say(lang, "fv.card.classes", classes=i18n.listed([i18n.class_name(c, lang) for c in m["class_names"]],
                                                                 lang)),
              say(lang, "fv.card.methods", methods=i18n.listed(
                  [i18n.method_title(x, lang) for x in registry.of(families.get(m["family"]))], lang)),
              accuracy,
              say(lang, "fv.card.size", mb=f"{size_mb:.1f}", params=f"{m.get('num_params', 0):,}",
                  px=Preprocessing.from_dict(m["preprocessing"]).image_size)]
    return "\n".join(lines)


def describe_arch(meta: dict, lang: str = DEFAULT) -> str:
    """One line from the family's description and the architecture record."""
    a, family = meta["arch"], families.get(meta["family"])
    parts = [a["model_name"]] if "model_name" in a else []
    if "depth" in a and "num_heads" in a:
        parts.append(say(lang, "fv.arch.layers", depth=a["depth"], heads=a["num_heads"], width=a.get("embed_dim", "?")))
    if "patch_size" in a and "image_size" in a:
        parts.append(say(lang, "fv.arch.patches", patch=a["patch_size"], size=a["image_size"]))
    if a.get("distilled"):
        parts.append(say(lang, "fv.arch.distilled"))
    description = i18n.name(lang, f"fv.family.{family.name}", family.description)
    return say(lang, "fv.list").join(parts) + (say(lang, "fv.arch.family", description=description)
                                              if description else "")


def init_text(init: dict, lang: str = DEFAULT, short: bool = False) -> str:
    """What a model's weights started from, in `lang` (English: vit.models.checkpoint.describe_init's words);
    a run continued from another checkpoint names the chain down to the first weights."""
    if init.get("weights") == "checkpoint":
        name, _, digest = str(init.get("source", "a checkpoint")).partition(" (")
        trained = epochs_text({"epochs": init["checkpoint_epochs"], "repeats": passes_per_epoch(init)}, lang) \
            if init.get("checkpoint_epochs") else ""
        text = init_text(init.get("checkpoint_init") or {}, lang, short) + (
            say(lang, "fv.init.trained", epochs=trained) if trained else "") + say(lang, "fv.init.continued")
        if not short:
            text += say(lang, "fv.init.from", name=Path(name).name) + (
                say(lang, "fv.init.digest", digest=digest.removesuffix(")")) if digest else "")
        return text
    raw = str(init.get("weights", "unknown"))
    weights = i18n.name(lang, i18n.key_of(raw, "fv.init"), raw)
    source = str(init.get("source") or "")
    if short or not source:
        return weights
    return say(lang, "fv.init.source", weights=weights, source=source if lang == DEFAULT else source.split(": ")[0])


def epochs_text(recipe: dict, lang: str = DEFAULT, short: bool = False) -> str:
    """How long a model trained ("48 epochs of 20 passes"; `short`, a table cell: "48 × 20 passes")."""
    epochs, repeats = recipe.get("epochs_run", recipe.get("epochs", "?")), recipe.get("repeats", 1)
    key = ("fv.epochs.short" if short else "fv.epochs") + ("_passes" if short and repeats > 1 else "")
    if not short and repeats > 1:
        key = "fv.epochs.passes"
    return say(lang, key, epochs=epochs, repeats=repeats)


def latency_text(p: "Predictor", r: "Result", lang: str = DEFAULT) -> str:
    """Model time of this request (its one timed pass, then its map: reused when made earlier for this photo),
    where it ran, and the model's size."""
    timed = i18n.name(lang, i18n.key_of(r.timed, "fv.timed"), r.timed)
    method = r.method  # the method's id, as the API names it
    pass_ = say(lang, "fv.timing.pass_reused" if r.reused else "fv.timing.pass", ms=f"{r.latency_ms:.1f}", timed=timed)
    map_ = say(lang, "fv.timing.map_reused", method=method) if getattr(r, "map_reused", False) else \
        say(lang, "fv.timing.map", ms=f"{r.map_ms:.1f}", method=method)
    return (f"{pass_} · {map_} · {device_text(lang)}  \n"
            + say(lang, "fv.timing.size", mb=f"{p.ckpt.size_mb:.1f}", params=f"{p.meta.get('num_params', 0) / 1e6:.2f}"))


def compare_text(p: "Predictor", r: "Result", method: str, applies: bool, lang: str = DEFAULT) -> str:
    """One model's text under Compare all: its verdict, then timing and faithfulness, after a note when
    `method` is not its own."""
    note = "" if applies else say(lang, "fv.compare.not_own", method=i18n.method_title(method, lang)) + "  \n"
    return verdict_text(p, r, lang) + "\n\n" + note + answer_text(p, r, lang) + "\n\n" + faithfulness_text(r, "", lang)


def verdict_text(p: "Predictor", r: "Result", lang: str = DEFAULT) -> str:
    """Markdown that opens the prediction area, in words: whether the photo is one the model can answer for
    (vit.trust's gate) and, when it is, what it shows ("not sure: pizza or steak" when the conformal set
    holds more than one class); or that the model has no gate. The figures (the gate's score and threshold,
    the set) behind them in a <details>."""
    t, classes = r.trust, classes_text(p.class_names, lang)
    if t is None or t.in_distribution is None:
        note = (t.note or "") if t is not None else ""
        why = say(lang, "fv.verdict.fit") if note == NO_GATE else \
            say(lang, "fv.verdict.damaged", detail=note.removeprefix(DAMAGED).strip(" ()")) if note.startswith(DAMAGED) \
            else note
        return say(lang, "fv.verdict.no_gate", classes=classes) + (
            "\n\n" + i18n.details(say(lang, "fv.details"), why) if why else "")
    score = {"score": f"{t.ood_score:.3f}", "threshold": f"{t.ood_threshold:.3f}"}
    if not t.in_distribution:
        return say(lang, "fv.verdict.out", classes=classes) + "\n\n" + i18n.details(
            say(lang, "fv.details"), say(lang, "fv.verdict.far", **score))
    named = classes_text(list(t.prediction_set), lang)
    key = "fv.verdict.unsure" if len(t.prediction_set) > 1 else "fv.verdict.sure" if t.prediction_set else \
        "fv.verdict.empty"
    in_set = say(lang, "fv.verdict.set", coverage=coverage_text(p), classes=named) if t.prediction_set else \
        say(lang, "fv.verdict.set_empty", coverage=coverage_text(p))
    return say(lang, key, classes=classes, answer=named) + "\n\n" + i18n.details(
        say(lang, "fv.details"), in_set + " " + say(lang, "fv.verdict.near", **score))


def coverage_text(p: "Predictor") -> str:
    """The conformal set's target coverage, e.g. "90 %"."""
    gate = getattr(p, "gate", None)
    return f"{(1 - gate.conformal.alpha) * 100:.0f} %" if gate is not None else "90 %"


def unreliable(r: "Result") -> bool:
    """The gate says the photo is out of distribution (False without a gate)."""
    return r.trust is not None and r.trust.in_distribution is False


def answer_text(p: "Predictor", r: "Result", lang: str = DEFAULT) -> str:
    """The text under the label and above the map: a warning when the guess is unreliable, then a line that
    opens the timing and size figures."""
    warning = say(lang, "fv.unreliable") + "\n\n" if unreliable(r) else ""
    return warning + i18n.details(say(lang, "fv.timing"), latency_text(p, r, lang))


def device_text(lang: str = DEFAULT) -> str:
    """What the figures ran on: the GPU, or the CPU and its hardware threads (ONNX Runtime's sessions use them;
    PyTorch's own share runs on one thread in the app, app.py)."""
    return say(lang, "fv.device.cpu", n=os.cpu_count()) if not torch.cuda.is_available() \
        else torch.cuda.get_device_name()


def _display(view: Image.Image) -> tuple[Image.Image, float]:
    scale = DISPLAY_SIDE / view.width
    return view.resize((DISPLAY_SIDE, round(view.height * scale)), Image.BICUBIC), scale


def method_choices(methods: tuple[str, ...]) -> list[tuple]:
    """The method menu's (title, id) pairs: titles the browser translates ("fv.method.<id>")."""
    return [(i18n.marker(f"fv.method.{m}") if i18n.known(f"fv.method.{m}") else registry.title(m), m) for m in methods]


def head_menu(num_heads: int) -> list[tuple]:
    """The head menu's (title, value) pairs: the reductions, then every head counted from 1 (values as the API
    takes them, titles the browser translates: "fv.head.<n>" are formatted at start-up, see `page_texts`)."""
    return [(i18n.marker(f"fv.head.{h}" if h in ("mean", "max") else f"fv.head.{h.split()[-1]}"), h)
            for h in head_choices(num_heads)]


def render_overlay(r: "Result", opacity: float = 0.5) -> Image.Image:
    """The result's map over the pixels the model saw, enlarged for the screen: attention weights on the
    fixed scale shared by every model and layer (uniform attention leaves the photo as it is), any other
    map stretched to its own range (vit.explain.render)."""
    shown, _ = _display(r.view)
    if registry.weights(r.method):
        return explain.scale_bar(explain.scaled_overlay(shown, r.heat, opacity))
    return explain.colour_bar(explain.overlay(shown, r.heat, opacity))


def drawn_row_text(r: "Result", lang: str = DEFAULT) -> str:
    """Which row of attention weights the overlay draws, in words (the entropy shown is this row's)."""
    heads = r.maps[0].shape[0] if r.maps else 0
    head = r.controls.get(registry.HEAD, "mean")
    which = (say(lang, "fv.row.mean", heads=heads) if head == "mean" else say(lang, "fv.row.max") if head == "max"
             else say(lang, "fv.head.n", n=int(head) + 1))
    if registry.LAYER in r.controls:
        return say(lang, "fv.row.attention", layer=r.controls[registry.LAYER] + 1, which=which)
    discard = float(r.controls.get(registry.DISCARD, 0.0))
    dropped = say(lang, "fv.row.dropped", share=f"{discard:.0%}") if discard > 0 else ""
    return say(lang, "fv.row.rollout", which=which, discard=f"{discard:.2f}", dropped=dropped)


def scale_text(r: "Result", lang: str = DEFAULT) -> str:
    """Markdown beside the overlay: how to read its colours. For attention weights, the drawn row's peak
    (x an even share) and normalised entropy, and "nearly uniform" in words from entropy NEARLY_UNIFORM (0.97)
    on (docs/inside.md says why); for any other map, that its colours are relative."""
    if getattr(r, "heat", None) is None:
        return ""
    if not registry.weights(r.method):
        return say(lang, "fv.scale.relative")
    s = explain.sharpness(r.heat)
    text = say(lang, "fv.scale.fixed", cells=s.cells, row=drawn_row_text(r, lang), peak=f"{s.peak:.1f}",
               entropy=f"{s.entropy:.2f}")
    if s.nearly_uniform:
        text += "  \n" + say(lang, "fv.scale.nearly_uniform", line=NEARLY_UNIFORM)
    return text


def faithfulness_text(r: "Result", title: str = "", lang: str = DEFAULT) -> str:
    """Markdown beside the overlay: how to read its colours (`scale_text`, in view: the row's peak and entropy
    are what the visitor compares), then how faithful the map is, in words (against the bar of
    vit.explain.cli: the map beats random orders of the same cells by the bar's ratios on both tests -> yes;
    on both, by less -> somewhat), its deletion / insertion AUCs and the random orders' behind them in a
    <details> (once scored)."""
    scale, f = scale_text(r, lang), r.faithfulness
    if f is None:
        return scale
    deletion = f.deletion_auc / max(f.random_deletion_auc, 1e-9)
    insertion = f.insertion_auc / max(f.random_insertion_auc, 1e-9)
    verdict = "fv.faith.yes" if deletion <= BAR_DELETION and insertion >= BAR_INSERTION else \
        "fv.faith.some" if deletion < 1 and insertion > 1 else "fv.faith.no"
    figures = (say(lang, "fv.faith.deletion", auc=f"{f.deletion_auc:.3f}", random=f"{f.random_deletion_auc:.3f}")
               + "  \n" + say(lang, "fv.faith.insertion", auc=f"{f.insertion_auc:.3f}",
                                random=f"{f.random_insertion_auc:.3f}"))
    return (scale + "  \n" if scale else "") + (
        say(lang, "fv.faith.title", method=i18n.method_title(r.method, lang), title=", " + title if title else "")
        + "  \n" + say(lang, verdict) + "\n\n" + i18n.details(say(lang, "fv.details"), figures))


def curves_image(r: "Result", title: str = "") -> Image.Image | None:
    """The deletion / insertion curves against random orders (None where not scored), without words: the
    image's label on the page says what they are, in the page's language."""
    return None if r.faithfulness is None else explain.curves_plot(r.faithfulness, title, words=False)


def render_layers(r: "Result", head: int | str = "mean", opacity: float = 0.5) -> Image.Image | None:
    """Every layer's class-token attention at once (models with attention only), on the overlay's fixed
    scale, each tile with its peak (x uniform); `head` as the page's menu says it (RequestError for a head
    the model lacks)."""
    if not r.maps:
        return None
    head = parse_head(head, r.maps[0].shape[0])
    heats = [explain.cls_attention(m, r.grid, r.prefix, head) for m in r.maps]
    return explain.scale_bar(explain.layer_mosaic(r.view, heats, opacity, scaled=True))


def render_patches(r: "Result") -> Image.Image:
    """The model's view cut into its patches (ViTs) or its map's cells (CNNs)."""
    shown, scale = _display(r.view)
    return explain.patch_grid(shown, max(1, round(r.cell_px * scale)))


COLUMNS = ("model", "init", "data", "epochs", "accuracy", "params", "mb", "p50")  # the comparison table's
HISTORY_COLUMNS = ["model", "epoch", "curve", "value"]


def comparison_headers(lang: str = DEFAULT) -> list[str]:
    return [say(lang, f"fv.col.{c}") for c in COLUMNS]


def comparison_rows(models: ModelSet, latency_p50: dict[str, float] | None = None, lang: str = DEFAULT) -> list[list]:
    """One row per model for the comparison table: name, init, data, epochs, accuracy, params, MB, p50 ms.
    From the metadata alone, so a model still loading has its row."""
    rows = []
    for i in models.ids:
        title = models.titles[i]
        if i in models.errors:
            rows.append([title, say(lang, "fv.table.unavailable", why=models.errors[i])] + [""] * 6)
            continue
        m = models.meta[i]
        recipe, test = m.get("recipe", {}), m.get("metrics", {}).get("test", {})
        size_mb = models.paths[i].stat().st_size / 1e6
        rows.append([
            title, init_text(m.get("init", {}), lang, short=True),
            say(lang, "fv.table.data", n_train=recipe.get("n_train", "?"), n_val=recipe.get("n_val", 0)),
            epochs_text(recipe, lang, short=True) if recipe else "",
            f"{test['accuracy']:.1%}" if test else "",
            f"{m.get('num_params', 0) / 1e6:.2f} M", f"{size_mb:.1f}",
            f"{latency_p50[i]:.1f}" if latency_p50 and i in latency_p50 else "",
        ])
    return rows


def comparison_table(models: ModelSet, latency_p50: dict[str, float] | None = None,
                     lang: str = DEFAULT) -> pd.DataFrame:
    """The Compare models tab's table with its headers in `lang` (a gr.Dataframe's headers are not translated
    in the browser)."""
    return pd.DataFrame(comparison_rows(models, latency_p50, lang), columns=comparison_headers(lang))


def reliability(models: ModelSet, lang: str = DEFAULT, draw: bool = True) -> tuple[Image.Image | None, str]:
    """The Compare models tab's reliability diagram (before / after temperature scaling, per model; without
    words but the models' names; None when not `draw`n) and its caption in `lang`, which says where each
    model's bars come from and names each model that has none and why (vit.trust.reliability)."""
    found, missing, runs = [], [], {}
    for i in models.ids:
        if i not in models.meta:
            missing.append(say(lang, "fv.reliability.unavailable", model=models.titles.get(i, i)))
            continue
        folder = models.paths[i].parent
        runs.setdefault(folder, rel.ood_runs(folder))
        bars = rel.bars_for(models.titles[i], models.meta[i], models.paths[i], runs[folder])
        if not isinstance(bars, rel.Bars):  # why not (as rel.bars_for says), with the command that would measure them
            missing.append(say(lang, "fv.reliability.no_bars" if models.meta[i].get("trust") else "fv.reliability.no_gate",
                               model=models.titles[i], file=rel.OOD_RUN))
            continue
        found.append(bars)
        if not bars.before:
            missing.append(say(lang, "fv.reliability.no_before", model=bars.title, file=rel.OOD_RUN))
    sources = [say(lang, f"fv.reliability.{b.split}", model=b.title, n=b.n, file=rel.OOD_RUN) for b in found]
    text = say(lang, "fv.reliability.caption") + "".join(f"  \n{s}" for s in sources)
    return rel.diagram(found, words=False) if draw else None, text + "".join(f"  \n⚠️ {m}" for m in missing)


def history_rows(models: ModelSet, metric: str, lang: str = DEFAULT) -> list[list]:
    """Long-form rows (model, epoch, curve, value) of every model's per-epoch `metric` ("loss" or
    "acc"), train and val, from each checkpoint's meta["history"]: what a gr.LinePlot draws."""
    rows = []
    for i in models.ids:
        for h in models.meta.get(i, {}).get("history", []):
            for split in ("train", "val"):
                value = h.get(f"{split}_{metric}")
                if value is not None and "epoch" in h:
                    rows.append([models.titles[i], h["epoch"], f"{models.titles[i]} · {say(lang, f'fv.plot.{split}')}",
                                 float(value)])
    return rows


def history_frame(models: ModelSet, metric: str, lang: str = DEFAULT) -> pd.DataFrame:
    return pd.DataFrame(history_rows(models, metric, lang), columns=HISTORY_COLUMNS)


def page_texts(models: ModelSet, default: str | None) -> dict[str, dict[str, str]]:
    """The page's texts known when it is built that hold numbers or names, in every language, for
    i18n.translations: the header, the examples' label, "Compare all 3", the head menu's "head 1" ...,
    the reliability diagram's caption."""
    heads = range(1, max((models.meta[i]["arch"].get("num_heads", 0) for i in models.ids if i in models.meta),
                         default=0) + 1)
    return {lang: {"fv.header": header_text(models, lang),
                   "fv.examples": say(lang, "fv.examples", model=models.titles.get(default, default)),
                   "fv.compare_all": say(lang, "fv.compare_all", n=len(models.ids)),
                   "fv.reliability.caption": reliability(models, lang, draw=False)[1],
                   **{f"fv.head.{n}": say(lang, "fv.head.n", n=n) for n in heads}}
            for lang in i18n.LANGS}


def neighbour_caption(n: "Neighbour", lang: str = DEFAULT) -> str:
    """One neighbour under its thumbnail: its class, distance and the distance's percentile (`neighbours_text`)."""
    label, distance = i18n.class_name(n.label, lang), f"{n.distance:.3f}"
    return say(lang, "fv.near.caption", label=label, distance=distance) if n.percentile is None else \
        say(lang, "fv.near.caption_pct", label=label, distance=distance, pct=f"{n.percentile:.0f}")


def neighbours_text(p: "Predictor", r: "Result", shown: bool, lang: str = DEFAULT) -> str:
    """Markdown above (or, without the photos on disk, instead of) the nearest training photos: what they are,
    whether they are as near as usual, or far (the gate says the photo is not one the model knows)."""
    if not r.neighbours:
        return say(lang, "fv.near.none", why=i18n.said(r.neighbours_note, lang)) if r.neighbours_note else ""
    nearest = r.neighbours[0].percentile
    if unreliable(r):
        head = say(lang, "fv.near.head.out", classes=classes_text(p.class_names, lang))
    elif nearest is not None and nearest > FAR:
        head = say(lang, "fv.near.head.farther", pct=f"{nearest:.0f}")
    else:
        head = say(lang, "fv.near.head.usual")
    votes = [n.label for n in r.neighbours]
    majority = max(dict.fromkeys(votes), key=votes.count)
    text = say(lang, "fv.near.text", head=head, votes=votes.count(majority), n=len(votes),
               majority=i18n.class_name(majority, lang))
    if shown:
        return text
    rows = [f"{i}. `{n.photo}`: {neighbour_caption(n, lang)}" for i, n in enumerate(r.neighbours, 1)]
    return text + "  \n" + say(lang, "fv.not_here") + "\n\n" + "\n".join(rows)
