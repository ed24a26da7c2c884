"""What the Explorer tab shows for one model's explorer record (vit.explore.explorer), computed without
Gradio: its summary, the confusion matrix, the mistakes in words, and the 2-D map as an SVG whose points
name their photo on hover (an SVG <title>, the browser's own tooltip) and carry their index for a click.
Every text takes the page's language (`lang`) and says it from vit.app.i18n's tables; photo names and
figures stay as they are.

The map is drawn here, not by a plotting library: gr.ScatterPlot's select event is a brush over an x range
(Gradio 6.31's native plot: no point click), gr.Plot has no click event at all and plotly is not
installed (docs/explore.md); an SVG of 633 points is ~135 kB and needs nothing new.
"""
from __future__ import annotations

from html import escape

from vit.app import i18n
from vit.app.i18n import DEFAULT, say
from vit.explore.explorer import NONFOOD, points

# Okabe-Ito's colour-blind-safe palette, one colour per class in the record's order; non-food grey
PALETTE = ("#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442")
NO_CLASS = "#8c8c8c"
SIDE, LEGEND = 560, 66  # the map's square side and the legend under it, in SVG units


def split_title(split: str, lang: str = DEFAULT) -> str:
    """A split's name as the page says it in `lang` (training, validation, test, non-food); a split the tables
    lack keeps its own name."""
    return i18n.name(lang, f"fv.split.{split}", split)


def summary_text(record: dict, title: str, lang: str = DEFAULT) -> str:
    """Markdown: the model's test and validation accuracy from the record, its mistakes, the neighbours'
    agreement, and how the map was made."""
    test, val, m = record["test"], record["val"], record["map"]
    agree = record.get("neighbours", {}).get("agreement_with_answer", {})
    near = say(lang, "fv.explorer.near", test=f"{agree['test']:.1%}", val=f"{agree['val']:.1%}") \
        if {"test", "val"} <= agree.keys() else ""
    return say(lang, "fv.explorer.summary", title=escape(title), right=round(test["accuracy"] * test["n"]),
               n=test["n"], accuracy=f"{test['accuracy']:.1%}", mistakes=len(test["mistakes"]),
               val_mistakes=len(val["mistakes"]), val_n=val["n"], val_accuracy=f"{val['accuracy']:.1%}", near=near,
               method="t-SNE" if m["method"] == "tsne" else "PCA")


def confusion_markdown(record: dict, split: str = "test", lang: str = DEFAULT) -> str:
    """The split's confusion matrix as a Markdown table: rows the truth, columns the answer, the right
    answers (the diagonal) in bold."""
    classes = [i18n.class_name(c, lang) for c in record["classes"]]
    matrix = record[split]["confusion"]
    head = f"| {say(lang, 'fv.explorer.corner')} | " + " | ".join(classes) + f" | {say(lang, 'fv.explorer.right')} |"
    rows = [f"| **{c}** | " + " | ".join(f"**{v}**" if i == j else str(v) for j, v in enumerate(row))
            + f" | {row[i]}/{sum(row)} |" for i, (c, row) in enumerate(zip(classes, matrix, strict=True))]
    total = sum(map(sum, matrix))
    trace = sum(matrix[i][i] for i in range(len(classes)))
    diagonal = say(lang, "fv.explorer.diagonal", split=split_title(split, lang).capitalize(), trace=trace, total=total)
    return "\n".join([head, "|" + "---|" * (len(classes) + 2), *rows, f"\n{diagonal}"])


def all_mistakes(record: dict) -> list[dict]:
    """The test split's mistakes, then the validation split's, each most confident first."""
    return record["test"]["mistakes"] + record["val"]["mistakes"]


def mistake_caption(m: dict, lang: str = DEFAULT) -> str:
    """Under a mistake's thumbnail: truth, answer and the answer's calibrated probability."""
    return say(lang, "fv.explorer.caption", truth=i18n.class_name(m["truth"], lang),
               answer=i18n.class_name(m["answer"], lang), probability=f"{m['probability']:.2f}",
               split=split_title(m["split"], lang))


def mistakes_markdown(mistakes: list[dict], on_disk: bool, lang: str = DEFAULT) -> str:
    """Every mistake in words (the photos' names when they are not on this server)."""
    if not mistakes:
        return say(lang, "fv.explorer.no_mistakes")
    note = say(lang, "fv.explorer.click") if on_disk else say(lang, "fv.not_here")
    rows = [f"| `{m['photo']}` | {split_title(m['split'], lang)} | {i18n.class_name(m['truth'], lang)} | "
            f"{i18n.class_name(m['answer'], lang)} | {m['probability']:.2f} |" for m in mistakes]
    return "\n".join([note, "", say(lang, "fv.explorer.head"), "|---|---|---|---|---|", *rows])


def _marker(split: str, x: float, y: float, colour: str, wrong: bool, i: int, tip: str) -> str:
    """One point: a circle (training), square (validation), triangle (test) or cross (non-food); a wrong answer
    gets a dark outline."""
    stroke = ' stroke="#111" stroke-width="1.6"' if wrong else ' stroke="#fff" stroke-width="0.5"'
    attrs = f'data-i="{i}" fill="{colour}"{stroke}'
    if split == "train":
        shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill-opacity="0.55" {attrs}>'
        end = "</circle>"
    elif split == "val":
        shape = f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" {attrs}>'
        end = "</rect>"
    elif split == "test":
        shape = f'<path d="M{x:.1f},{y - 5.5:.1f} L{x + 5:.1f},{y + 3.5:.1f} L{x - 5:.1f},{y + 3.5:.1f} Z" {attrs}>'
        end = "</path>"
    else:
        shape = (f'<path d="M{x - 4:.1f},{y - 4:.1f} L{x + 4:.1f},{y + 4:.1f} M{x - 4:.1f},{y + 4:.1f} '
                 f'L{x + 4:.1f},{y - 4:.1f}" stroke="{colour}" stroke-width="2.2" data-i="{i}">')
        end = "</path>"
    return f"{shape}<title>{escape(tip)}</title>{end}"


def _width(text: str) -> float:
    """A legend text's width in SVG units at font-size 12 (a CJK character about twice a Latin one)."""
    return sum(12.0 if ord(ch) >= 0x2E80 else 7.0 for ch in text)


def map_svg(record: dict, lang: str = DEFAULT) -> str:
    """The record's 2-D map as an SVG: colour by true class, shape by split, outlined when the answer is wrong;
    each point's tooltip names its photo, split, truth and answer."""
    classes = record["classes"]
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    named = {c: i18n.class_name(c, lang) for c in classes}
    pad, span = 12, SIDE - 24
    order = {"train": 0, NONFOOD: 1, "val": 2, "test": 3}  # held-out photos drawn last, on top
    shapes, every = [], points(record)
    for i, p in sorted(enumerate(every), key=lambda ip: order.get(ip[1]["split"], 0)):
        wrong = p["label"] is not None and p["label"] != p["answer"]
        answer = named.get(p["answer"], p["answer"])
        tip = (f"{p['photo']} · {split_title(p['split'], lang)} · "
               + (f"{named[p['label']]} → {answer}" if p["label"] is not None
                  else say(lang, "fv.explorer.answered", answer=answer)))
        shapes.append(_marker(p["split"], pad + p["x"] * span, pad + p["y"] * span,
                              colour.get(p["label"], NO_CLASS), wrong, i, tip))
    legend, x = [], 8.0
    for c, fill in [*((named[c], f) for c, f in colour.items()), (split_title(NONFOOD, lang), NO_CLASS)]:
        legend.append(f'<circle cx="{x + 5:.0f}" cy="{SIDE + 14}" r="5" fill="{fill}"/>'
                      f'<text x="{x + 14:.0f}" y="{SIDE + 18}">{escape(c)}</text>')
        x += 24 + _width(c)
    legend.append(f'<text x="8" y="{SIDE + 38}">{escape(say(lang, "fv.explorer.legend"))}</text>')
    legend.append(f'<text x="8" y="{SIDE + 58}" fill="#666">{escape(say(lang, "fv.explorer.hover"))}</text>')
    aria = escape(say(lang, "fv.explorer.aria", n=len(every)), quote=True)
    svg = (f'<svg viewBox="0 0 {SIDE} {SIDE + LEGEND}" width="100%" style="max-width:{SIDE}px" role="img" '
           f'aria-label="{aria}" font-size="12" font-family="sans-serif" xmlns="http://www.w3.org/2000/svg">')
    frame = f'<rect width="{SIDE}" height="{SIDE}" fill="#fafafa" stroke="#ddd"/>'
    return f'{svg}{frame}{"".join(shapes)}{"".join(legend)}</svg>'


# A click on a point of the map: its index and photo, as a select event (gr.SelectData) of the gr.HTML.
MAP_CLICK_JS = """element.addEventListener('click', (event) => {
    const point = event.target.closest('[data-i]');
    if (point) trigger('select', {index: Number(point.dataset.i), value: point.dataset.i});
});"""
MAP_CSS = "svg [data-i] { cursor: pointer; } svg [data-i]:hover { stroke: #000; stroke-width: 2.5; }"
