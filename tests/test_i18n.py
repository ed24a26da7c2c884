"""The page's words (vit/app/i18n.py): one table per language with the same keys and fields, every text the
page shows said from them, Japanese in full where the visitor's language is Japanese, English for the API."""
import ast
import dataclasses
import re
import shutil
import string
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from conftest import ROOT, make_image

from vit.app import explorer_tab, explorer_view, handlers, i18n, inside_tab, ui
from vit.data.course import Library
from vit.data.images import ImageError, open_image
from vit.explain.errors import RequestError
from vit.explain.faithfulness import Faithfulness
from vit.explain.rollout import parse_head
from vit.explore import inside, inside_words
from vit.explore.bank import Neighbour, load_bank
from vit.explore.explorer import FILE as EXPLORER_FILE
from vit.explore.explorer import RecordError, Records, points
from vit.serve import model_set
from vit.trust import Trust

# What may stay in Latin letters on a Japanese page: names (models, methods, files, libraries, papers), units
NAMES = {"FoodVision", "ViT", "Vision", "Transformer", "ImageNet", "timm", "VisionTransformer", "EfficientNet", "Lite0",
         "Scratch", "Hybrid", "DeiT", "CNN", "LRP", "RISE", "Grad", "CAM", "Chefer", "Dosovitskiy", "AUC", "CPU", "MB",
         "ms", "px", "M", "JPEG", "PNG", "WebP", "lrp", "rise", "attention", "rollout", "chefer", "occlusion", "grad",
         "cam", "mean", "max", "head", "docs", "trust", "md", "json", "ood", "safetensors", "sha", "jpg", "trunc",
         "normal", "efficientnet", "lite0", "pytorch", "model", "PyPI", "vit", "hybrid", "s16", "tf", "p8", "test",
         "t", "SNE", "PCA", "p"}  # t-SNE and PCA: the explorer's maps; p: a percentile ("p40")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def english_left(text: str) -> list[str]:
    """Latin words in `text` that are not names or units (a Japanese text should have none); a command in
    `backticks`, a template's {field} and the page's 🌐 link are not words."""
    text = re.sub(r"</?(details|summary)>|https?://\S+|`[^`]*`|\{\w*(![rsa])?\}|\[🌐 [^]]*\]\([^)]*\)", " ", text)
    return [w for w in LATIN_WORD.findall(text) if w not in NAMES and re.fullmatch("[A-Za-z]+", w)]  # ids: names


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_both_tables_have_the_same_keys_and_fields():
    """The same keys; a Japanese template fills no field the English one lacks (the code gives the English
    one's values; a translation may leave out a detail that is English by nature, e.g. Pillow's message)."""
    assert set(i18n.EN) == set(i18n.JA), {"only in EN": set(i18n.EN) - set(i18n.JA),
                                          "only in JA": set(i18n.JA) - set(i18n.EN)}
    assert all(k.startswith("fv.") for k in i18n.EN)  # not one of Gradio's own namespaces ("slider" ...)
    differ = {k: (fields_of(i18n.EN[k]), fields_of(i18n.JA[k])) for k in i18n.EN
              if not fields_of(i18n.JA[k]) <= fields_of(i18n.EN[k])}
    assert not differ, differ
    dropped = {k for k in i18n.EN if fields_of(i18n.JA[k]) != fields_of(i18n.EN[k])}
    assert dropped == {"fv.err.image.too_large", "fv.err.image.damaged", "fv.err.image.unreadable"}, dropped


def test_the_japanese_table_is_japanese():
    """Every Japanese entry but names and units holds Japanese, and no English word."""
    same = {"fv.lang", "fv.epochs.short", "fv.header.one_model", "fv.head.n", "fv.col.mb", "fv.init.imagenet", "fv.method.grad-cam", "fv.method.lrp",
            "fv.method.rise", "fv.init.digest", "fv.init.source", "fv.arch.family", "fv.or.sep", "fv.or", "fv.list",
            "fv.and", "fv.switch", "fv.near.caption", "fv.near.caption_pct", "fv.explorer.caption"}
    japanese = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
    not_ja = [k for k, v in i18n.JA.items() if k not in same and not japanese.search(v)]
    assert not not_ja, not_ja
    english = {k: english_left(v) for k, v in i18n.JA.items()
               if english_left(v) and k not in ("fv.err.request.unknown_head", "fv.lang")}
    assert not english, english  # (unknown_head quotes the API's own words: 'mean', 'max', 'head 1')


def test_the_browser_gets_both_languages_and_the_start_up_texts():
    t = i18n.translations({"en": {"fv.header": "Hello"}, "ja": {"fv.header": "こんにちは"}}).translations_dict
    assert set(t) == {"en", "ja"} and set(t["en"]) == set(t["ja"]) >= set(i18n.EN)
    assert t["ja"]["fv.header"] == "こんにちは" and t["ja"]["fv.classify"] == "分類する" and t["en"]["fv.lang"] == "en"
    only_en = i18n.translations({"en": {"fv.page.new": "New"}}).translations_dict
    assert only_en["ja"]["fv.page.new"] == "New"  # a key missing in a language reads English, never a raw key
    assert str(i18n.marker("fv.photo")).startswith("__i18n__")


def test_the_probe_gives_the_language_and_anything_else_reads_english():
    assert [i18n.lang_of(v) for v in ("ja", "en", "fr", None, str(i18n.marker("fv.lang")))] == ["ja", "en", "en", "en",
                                                                                                   "en"]


def test_class_names_have_a_japanese_name_and_others_keep_theirs():
    assert ui.classes_text(["pizza", "steak", "sushi"], "ja") == "ピザかステーキか寿司"
    assert ui.classes_text(["pizza", "steak", "sushi"]) == "pizza, steak or sushi"
    assert ui.classes_text(["apple_pie", "waffles"], "ja") == "apple_pieかwaffles"
    assert i18n.class_name("sushi", "ja") == "寿司" and i18n.class_name("sushi", "fr") == "sushi"


def errors(tmp_path) -> list[Exception]:
    """One of every error a person may read, raised by the code that raises it."""
    found = []
    bad, empty = tmp_path / "notes.jpg", tmp_path / "empty.jpg"
    bad.write_text("shopping list")
    empty.write_bytes(b"")
    for source in (None, str(bad), str(empty)):
        with pytest.raises(ImageError) as e:
            open_image(source)
        found.append(e.value)
    for head in ("nose", "head 9", 7):
        with pytest.raises(RequestError) as e:
            parse_head(head, 2)
        found.append(e.value)
    models = model_set.ModelSet({"scratch_vit": ROOT / "checkpoints" / "scratch_vit.safetensors"})
    with pytest.raises(model_set.ModelError) as e:
        models.get("resnet")
    found.append(e.value)
    cnn = model_set.ModelSet({"effnet": ROOT / "checkpoints" / "effnet.safetensors"})
    with pytest.raises(RequestError) as e:
        inside_tab.inside_view(cnn, "effnet")  # the Inside tab and /inside are for ViTs
    found.append(e.value)
    other = tmp_path / "scratch_vit.safetensors"  # and why a ViT's Inside figures are missing (a note, not raised)
    other.write_bytes(b"other weights")
    found.append(inside.record_for(other)[1])
    (tmp_path / inside.FILE_NAME).write_text((ROOT / "checkpoints" / inside.FILE_NAME).read_text())
    found.append(inside.record_for(other)[1])
    assert [e.code for e in found[-3:]] == ["request.no_attention", "inside.not_measured", "inside.stale"]
    return found + explorer_errors(tmp_path) + bank_notes(tmp_path)


RECORDS = Records.read(ROOT / "checkpoints" / EXPLORER_FILE)


def explorer_errors(tmp_path) -> list[Exception]:
    """Why a model has no explorer record (no file, an unreadable one, another format, no record in it), and why
    the Explorer tab opens nothing (a photo not on this server, a non-food point, a point the map lacks)."""
    found = []
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / EXPLORER_FILE).write_text("{not json")
    (tmp_path / "older" / EXPLORER_FILE).parent.mkdir()
    (tmp_path / "older" / EXPLORER_FILE).write_text('{"format": "foodvision-explorer/0"}')
    for folder in ("missing", "damaged", "older"):
        found.append(Records.read(tmp_path / folder / EXPLORER_FILE).note)
    for records in (Records.read(tmp_path / "missing" / EXPLORER_FILE), Records({})):
        with pytest.raises(RecordError) as e:
            records.get("effnet")
        found.append(e.value)
    models = model_set.ModelSet({"effnet": ROOT / "checkpoints" / "effnet.safetensors"})
    ex = explorer_tab.Explorer(handlers.Handlers(models, "effnet", Library([], cache=tmp_path, download=False), RECORDS))
    nonfood = next(i for i, p in enumerate(points(RECORDS.get("effnet"))) if p["split"] == "nonfood")
    for index in (nonfood, 10**6):
        with pytest.raises(RecordError) as e:
            explorer_tab.Explorer.open_point.__wrapped__(ex, "effnet", SimpleNamespace(index=index))
        found.append(e.value)
    with pytest.raises(RecordError) as e:
        ex.open_photo("effnet", "pizza_steak_sushi/test/pizza/nowhere.jpg")
    found.append(e.value)
    assert [e.code for e in found] == ["explorer.no_file", "explorer.unreadable", "explorer.format",
                                       "explorer.no_record", "explorer.no_record", "explorer.nonfood",
                                       "explorer.no_point", "explorer.not_here"]
    return found


def bank_notes(tmp_path) -> list[Exception]:
    """Why an answer has no nearest training photos: no bank, a bank of other weights, a damaged checkpoint."""
    folder, bank = tmp_path / "banked", ROOT / "checkpoints" / "banks" / "scratch_vit.safetensors"
    (folder / "banks").mkdir(parents=True)
    shutil.copy(ROOT / "checkpoints" / "timm_vit.safetensors", folder / "scratch_vit.safetensors")  # other weights
    shutil.copy(bank, folder / "banks" / "scratch_vit.safetensors")
    shutil.copy(bank, folder / "banks" / "effnet.safetensors")
    (folder / "effnet.safetensors").write_bytes(b"not a checkpoint")
    found = [load_bank(folder / f"{name}.safetensors")[1] for name in ("timm_vit", "scratch_vit", "effnet")]
    assert [e.code for e in found] == ["bank.none", "bank.stale", "bank.damaged"]
    return found


def test_every_error_a_person_reads_is_in_the_tables(tmp_path):
    """The English table says exactly what the error says (the API's text); the Japanese one says it in Japanese."""
    for e in errors(tmp_path):
        assert e.code and f"fv.err.{e.code}" in i18n.EN, e
        assert i18n.said(e, "en") == str(e)
        assert i18n.said(e, "ja") != str(e) and re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", i18n.said(e, "ja"))


def test_a_handlers_error_is_said_in_the_pages_language(tmp_path, tiny_checkpoints):
    h = handlers.Handlers(model_set.ModelSet(tiny_checkpoints).load(), "effnet")
    bad = tmp_path / "notes.jpg"
    bad.write_text("shopping list")
    value = {"path": str(bad), "orig_name": bad.name, "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(gr.Error, match="notes.jpg は、このアプリで読める画像ではありません"):
        h.show(value, "effnet", None, 1, "mean", 0.5, 0.9, "ja")
    with pytest.raises(gr.Error, match="notes.jpg is not an image this app can read"):
        h.show(value, "effnet", None, 1, "mean", 0.5, 0.9)  # the API: English
    with pytest.raises(gr.Error, match="notes.jpg は"):
        h.check_upload(value, "ja")


@pytest.fixture(scope="module")
def answered(tiny_checkpoints):
    """(handlers, predictor, result) of a tiny model, its result given a verdict and a score."""
    models = model_set.ModelSet(tiny_checkpoints).load()
    h = handlers.Handlers(models, "scratch_vit")
    p = models.get("scratch_vit")
    r = p.explain(make_image(3), "attention")
    f = Faithfulness(0.1, 0.8, 0.3, 0.4, [1.0, 0.0], [0.0, 1.0], 1, "blur", [1.0, 0.5], [0.0, 0.5], (0, 1))
    return h, p, dataclasses.replace(r, faithfulness=f)


def scale_cases(p, r) -> dict:
    """A result for every way the scale line reads: attention by mean, max and one head; rollout with and without
    a discard; a nearly uniform row; a map on its own relative scale."""
    rollout = p.explain(make_image(3), "rollout")
    flat = dataclasses.replace(r, heat=np.full_like(r.heat, 1.0 / r.heat.size))
    return {"mean": r, "max": dataclasses.replace(r, controls={**r.controls, "head": "max"}),
            "head": dataclasses.replace(r, controls={**r.controls, "head": 1}), "rollout": rollout,
            "rollout kept": dataclasses.replace(rollout, controls={**rollout.controls, "discard": 0.0}),
            "uniform": flat, "relative": dataclasses.replace(r, method="grad-cam")}


def inside_texts(lang: str) -> dict[str, str]:
    """Every sentence of the Inside tab in `lang`, from the committed record of both ViTs (both readings of
    each panel: the scratch ViT's selective attention, the hybrid's even one), the contrast above them, and why
    a checkpoint has no record."""
    records, words = inside.read(ROOT / "checkpoints" / inside.FILE_NAME), i18n.words(lang)
    _, why = inside.record_for(ROOT / "checkpoints" / "effnet.safetensors")  # a CNN: not measured
    texts = {"contrast": inside_words.contrast_text({f"m{n}": r for n, r in enumerate(records.values())}, words),
             "none": inside_words.distance_text(None, i18n.said(why, lang), words),
             "intro": i18n.say(lang, "fv.inside.intro")}
    for i, r in records.items():
        texts |= {f"{i} filters": inside_words.filters_text(r.weights, r.patch_px, words),
                  f"{i} position": inside_words.position_text(r.weights, words),
                  f"{i} distance": inside_words.distance_text(r, words=words)}
    return texts


def explorer_texts(h, p, lang: str) -> dict[str, str]:
    """Every text of the Explorer tab in `lang`, from the committed record (the map's legend, tooltips without
    their photos' names, and label), and of the nearest training photos under an answer: as near as usual,
    farther, far (out of distribution), named (not on this server), none (no bank)."""
    record, texts = RECORDS.get("effnet"), {}
    svg = explorer_view.map_svg(record, lang)
    words = re.findall(r"<text[^>]*>([^<]*)</text>", svg) + re.findall(r'aria-label="([^"]*)"', svg)
    words += [tip.split(" · ", 1)[1] for tip in re.findall(r"<title>([^<]*)</title>", svg)]  # after the photo's name
    texts |= {"summary": explorer_view.summary_text(record, "EfficientNet", lang), "map": " ".join(words),
              "confusion": explorer_view.confusion_markdown(record, lang=lang),
              "mistakes": explorer_view.mistakes_markdown(explorer_view.all_mistakes(record), True, lang),
              "mistakes named": explorer_view.mistakes_markdown(explorer_view.all_mistakes(record), False, lang),
              "no mistakes": explorer_view.mistakes_markdown([], True, lang), "intro": i18n.say(lang, "fv.explorer.intro"),
              "caption": explorer_view.mistake_caption(record["test"]["mistakes"][0], lang)}
    near = [Neighbour("set/train/pizza/1.jpg", "pizza", 0.01, 40.0), Neighbour("set/train/sushi/2.jpg", "sushi", 0.02)]
    for name, (hits, in_distribution) in {"usual": (near, True), "out": (near, False),
                                          "farther": ([Neighbour("set/train/steak/3.jpg", "steak", 0.4, 99.0)], True),
                                          "none": ([], True)}.items():
        trust = Trust(in_distribution, 0.5, 1.0, ["pizza"], 0.8, "knn")
        result = SimpleNamespace(neighbours=hits, neighbours_note=load_bank(ROOT / "nowhere.safetensors")[1], trust=trust)
        texts[f"neighbours {name}"] = h.neighbours(p, result, lang).neighbours_text
    return texts


def page_texts_ja(h, p, r) -> dict[str, str]:
    """Every text the page builds, in Japanese, for every verdict a result may carry."""
    models = h.models
    texts = {"header": ui.header_text(models, "ja"), "status": ui.status_text(models, "ja"),
             "card": ui.status_card(models, "timm_vit", "ja"), "answer": ui.answer_text(p, r, "ja"),
             "faithfulness": ui.faithfulness_text(r, lang="ja"), "rows": repr(ui.comparison_rows(models, lang="ja")),
             "headers": " ".join(ui.comparison_headers("ja")), "reliability": ui.reliability(models, "ja")[1],
             "compare": ui.compare_text(p, r, "grad-cam", False, "ja"), "tiny": i18n.say("ja", "fv.warn.tiny", width=8,
                                                                                         height=8)}
    for name, shown in scale_cases(p, r).items():
        texts[f"scale {name}"] = ui.faithfulness_text(shown, lang="ja")
    for name, text in inside_texts("ja").items():
        texts[f"inside {name}"] = text
    for name, text in explorer_texts(h, p, "ja").items():
        texts[f"explorer {name}"] = text
    for name, trust in {"no gate": None, "out": Trust(False, 1.5, 1.1, [], 0.8, "knn"),
                        "sure": Trust(True, 0.4, 1.1, ["pizza"], 0.8, "knn"),
                        "unsure": Trust(True, 0.4, 1.1, ["pizza", "steak"], 0.8, "knn"),
                        "empty": Trust(True, 0.4, 1.1, [], 0.8, "knn")}.items():
        shown = dataclasses.replace(r, trust=trust)
        texts[f"verdict {name}"] = ui.verdict_text(p, shown, "ja")
        texts[f"answer {name}"] = ui.answer_text(p, shown, "ja")
    return texts


def test_every_text_the_page_builds_reads_japanese(answered):
    """Rendered in Japanese, no text of the page keeps an English word (names and units aside)."""
    left = {name: english_left(text) for name, text in page_texts_ja(*answered).items() if english_left(text)}
    assert not left, left


def test_the_committed_models_cards_read_japanese():
    models = model_set.ModelSet(model_set.checkpoint_paths(ROOT / "checkpoints"))
    for i in models.ids:
        card = ui.model_card(models.meta[i], models.titles[i], models.paths[i], "ja")
        assert not english_left(card), (i, english_left(card))
        english = ui.model_card(models.meta[i], models.titles[i], models.paths[i])
        assert "Started from:** " + ui.init_text(models.meta[i]["init"]) in english


def test_english_init_and_epochs_say_what_the_checkpoint_module_says():
    from vit.models.checkpoint import describe_epochs, describe_init, read_meta

    for path in sorted((ROOT / "checkpoints").glob("*.safetensors")):
        meta = read_meta(path)
        assert ui.init_text(meta["init"]) == describe_init(meta["init"])
        assert ui.init_text(meta["init"], short=True) == describe_init(meta["init"], short=True)
        assert ui.epochs_text(meta["recipe"]) == describe_epochs(meta["recipe"])
        assert ui.epochs_text(meta["recipe"], short=True) == describe_epochs(meta["recipe"], short=True)


def test_a_reused_map_says_so_instead_of_its_time(answered):
    _, p, r = answered
    again = dataclasses.replace(r, map_reused=True, map_ms=0.0)
    assert "attention map reused" in ui.latency_text(p, again) and "0.0 ms attention map" not in ui.latency_text(p, again)
    assert f"{r.map_ms:.1f} ms attention map" in ui.latency_text(p, dataclasses.replace(r, map_reused=False))
    assert "マップは再利用" in ui.latency_text(p, again, "ja")


def test_words_come_first_and_figures_behind_them(answered):
    """Figures one click away; but for the map's scale line (issue 30: the drawn row's peak and entropy beside
    the overlay), which comes first and stays in view."""
    _, p, r = answered
    scale = ui.scale_text(r)
    assert scale and "<details>" not in scale and ui.faithfulness_text(r).startswith(scale + "  \n")
    for text in (ui.verdict_text(p, dataclasses.replace(r, trust=Trust(True, 0.4, 1.1, ["pizza"], 0.8, "knn"))),
                 ui.answer_text(p, r), ui.faithfulness_text(r).removeprefix(scale)):
        plain, figures = text.split("<details>")
        assert not re.search(r"\d\.\d", plain) and re.search(r"\d\.\d", figures), text  # no figure before a click
    assert "Yes:" in ui.faithfulness_text(r)  # 0.1 / 0.3 and 0.8 / 0.4 clear the bar


def test_the_explorer_and_the_neighbours_say_in_english_what_they_said_before_issue_32(answered):
    """In English (the API's and the default page's), the Explorer tab and the nearest training photos read as
    they did before their words moved into the tables."""
    h, p, _ = answered
    en = explorer_texts(h, p, "en")
    assert en["summary"].startswith("**EfficientNet**: 72 of the 75 test photos right (96.0%), 3 mistakes;")
    assert "Test split: 72 of 75 on the diagonal." in en["confusion"] and "| truth ↓ · answer → |" in en["confusion"]
    assert en["caption"].endswith("(test)") and " → " in en["caption"] and en["no mistakes"] == "No mistakes."
    assert "● training  ■ validation  ▲ test  ✕ non-food" in en["map"] and "answered " in en["map"]
    assert en["neighbours usual"].startswith("**Nearest training photos**, as near as usual")
    assert en["neighbours none"] == ("ℹ️ *No nearest training photos: this model has no bank of training photos "
                                     "(python -m vit.explore adds one).*")
    ja = explorer_texts(h, p, "ja")
    assert "テスト分割：対角線上は 75 枚中 72 枚。" in ja["confusion"] and "| **ピザ** |" in ja["confusion"]
    assert "近い学習写真はありません" in ja["neighbours none"] and "学習写真のバンクがありません" in ja["neighbours none"]
    assert ui.neighbour_caption(Neighbour("x", "sushi", 0.1234, 40.0), "ja") == "寿司 · 0.123 · p40"


def test_the_explorer_tab_says_its_errors_in_the_pages_language(tmp_path):
    models = model_set.ModelSet({"effnet": ROOT / "checkpoints" / "effnet.safetensors"})
    ex = explorer_tab.Explorer(handlers.Handlers(models, "effnet", Library([], cache=tmp_path, download=False), RECORDS))
    nonfood = next(i for i, p in enumerate(points(RECORDS.get("effnet"))) if p["split"] == "nonfood")
    with pytest.raises(gr.Error, match="食べ物以外の画像"):
        ex.open_point("effnet", SimpleNamespace(index=nonfood), "ja")
    with pytest.raises(gr.Error, match="non-food images the gate is measured against"):
        ex.open_point("effnet", SimpleNamespace(index=nonfood))
    test = next(i for i, p in enumerate(points(RECORDS.get("effnet"))) if p["split"] == "test")
    with pytest.raises(gr.Error, match="このサーバーに（まだ）ないため"):  # the photos are not on this server
        ex.open_point("effnet", SimpleNamespace(index=test), "ja")
    no_record = explorer_tab.Explorer(handlers.Handlers(models, "effnet", records=Records.read(tmp_path / EXPLORER_FILE)))
    said = no_record.show("effnet", "ja").summary  # the record's note inside the error, in Japanese too
    assert said.startswith("ℹ️ 'effnet' のエクスプローラー記録がありません：") and "で書き出せます" in said, said


def test_the_explorer_tab_is_said_again_in_a_new_language_once_opened(tmp_path):
    """Gradio's Settings -> Language: the Explorer tab, once shown, is said again in the new language; a tab not
    opened yet stays as it is (and looks no photo up)."""
    models = model_set.ModelSet({"effnet": ROOT / "checkpoints" / "effnet.safetensors"})
    ex = explorer_tab.Explorer(handlers.Handlers(models, "effnet", Library([], cache=tmp_path, download=False), RECORDS))
    assert ex.retell(False, "effnet", "ja") == explorer_tab.Explored()
    said = ex.retell(True, "effnet", "ja")
    assert said.opened and "テスト分割" in said.confusion and said.summary.startswith("**EfficientNet-Lite0**：")
    assert ex.show("effnet").summary.startswith("**EfficientNet-Lite0**: ")


# Page text written outside the tables: string literals in the page's modules that read like English words.
PAGE_MODULES = [ROOT / "app.py", *(ROOT / "vit" / "app" / f"{m}.py" for m in ("page", "ui", "handlers", "inside_tab",
                                                                               "explorer_tab", "explorer_view"))]
PAGE_ARGS = {"label", "info", "placeholder", "title", "x_title", "y_title", "color_title"}
TEXT_VALUES = {"Markdown", "HTML", "Button", "Tab", "Accordion", "Textbox"}  # components whose value is text


def literals(path: Path):
    """(line, text) of every string literal in `path` but docstrings and assertions' messages (for developers),
    f-string pieces included."""
    tree = ast.parse(path.read_text())
    skip = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    skip |= {id(c) for n in ast.walk(tree) if isinstance(n, ast.Assert) and n.msg for c in ast.walk(n.msg)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def test_no_page_text_is_written_outside_the_tables():
    """A sentence of two English words or more in the page's code (not a docstring, a key, an id, CSS or a log)
    is text that a Japanese visitor would read in English: it belongs in the tables."""
    allowed = re.compile(r"^(fv\.|#|\.|\s*/\*|<|\(|\{|gradio\.|head \d|forward pass|FoodVision ViT$)")
    sentence = re.compile(r"\b[A-Za-z]{2,} [a-z]{2,}\b")
    found = [f"{path.name}:{line}: {text!r}" for path in PAGE_MODULES for line, text in literals(path)
             if sentence.search(text) and not allowed.match(text.strip()) and "\n" not in text.strip()[:0]
             and not re.search(r"\b(lazy|ModelSet|Predictor|Result|gr\.|Gradio|python -m)\b", text)
             and "=>" not in text]  # JavaScript (an arrow function): code, not text
    assert not found, "page text outside vit/app/i18n.py's tables:\n" + "\n".join(found)


def test_no_component_label_is_a_plain_string():
    """Labels, info lines, titles and values of the page's components are markers of the tables."""
    found = []
    for path in PAGE_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "gr":
                text = node.func.attr in TEXT_VALUES
                args = [k.value for k in node.keywords if k.arg in PAGE_ARGS or (text and k.arg == "value")]
                found += [f"{path.name}:{a.lineno}: gr.{node.func.attr}({a.value!r})" for a in args + node.args[:text]
                          if isinstance(a, ast.Constant) and isinstance(a.value, str) and re.search("[A-Za-z]{2}", a.value)
                          and a.value != "FoodVision ViT"]  # the page's <title>: a name (and not translatable)
    assert not found, found


def test_a_switch_of_language_retells_the_answer_on_screen(answered, tmp_path):
    """Gradio's Settings -> Language: the texts of the answer shown are said again in the new language."""
    h, _, _ = answered
    path = tmp_path / "photo.png"
    make_image(5, (64, 48)).save(path)
    shown = h.show({"path": str(path), "meta": {"_type": "gradio.FileData"}}, "effnet", None, 1, "mean", 0.5, 0.9).shown
    ja = h.retell(shown, "ja")
    assert "このモデルには分布外ゲートがありません" in ja.verdict and "速さと大きさ" in ja.timing
    assert "近い学習写真はありません" in ja.neighbours_text  # the tiny model has no bank: that, in Japanese
    assert set(ja.label) <= {"ピザ", "ステーキ", "寿司"} and ja.overlay is handlers.KEEP  # the pictures stay
    assert h.retell(shown, "en").verdict == h.view(
        {"path": str(path), "meta": {"_type": "gradio.FileData"}}, "effnet", None, 1, "mean", 0.5, 0.9, False).verdict
    assert h.retell(None, "ja") == handlers.View()
