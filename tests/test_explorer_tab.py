"""The Explorer tab (vit/app/explorer_tab.py, vit/app/explorer_view.py) and the nearest training photos under the
Classify tab's answer (vit/app/handlers.py, vit/app/ui.py), without a browser or a server."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from conftest import CLASSES, ROOT, SHARED_DATA, make_image

from vit.app import api, explorer_tab, explorer_view, handlers, ui
from vit.data.course import Library
from vit.explore.bank import Neighbour
from vit.explore.explorer import FILE, Records, points
from vit.serve import model_set
from vit.trust import Trust

RECORDS = Records.read(ROOT / "checkpoints" / FILE)
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")


def handlers_over(tiny_checkpoints, tmp_path, roots: list[Path], records: Records = RECORDS,
                  load: bool = False) -> handlers.Handlers:
    """Handlers over the tiny models (their metadata; `load`: the models too), with `records` and the photos under
    `roots` only."""
    models = model_set.ModelSet(tiny_checkpoints)
    if load:
        models.load()
    return handlers.Handlers(models, "scratch_vit", Library(roots, cache=tmp_path / "cache", download=False), records)


def test_the_map_draws_every_point_names_its_photo_and_marks_the_wrong_answers():
    record = RECORDS.get("scratch_vit")
    svg, every = explorer_view.map_svg(record), points(record)
    assert len(re.findall(r'data-i="\d+"', svg)) == len(every) == 633
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert sorted(t.split(" · ")[0] for t in titles) == sorted(p["photo"] for p in every)  # a tooltip per photo
    wrong = sum(p["label"] is not None and p["label"] != p["answer"] for p in every)
    assert svg.count('stroke="#111"') == wrong > 0  # the dark outline of a wrong answer


def test_the_confusion_table_has_the_truth_in_rows():
    text = explorer_view.confusion_markdown(RECORDS.get("effnet"))
    assert "| **pizza** | **24** | 1 | 0 | 24/25 |" in text and "72 of 75 on the diagonal" in text


@needs_data
def test_the_tab_shows_every_mistake_with_its_photo(tiny_checkpoints, tmp_path):
    ex = explorer_tab.Explorer(handlers_over(tiny_checkpoints, tmp_path, [SHARED_DATA], load=True))
    shown = ex.show("timm_vit")
    mistakes = RECORDS.get("timm_vit")["test"]["mistakes"] + RECORDS.get("timm_vit")["val"]["mistakes"]
    assert shown.shown == [m["photo"] for m in mistakes] and shown.mistakes["visible"]
    assert [caption for _, caption in shown.mistakes["value"]] == [explorer_view.mistake_caption(m) for m in mistakes]
    assert "69 of the 75 test photos right" in shown.summary and "<svg" in shown.map
    assert "| **steak** |" in shown.confusion
    opened = ex.open_mistake("timm_vit", shown.shown, SimpleNamespace(index=2))
    assert opened.model == "timm_vit"
    assert Path(opened.image).read_bytes() == (SHARED_DATA / mistakes[2]["photo"]).read_bytes()
    assert set(opened.label) == set(CLASSES) and opened.verdict  # the answer at once, the map next
    ja = ex.open_mistake("timm_vit", shown.shown, SimpleNamespace(index=2), "ja")  # on a Japanese page
    assert set(ja.label) == {"ピザ", "ステーキ", "寿司"} and re.search("[\u3040-\u30ff]", ja.verdict), ja.verdict


def test_without_the_photos_the_mistakes_are_named(tiny_checkpoints, tmp_path):
    ex = explorer_tab.Explorer(handlers_over(tiny_checkpoints, tmp_path, []))
    shown = ex.show("effnet")
    assert shown.mistakes["visible"] is False and shown.shown == []
    assert "not on this server" in shown.mistakes_text
    assert "`pizza_steak_sushi/test/steak/1627703.jpg`" in shown.mistakes_text
    with pytest.raises(gr.Error, match="not on this server"):
        ex.open_point("effnet", SimpleNamespace(index=0))


def test_a_non_food_point_opens_nothing_and_says_why(tiny_checkpoints, tmp_path):
    ex = explorer_tab.Explorer(handlers_over(tiny_checkpoints, tmp_path, []))
    index = next(i for i, p in enumerate(points(RECORDS.get("effnet"))) if p["split"] == "nonfood")
    with pytest.raises(gr.Error, match="non-food images the gate is measured against"):
        ex.open_point("effnet", SimpleNamespace(index=index))


def test_a_model_without_an_explorer_record_is_served_and_says_so(tiny_checkpoints, tmp_path):
    h = handlers_over(tiny_checkpoints, tmp_path, [], Records.read(tmp_path / FILE))
    shown = explorer_tab.Explorer(h).show("effnet")
    assert shown.summary.startswith("ℹ️ no explorer record for 'effnet'") and "python -m vit.explore" in shown.summary
    endpoints = {f.__name__: f for f in api.api(h)}
    with pytest.raises(gr.Error, match="no explorer record for 'effnet'"):
        endpoints["explorer"]("effnet")
    assert set(endpoints["explorer"].__doc__.split("Returns:")[1].split()) >= {'{"classes":', '"confusion":'}


def test_the_explorer_endpoint_returns_the_issues_shape(tiny_checkpoints, tmp_path):
    endpoints = {f.__name__: f for f in api.api(handlers_over(tiny_checkpoints, tmp_path, []))}
    view = endpoints["explorer"]("timm_vit")
    assert {"classes", "confusion", "mistakes", "points"} <= set(view) and view["classes"] == CLASSES
    assert all(set(m) >= {"photo", "split", "truth", "answer", "probability"} for m in view["mistakes"])
    assert all(set(p) == {"x", "y", "split", "label", "answer", "photo"} for p in view["points"])


def result(neighbours: list[Neighbour], in_distribution: bool | None = True, note: str | None = None):
    trust = Trust(in_distribution, 0.5, 1.0, ["pizza"]) if in_distribution is not None else None
    return SimpleNamespace(neighbours=neighbours, neighbours_note=note, trust=trust)


def test_the_nearest_training_photos_show_as_thumbnails_when_on_disk(tiny_checkpoints, tmp_path):
    for i, c in enumerate(CLASSES):
        (tmp_path / "set" / "train" / c).mkdir(parents=True)
        make_image(i).save(tmp_path / "set" / "train" / c / "1.jpg")
    near = [Neighbour(f"set/train/{c}/1.jpg", c, 0.01 * (i + 1), 10.0 * (i + 1)) for i, c in enumerate(CLASSES)]
    p = SimpleNamespace(class_names=CLASSES)
    h = handlers_over(tiny_checkpoints, tmp_path, [tmp_path])
    v = h.neighbours(p, result(near))
    assert [c for _, c in v.neighbours] == [
        "pizza · 0.010 · p10", "steak · 0.020 · p20", "sushi · 0.030 · p30"]
    assert v.neighbours_text.startswith("**Nearest training photos**, as near as usual")
    assert "`set/" not in v.neighbours_text  # no names: the thumbnails are there
    far = h.neighbours(p, result([Neighbour("set/train/pizza/1.jpg", "pizza", 0.4, 99.0)]))
    assert "farther than usual" in far.neighbours_text
    ood = h.neighbours(p, result(near, in_distribution=False))
    assert ood.neighbours_text.startswith("**The training photos closest to it are far: not look-alikes.**")


def test_without_the_photos_or_a_bank_the_neighbours_are_named_or_said_missing(tiny_checkpoints, tmp_path):
    h = handlers_over(tiny_checkpoints, tmp_path, [])
    p = SimpleNamespace(class_names=CLASSES)
    v = h.neighbours(p, result([Neighbour("set/train/pizza/9.jpg", "pizza", 0.05, 40.0)]))
    assert v.neighbours is None and "1. `set/train/pizza/9.jpg`: pizza · 0.050 · p40" in v.neighbours_text
    note = "this model has no bank of training photos (python -m vit.explore adds one)"
    none = h.neighbours(p, result([], note=note))
    assert none.neighbours_text.startswith("ℹ️ *No nearest training photos: this model has no bank")
    assert ui.neighbour_caption(Neighbour("x", "sushi", 0.1234)) == "sushi · 0.123"


def test_on_the_page_the_pictures_come_after_the_overlay_and_its_score(tiny_checkpoints, tmp_path, monkeypatch):
    """The overlay is sent alone (five thumbnails beside it slowed a click by ~0.05 s, docs/performance.md); the
    nearest photos' thumbnails follow its score (Handlers.after_score, with the curves), once per photo: a redraw
    of the same photo keeps them, a new photo clears them until its own, a newer map drops an older one's. The
    API (no page) gets them at once."""
    import dataclasses

    for i, c in enumerate(CLASSES):
        (tmp_path / "set" / "train" / c).mkdir(parents=True)
        make_image(i).save(tmp_path / "set" / "train" / c / "1.jpg")
    near = [Neighbour(f"set/train/{c}/1.jpg", c, 0.01 * (i + 1), 10.0 * (i + 1)) for i, c in enumerate(CLASSES)]
    h = handlers_over(tiny_checkpoints, tmp_path, [tmp_path], load=True)
    explain = h.explain
    monkeypatch.setattr(h, "explain", lambda *a, **k: (lambda p, r: (p, dataclasses.replace(r, neighbours=near)))(
        *explain(*a, **k)))
    path = tmp_path / "photo.png"
    make_image(7, (64, 48)).save(path)
    value, page = {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}, \
        SimpleNamespace(session_hash="thumbnails")

    def show(head="mean", request=page):
        return h.show(value, "scratch_vit", "rollout", 1, head, 0.5, 0.9, "en", request)

    first = show()
    assert first.neighbours is None and first.neighbours_text.startswith("**Nearest training photos**")
    scored = h.score_view(first.shown, "en", page)  # the score's words alone
    assert "Is the map faithful?" in scored.faithfulness and scored.neighbours is scored.curves is handlers.KEEP
    after = h.after_score(first.shown, "en", page)
    assert after.curves.endswith(".png") and after.faithfulness is handlers.KEEP
    assert [c for _, c in after.neighbours] == ["pizza · 0.010 · p10", "steak · 0.020 · p20", "sushi · 0.030 · p30"]
    redrawn = show("head 1")  # the same photo: its thumbnails stay on the page
    assert redrawn.neighbours is handlers.KEEP and h.after_score(redrawn.shown, "en", page).neighbours is handlers.KEEP
    h.new_photo(page)
    older, newer = show(), show("head 2")
    assert older.neighbours is None and h.after_score(older.shown, "en", page).neighbours is handlers.KEEP  # replaced
    assert len(h.after_score(newer.shown, "en", page).neighbours) == 3
    assert len(show(request=None).neighbours) == 3  # the API: at once
