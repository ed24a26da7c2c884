"""The app in a real browser: Debian's Chromium driven by Playwright (no browser download).

    FOODVISION_SCREENSHOTS=runs/screenshots pytest tests/test_browser.py -s

Skipped when Chromium (/usr/bin/chromium, or $FOODVISION_CHROMIUM) or the playwright package is
missing, unless FOODVISION_REQUIRE_BROWSER=1 (CI sets it), which turns the skip into a failure.
Screenshots go to $FOODVISION_SCREENSHOTS, else to a pytest temporary folder; their paths are printed.
"""
from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, FAMILIES, ROOT, SHARED_DATA
from PIL import Image, ImageDraw

from vit import explain
from vit.app import i18n
from vit.explain.methods import ids
from vit.explain.methods import (
    title as method_title,  # the menu's titles: the registry's
)

pytestmark = pytest.mark.slow  # Chromium on the running app

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as e:  # the browser fixture skips (or fails, in CI) with this reason
    expect = sync_playwright = None
    PLAYWRIGHT_MISSING = f"the playwright package cannot be imported ({e}); pip install -r requirements-test.txt"

CHROMIUM = Path(os.environ.get("FOODVISION_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium phones home, which a closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TITLES = {"scratch_vit": "Scratch ViT", "timm_vit": "Hybrid ViT (timm)", "effnet": "EfficientNet-Lite0"}
TIMEOUT_MS = 90_000  # a request explains and scores its map: seconds on a busy 2-core machine
if expect is not None:
    expect.set_options(timeout=TIMEOUT_MS)  # expect's own default is 5 s
ERROR_TOAST = "[data-testid=toast-body].error"  # gr.Error: a toast with the message
ERROR_STATUS = re.compile(r"^\s*Error\s*$")  # any other exception: 'Error' on each output's status tracker
SHOWN_ERRORS = """() => [...document.querySelectorAll('[data-testid=toast-body].error')]
    .map(t => 'toast: ' + t.innerText.trim().replace(/\\s+/g, ' '))
    .concat([...document.querySelectorAll('[data-testid=status-tracker]')].filter(s => s.innerText.trim() === 'Error')
    .map(s => s.closest('.block')).map(b => 'Error on ' + (b?.id ? '#' + b.id
        : b?.querySelector('[data-testid=block-info], [data-testid=block-label]')?.innerText.trim() ?? '?')))"""
OVERLAY_LOADED = """old => { const img = document.querySelector('#overlay img');
    return img !== null && img.src !== '' && img.src !== old && img.complete && img.naturalWidth > 0; }"""


def _unavailable() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set FOODVISION_CHROMIUM)"
    return PLAYWRIGHT_MISSING if sync_playwright is None else None


@pytest.fixture(scope="module")
def browser():
    reason = _unavailable()
    if reason and os.environ.get("FOODVISION_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FOODVISION_REQUIRE_BROWSER=1 but {reason}")
    if reason:
        pytest.skip(reason)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def js_errors() -> list[str]:
    return []


@pytest.fixture
def page(browser, running_app, js_errors):
    """A fresh tab on the app, with every uncaught JavaScript error collected in js_errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.on("pageerror", lambda e: js_errors.append(str(e)))
    tab.goto(running_app[1])
    tab.locator("#classify-btn").wait_for()
    yield tab
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("FOODVISION_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def food_photo(tmp_path_factory) -> Path:
    """A 480 x 360 drawing of a pizza on a wooden table: enough shape for the overlays to show something."""
    img = Image.new("RGB", (480, 360), (150, 100, 60))
    draw = ImageDraw.Draw(img)
    for y in range(0, 360, 24):
        draw.line([(0, y), (480, y + 8)], fill=(120, 80, 45), width=3)
    draw.ellipse([110, 40, 390, 320], fill=(215, 160, 70))
    draw.ellipse([130, 60, 370, 300], fill=(235, 200, 110))
    for x, y in [(180, 110), (280, 100), (230, 180), (170, 230), (300, 220), (250, 260)]:
        draw.ellipse([x - 18, y - 18, x + 18, y + 18], fill=(170, 40, 35))
    path = tmp_path_factory.mktemp("browser_photos") / "pizza.jpg"
    img.save(path, quality=90)
    return path


def save_shot(target, shots: Path, name: str, **kwargs) -> Path:
    path = shots / f"{name}.png"
    target.screenshot(path=str(path), animations="disabled", **kwargs)
    print(f"screenshot: {path}")
    return path


def upload(page, path: Path) -> None:
    page.locator("#image-input input[type=file]").set_input_files(str(path))
    page.locator("#image-input img").first.wait_for()


def overlay_src(page) -> str:
    return page.evaluate("() => document.querySelector('#overlay img')?.src ?? ''")


def settle(page, quiet_s: float = 0.6) -> None:
    """Wait until the overlay stops changing: a model switch moves the layer slider, which redraws it."""
    src, quiet_since, deadline = overlay_src(page), time.monotonic(), time.monotonic() + TIMEOUT_MS / 1e3
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
        page.wait_for_timeout(150)
        if (now := overlay_src(page)) != src:
            src, quiet_since = now, time.monotonic()


def pick_model(page, app, family: str) -> None:
    page.locator("#model-radio").get_by_label(TITLES[family], exact=True).check()
    card_title = page.locator("#model-card strong", has_text=re.compile(f"^{re.escape(TITLES[family])}$"))
    failed = page.locator(ERROR_TOAST).or_(page.locator("[data-testid=status-tracker]", has_text=ERROR_STATUS))
    expect(card_title.or_(failed).first).to_be_visible()
    assert_no_error(page, f"after picking {TITLES[family]}")
    method = page.locator("#method-dropdown input")
    expect(method).to_have_value(method_title(app.MODELS.models[family].methods[0]))  # the model's default
    settle(page)


def classify(page, app, family: str) -> str:
    """Press Classify and wait for this model's answer; returns the overlay's src."""
    before_timing = page.locator("#timing").inner_text()
    page.locator("#classify-btn").click()
    params = f"{app.MODELS.models[family].meta['num_params'] / 1e6:.2f} M parameters"
    expect(page.locator("#timing")).not_to_have_text(before_timing)
    expect(page.locator("#timing")).to_contain_text(params)
    # A model switch already classified the photo shown; results are cached by content, so the same
    # answer may come back under the same URL: wait for a loaded overlay, not for a new one.
    page.wait_for_function(OVERLAY_LOADED, arg="")
    return overlay_src(page)


def shown_prediction(block) -> tuple[str, dict[str, int]]:
    """(top class, {class: percent}) as a gr.Label shows them."""
    top = block.locator("[data-testid=label-output-value]").inner_text().strip()
    rows = block.locator("[data-testid$=-confidence-set]").all()
    return top, {r.locator("dt").inner_text().strip(): int(r.locator("dd").inner_text().strip().rstrip("%"))
                 for r in rows}


def check_prediction(block, app, family: str, photo: Path) -> str:
    """The label shows a class, every class with its percentage, and the model's own numbers for the photo."""
    top, percent = shown_prediction(block)
    assert top in CLASSES and set(percent) == set(CLASSES), (top, percent)
    assert abs(sum(percent.values()) - 100) <= len(CLASSES), percent
    expected = app.MODELS.models[family].predict(str(photo))
    assert top == max(expected, key=expected.get), (family, top, expected)
    assert all(abs(percent[c] - 100 * expected[c]) <= 1 for c in CLASSES), (family, percent, expected)
    return top


def assert_no_error(page, when: str) -> None:
    shown = page.evaluate(SHOWN_ERRORS)
    assert not shown, f"the page shows an error {when}: {shown}"


def assert_clean(page, js_errors: list[str], when: str) -> None:
    assert_no_error(page, when)
    assert not js_errors, f"JavaScript errors {when}: {js_errors}"


def pick_method(page, method: str) -> None:
    page.locator("#method-dropdown input").click()
    page.get_by_role("option", name=method_title(method), exact=True).click()
    expect(page.locator("#method-dropdown input")).to_have_value(method_title(method))


def change_overlay(page, family: str, before: str) -> str:
    """A ViT: one layer's attention, then layer 1 (scratch), or the rollout of head 1 (hybrid); the
    controls each needs appear, and the overlay is redrawn."""
    if family == "scratch_vit":
        pick_method(page, "attention")
        expect(page.locator("#layer-slider")).to_be_visible()
        page.wait_for_function(OVERLAY_LOADED, arg=before)
        before = overlay_src(page)
        page.locator("#layer-slider input[type=range]").focus()
        page.keyboard.press("Home")
        expect(page.locator("#layer-slider input[type=number]")).to_have_value("1")
        page.locator("#layer-slider input[type=range]").dispatch_event("pointerup")  # the slider's release
    else:
        pick_method(page, "rollout")
        expect(page.locator("#discard-slider")).to_be_visible()
        expect(page.locator("#layer-slider")).to_be_hidden()  # rollout takes every layer
        page.wait_for_function(OVERLAY_LOADED, arg=before)
        before = overlay_src(page)
        page.locator("#head-dropdown input").click()
        page.get_by_role("option", name="head 1", exact=True).click()
        expect(page.locator("#head-dropdown input")).to_have_value("head 1")
    page.wait_for_function(OVERLAY_LOADED, arg=before)
    return overlay_src(page)


def time_model_switch(page, app, family: str, before: str) -> str:
    """Seconds from a click on the model to its default's overlay (the prediction and map of a photo this
    model has not seen; the score follows); "" when the model is already selected (the page opened on it)."""
    radio = page.locator("#model-radio").get_by_label(TITLES[family], exact=True)
    if radio.is_checked():
        return ""
    start = time.monotonic()
    radio.check()
    expect(page.locator("#timing")).to_contain_text(f"{app.MODELS.models[family].meta['num_params'] / 1e6:.2f} M")
    page.wait_for_function(OVERLAY_LOADED, arg=before)
    return f"model switch {time.monotonic() - start:.2f} s,"


def test_radio_offers_the_three_models(page):
    labels = page.locator("#model-radio label").all_inner_texts()
    assert [t.strip() for t in labels] == [TITLES[f] for f in FAMILIES]


def test_each_model_classifies_and_explains(page, running_app, food_photo, shots, js_errors):
    app, _ = running_app
    upload(page, food_photo)
    overlays = []
    for family in FAMILIES:
        switched = time_model_switch(page, app, family, overlays[-1] if overlays else "")
        pick_model(page, app, family)
        start = time.monotonic()
        overlays.append(classify(page, app, family))  # after a switch: the photo's pass, map and score are kept
        print(f"\nclick-to-overlay {TITLES[family]} ({app.MODELS.models[family].methods[0]}): {switched} "
              f"Classify {time.monotonic() - start:.2f} s")  # printed, not asserted
        check_prediction(page.locator("#prediction"), app, family, food_photo)
        expect(page.locator("#faithfulness")).to_contain_text("deletion AUC")
        expect(page.locator("#curves img")).to_be_visible()
        if app.MODELS.has_attention(family):
            overlays.append(change_overlay(page, family, overlays[-1]))
        else:  # a CNN has no layers or heads to pick: those controls are hidden, not greyed out
            expect(page.locator("#layer-slider")).to_be_hidden()
            expect(page.locator("#head-dropdown")).to_be_hidden()
            expect(page.locator("#layers")).to_be_hidden()
        assert_clean(page, js_errors, f"with {TITLES[family]}")
        save_shot(page, shots, family, full_page=True)
    assert len(set(overlays)) == len(overlays), "an overlay did not change between models or controls"


def test_compare_all_three(page, running_app, food_photo, shots, js_errors):
    app, _ = running_app
    upload(page, food_photo)
    page.locator("#compare-btn").click()
    row = page.locator("#compare-row")
    expect(row.locator("[data-testid=label-output-value]")).to_have_count(len(FAMILIES))
    row.scroll_into_view_if_needed()  # its images load lazily, once on screen
    page.wait_for_function("""n => { const imgs = [...document.querySelectorAll('#compare-row img')];
        return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""", arg=len(FAMILIES))
    for family, label in zip(FAMILIES, row.locator("[data-testid=label]").all()):
        check_prediction(label, app, family, food_photo)
    assert len(set(row.locator("img").evaluate_all("imgs => imgs.map(i => i.src)"))) == len(FAMILIES)
    headings = [t.strip() for t in row.locator("h3").all_inner_texts()]
    verdicts = [h for h in headings if h.startswith("⚠️ This doesn't look like")]
    assert [h for h in headings if h not in verdicts] == [TITLES[f] for f in FAMILIES]
    # the drawing is far from every training photo: each model says so first (one shared gate, one verdict)
    assert len(verdicts) == len(FAMILIES), headings
    expect(row.get_by_text("ms prediction")).to_have_count(len(FAMILIES))
    expect(row.get_by_text("deletion AUC")).to_have_count(len(FAMILIES))
    assert_clean(page, js_errors, "after Compare all three")
    save_shot(row, shots, "compare")


def test_a_text_file_named_jpg_is_a_message_then_a_photo_works(page, running_app, food_photo, shots, js_errors,
                                                              tmp_path):
    app, _ = running_app
    fake = tmp_path / "notes.jpg"
    fake.write_text("shopping list: flour, tomatoes, mozzarella\n")
    upload(page, fake)
    page.locator("#classify-btn").click()
    toast = page.locator(ERROR_TOAST)
    expect(toast).to_be_visible()
    expect(toast).to_contain_text("notes.jpg is not an image")
    expect(toast).to_have_css("opacity", "1")  # faded in: a person can read it
    expect(page.locator("#prediction [data-testid=label-output-value]")).to_have_count(0)
    save_shot(page, shots, "bad_file")
    toast.locator("[data-testid=toast-close]").click()
    expect(toast).to_have_count(0)

    upload(page, food_photo)
    classify(page, app, app.DEFAULT)
    check_prediction(page.locator("#prediction"), app, app.DEFAULT, food_photo)
    assert_clean(page, js_errors, "after the good photo")


def test_an_example_shows_a_prediction_and_its_second_click_too(page, running_app, shots, js_errors):
    """Examples are cached at first use; clicking one again (after another) shows the same answer, from
    the cache."""
    app, _ = running_app
    examples = page.locator("#examples")
    expect(examples.locator("img")).to_have_count(len(app.EXAMPLES))
    p = app.MODELS.get(app.DEFAULT)
    for index in (0, 3, 0):  # pizza-dad, then a steak: different top classes, so each answer is awaited
        probs = p.predict(str(app.EXAMPLES[index]))
        examples.locator("img").nth(index).click()
        expect(page.locator("#prediction [data-testid=label-output-value]")).to_have_text(max(probs, key=probs.get))
        expect(page.locator("#faithfulness")).to_contain_text("deletion AUC")
        page.wait_for_function(OVERLAY_LOADED, arg="")
        check_prediction(page.locator("#prediction"), app, app.DEFAULT, app.EXAMPLES[index])
    assert_clean(page, js_errors, "after clicking examples")
    save_shot(page, shots, "example", full_page=True)


# JavaScript: (top of box, bottom of box, whether every image inside is drawn whole: not wider than its box,
# not cropped by object-fit: cover, nor scrolled sideways out of its panel)
BOX = """sel => { const el = document.querySelector(sel); if (!el) return null;
    const r = el.getBoundingClientRect();
    const whole = [...el.querySelectorAll('img')].every(i => { const b = i.getBoundingClientRect();
        return getComputedStyle(i).objectFit !== 'cover' && b.left >= r.left - 1 && b.right <= r.right + 1; });
    return {top: r.top + window.scrollY, bottom: r.bottom + window.scrollY, whole: whole}; }"""


@pytest.mark.parametrize("width", [1400, 390])
def test_the_page_reads_top_to_bottom(browser, running_app, food_photo, shots, width):
    """Photo, then its examples, then the model and the buttons; the answer and its explanation, then Compare
    all; every picture whole at a desktop and at a phone width. Saves page-1400.png and page-390.png.
    (Issue 32 moved the examples from the page's end to right under the photo.)"""
    app, url = running_app
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        page.locator("#classify-btn").wait_for()
        upload(page, food_photo)
        classify(page, app, app.DEFAULT)
        page.locator("#compare-btn").click()
        expect(page.locator("#compare-row [data-testid=label-output-value]")).to_have_count(len(FAMILIES))
        page.locator("#compare-row").scroll_into_view_if_needed()  # its images load lazily, once on screen
        page.wait_for_function("""n => { const imgs = [...document.querySelectorAll('#compare-row img')];
            return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""", arg=len(FAMILIES))
        page.evaluate("() => window.scrollTo(0, 0)")
        box = {name: page.evaluate(BOX, sel) for name, sel in [
            ("photo", "#image-input"), ("answer", "#prediction"), ("overlay", "#overlay"), ("radio", "#model-radio"),
            ("compare", "#compare-row"), ("layers", "#layers"), ("patches", "#patches"), ("examples", "#examples")]}
        assert box["photo"]["bottom"] <= box["examples"]["top"] < box["radio"]["top"], box  # the examples follow it
        assert box["photo"]["top"] <= box["answer"]["top"] <= box["overlay"]["top"] < box["compare"]["top"], box
        assert not [name for name, b in box.items() if b and not b["whole"] and name != "examples"], box  # thumbnails crop
        assert_no_error(page, f"at {width} px")
        save_shot(page, shots, f"page-{width}", full_page=True)
    finally:
        context.close()


# Issue 32: the first minute of a visitor.

# JavaScript: {name: [top, bottom] in the viewport (null: not shown)}, the scroll, and whether the page is wider
# than the window (a horizontal scroll bar)
VIEWPORT = """sels => ({boxes: Object.fromEntries(Object.entries(sels).map(([name, sel]) => {
        const e = document.querySelector(sel); const r = e?.getBoundingClientRect();
        return [name, r && r.width > 0 ? [Math.round(r.top), Math.round(r.bottom)] : null]; })),
    scrollY: window.scrollY, wider: document.documentElement.scrollWidth > window.innerWidth})"""
FIRST_SCREEN = {"gallery": "#examples .gallery", "classify": "#classify-btn", "photo": "#image-input",
                "radio": "#model-radio", "prediction": "#prediction", "overlay": "#overlay img", "curves": "#curves",
                "layers": "#layers", "patches": "#patches"}


def open_page(browser, url: str, width: int, height: int, locale: str = "en-US"):
    context = browser.new_context(viewport={"width": width, "height": height}, locale=locale)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.locator("#classify-btn").wait_for()
    page.wait_for_function("() => document.documentElement.lang !== ''")  # Gradio has chosen the language
    return context, page


def click_example(page, index: int) -> None:
    """Click an example of the gallery shown (#examples in English, #examples-ja in Japanese) and wait for its
    answer: the prediction, the map and the faithfulness line."""
    page.locator("[id^=examples] img >> visible=true").nth(index).click()
    expect(page.locator("#prediction [data-testid=label-output-value]")).to_have_count(1)
    page.wait_for_function(OVERLAY_LOADED, arg="")
    expect(page.locator("#faithfulness")).to_contain_text("AUC")  # its figures (in a <details>)


def test_the_examples_and_the_button_are_in_sight_at_1400_by_900(browser, running_app, shots, js_errors):
    """On first load the example gallery and the Classify button are inside the window, and no empty answer box
    is drawn; a click on an example shows its answer and map without scrolling, and moves nothing the visitor
    was looking at."""
    _, url = running_app
    context, page = open_page(browser, url, 1400, 900)
    try:
        before = page.evaluate(VIEWPORT, FIRST_SCREEN)
        b = before["boxes"]
        assert b["gallery"] and b["gallery"][1] <= 900 and b["classify"][1] <= 900, before
        assert [n for n in ("prediction", "overlay", "curves", "layers", "patches") if b[n]] == [], before  # no empty box
        print(f"\nat 1400 x 900: gallery {b['gallery']}, Classify {b['classify']} (top, bottom px)")
        click_example(page, 3)
        after = page.evaluate(VIEWPORT, FIRST_SCREEN)
        a = after["boxes"]
        assert after["scrollY"] == 0 and a["prediction"][1] <= 900 and a["overlay"][1] <= 900, after
        assert all(a[n] == b[n] for n in ("gallery", "classify", "photo", "radio")), (before, after)  # nothing moved
        print(f"after an example: prediction {a['prediction']}, map {a['overlay']}")
        assert_clean(page, js_errors, "after an example at 1400 x 900")
        save_shot(page, shots, "first-screen-1400")
    finally:
        context.close()


def test_a_phone_gets_the_examples_after_the_photo_and_no_sideways_scroll(browser, running_app, food_photo, shots):
    """At 390 x 844 the examples follow the photo, and the page never scrolls sideways: on load, after an
    example, after Classify."""
    app, url = running_app
    context, page = open_page(browser, url, 390, 844)
    try:
        boxes = {n: page.evaluate(BOX, s) for n, s in (("photo", "#image-input"), ("examples", "#examples"),
                                                        ("radio", "#model-radio"))}
        assert boxes["photo"]["bottom"] <= boxes["examples"]["top"] < boxes["radio"]["top"], boxes
        assert not page.evaluate(VIEWPORT, FIRST_SCREEN)["wider"], "a horizontal scroll bar on load"
        click_example(page, 0)
        assert not page.evaluate(VIEWPORT, FIRST_SCREEN)["wider"], "a horizontal scroll bar after an example"
        upload(page, food_photo)
        classify(page, app, app.DEFAULT)
        assert not page.evaluate(VIEWPORT, FIRST_SCREEN)["wider"], "a horizontal scroll bar after Classify"
        save_shot(page, shots, "phone-390", full_page=True)
    finally:
        context.close()


# JavaScript: the page's own text as a visitor reads it, every <details> opened (Gradio's footer left out; its
# toasts in); and Latin words that are names or units (not counted as English on a Japanese page)
PAGE_TEXT = """() => { document.querySelectorAll('details').forEach(d => d.open = true);
    const root = document.querySelector('.gradio-container'), footer = root.querySelector('footer');
    const toasts = [...document.querySelectorAll('[data-testid=toast-body]')].map(t => t.innerText).join('\\n');
    return root.innerText.replace(footer ? footer.innerText : '', '') + '\\n' + toasts; }"""
UNITS = {"ms", "MB", "px", "M", "AUC", "CPU", "JPEG", "PNG", "WebP", "PyPI", "ImageNet", "ViT", "FoodVision", "DeiT",
         "CNN", "Vision", "Transformer", "VisionTransformer", "timm", "Dosovitskiy", "English", "t-SNE", "PCA"}
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")


def letters(text: str, names: set[str]) -> tuple[int, int, int]:
    """(Japanese characters, Latin letters of words that are not names, Latin letters of names and ids)."""
    latin = re.findall(r"[A-Za-z][A-Za-z0-9_\-]*", text)
    named = [w for w in latin if w in names or re.search(r"[\d_]", w)]
    return len(JAPANESE.findall(text)), sum(len(w) for w in latin if w not in named), sum(len(w) for w in named)


def page_words(page, app) -> tuple[str, set[str]]:
    names = UNITS | {w for t in app.MODELS.titles.values() for w in re.findall(r"[A-Za-z][\w\-]*", t)}
    names |= {w for m in ids() for w in re.findall(r"[A-Za-z][\w\-]*", i18n.method_title(m, "ja"))} | set(ids())
    return page.evaluate(PAGE_TEXT), names


def visit(browser, url: str, app, locale: str, tmp_path: Path) -> tuple[str, set[str], str, str]:
    """A visitor in `locale`: an example's answer, the model card open, then a corrupt upload; then the Inside the
    ViT tab, filled, and the Explorer tab. The Classify tab's text, the names, the Inside and the Explorer tab's."""
    context, page = open_page(browser, url, 1400, 900, locale)
    try:
        click_example(page, 1)
        expect(page.locator("#model-card")).to_be_visible()
        (tmp_path / "notes.jpg").write_text("shopping list: flour, tomatoes, mozzarella\n")
        upload(page, tmp_path / "notes.jpg")
        page.locator("#classify-btn").click()
        expect(page.locator(ERROR_TOAST).first).to_be_visible()
        expect(page.locator(ERROR_TOAST).first).to_contain_text("notes.jpg")
        text, names = page_words(page, app)
        page.locator("#inside-tab-button").click()
        expect(page.locator("#inside-contrast")).to_contain_text("×")  # its sentences, with their figures
        for family in [f for f in FAMILIES if app.MODELS.has_attention(f)]:
            expect(page.locator(f"#inside-distance-{family}-text")).to_contain_text("px")
        inside_text = page.evaluate(PAGE_TEXT)
        page.locator("#explorer-tab-button").click()
        expect(page.locator("#explorer-confusion table")).to_be_visible()
        expect(page.locator("#explorer-mistakes-text")).not_to_be_empty()
        return text, names, inside_text, page.evaluate(PAGE_TEXT)
    finally:
        context.close()


def test_a_japanese_browser_gets_a_japanese_page(browser, running_app, shots, tmp_path):
    """ja-JP: at least 70 % of the letters of the page's own text (headings, labels, buttons, model card,
    verdict, answer and faithfulness lines, the error for a corrupt upload) are Japanese, names and units aside;
    an en-US browser gets none (the 🌐 link's "日本語" aside). Each language's example answers come from its own
    cache: the English visitor, after the Japanese one, gets English."""
    app, url = running_app
    classify_text, names, inside_text, explorer_text = visit(browser, url, app, "ja-JP", tmp_path)
    for where, text in (("Classify", classify_text), ("Inside the ViT", inside_text),
                        ("Explorer", explorer_text)):  # each tab on its own
        ja, english, named = letters(text, names)
        share = ja / (ja + english)
        other = sorted({w for w in re.findall(r"[A-Za-z][A-Za-z0-9_\-]*", text)
                        if w not in names and not re.search(r"[\d_]", w)})
        print(f"\nja-JP, {where}: {ja} Japanese characters, {english} Latin letters of other words {other}, {named} of "
              f"names and ids: {share:.1%} Japanese ({ja / (ja + english + named):.1%} counting names)")
        assert share >= 0.7, (where, text)
    for must in ("分類する", "ピザ", "モデルカード", "のようです", "このマップは忠実？", "notes.jpg は", "ViT の中身"):
        assert must in classify_text, (must, classify_text)
    for must in ("最初の層にあって", "正規化エントロピー", "位置埋め込み"):
        assert must in inside_text, (must, inside_text)
    for must in ("エクスプローラー", "テスト写真", "テスト分割：対角線上は", "正解 ↓ · 答え →", "学習"):
        assert must in explorer_text, (must, explorer_text)
    classify_text, _, inside_text, explorer_text = visit(browser, url, app, "en-US", tmp_path)
    for text in (classify_text, inside_text, explorer_text):
        assert not JAPANESE.search(text.replace("日本語", "")), [line for line in text.splitlines() if JAPANESE.search(line)]
    for must in ("Classify", "Looks like", "Is the map faithful?", "notes.jpg is not an image", "Inside the ViT"):
        assert must in classify_text, (must, classify_text)
    assert "What the first layer of" in inside_text, inside_text
    assert "test photos right" in explorer_text and "Test split:" in explorer_text, explorer_text


def settled_text(page, selector: str, needles: list[str], quiet_s: float = 1.0) -> str:
    """The element's text (closed <details> included) once it holds every needle and has not changed for
    `quiet_s`."""
    page.wait_for_function("""([sel, needles]) => { const t = document.querySelector(sel)?.textContent ?? '';
        return needles.every(n => t.includes(n)); }""", arg=[selector, needles])
    text, since = page.locator(selector).text_content(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        page.wait_for_timeout(200)
        if (now := page.locator(selector).text_content()) != text:
            text, since = now, time.monotonic()
    assert all(n in text for n in needles), text
    return text


def test_both_vits_last_layer_attention_share_one_scale(page, running_app, shots, js_errors):
    """On one photo, both ViTs' last-layer class-token attention (mean of heads), each picked on the page: the
    same bar on both overlays (one scale), the hybrid's (peak about 3 x uniform on this photo) visibly less
    contrast than the scratch ViT's (about 14 x), and beside each its drawn row's normalised entropy and peak,
    the hybrid's said in words to be nearly uniform (entropy 0.98)."""
    app, _ = running_app
    photo = ROOT / "examples" / "sushi_2385731.jpg"
    expect(page.locator("#model-card")).to_contain_text(TITLES[app.DEFAULT])  # the page's load event has set the controls
    upload(page, photo)
    drawn = {}
    for family in [f for f in FAMILIES if app.MODELS.has_attention(f)]:
        p = app.MODELS.models[family]
        pick_model(page, app, family)
        before = overlay_src(page)
        pick_method(page, "attention")
        expect(page.locator("#layer-slider input[type=number]")).to_have_value(str(p.num_layers))  # the last layer
        page.wait_for_function(OVERLAY_LOADED, arg=before)
        cells = p.grid[0] * p.grid[1]  # this model's attention, scored (an earlier map's late score may pass first)
        text = settled_text(page, "#faithfulness", [f"spread evenly over the {cells} patches",
                                                    f"Is the map faithful? ({method_title('attention')}", "deletion AUC"])
        shown = np.asarray(Image.open(io.BytesIO(page.request.get(overlay_src(page)).body())).convert("RGB"), float)
        view = p.prepare(str(photo))[0].resize((shown.shape[1], shown.shape[0]), Image.BICUBIC)
        drawn[family] = (shown, np.asarray(view, float), text, explain.sharpness(p.explain(str(photo), "attention").heat))
        save_shot(page.locator("#overlay"), shots, f"scale-{family}")
        assert_clean(page, js_errors, f"with {TITLES[family]}'s attention")
    (scratch, _, s_text, s_row), (hybrid, _, h_text, h_row) = drawn["scratch_vit"], drawn["timm_vit"]
    assert s_row.peak > 10 and h_row.peak < 5, (s_row, h_row)  # the photo's premise
    for text, row in ((s_text, s_row), (h_text, h_row)):
        assert f"normalised entropy {row.entropy:.2f}" in text and f"gets {row.peak:.1f}×" in text, text
        assert ("Nearly uniform" in text) == row.nearly_uniform
    assert h_row.nearly_uniform and not s_row.nearly_uniform
    height, width = scratch.shape[:2]  # the bar: 10 px wide, 6 px inside the right edge, over the lower half
    ramp = (slice(height - 6 - height // 2 + 1, height - 6), width - 11)
    gap = np.abs(scratch[ramp] - hybrid[ramp])  # the page's overlays are JPEGs: one bar up to their rounding (max 6
    assert gap.max() <= 16 and gap.mean() < 3, f"the two overlays do not share one scale ({gap.max()}, {gap.mean():.1f})"
    # seen); a bar stretched to each map's own range differs by 67 on average (render.colour_bar vs scale_bar)
    tint = {f: np.percentile(np.abs(img - view).sum(-1)[:, :width - 56], 99.9)  # left of the bar and its labels
            for f, (img, view, _, _) in drawn.items()}
    print(f"\nstrongest tint (99.9th percentile of |overlay - photo|, RGB summed): {tint}")
    assert tint["scratch_vit"] > 1.5 * tint["timm_vit"], tint


def pick_head(page, head: str) -> None:
    page.locator("#head-dropdown input").click()
    page.get_by_role("option", name=head, exact=True).click()
    expect(page.locator("#head-dropdown input")).to_have_value(head)


def test_a_late_score_never_lands_under_a_newer_map(page, running_app, tmp_path, js_errors, monkeypatch):
    """A map's score comes after the map. Pick a head whose score takes long (made 3 s here, so that the race
    is certain), then at once a head seen before (its map and score cached: back in a blink): the first head's
    score, finishing last, must not overwrite the text under the second head's overlay (seen before the fix: a
    rollout "head 1" overlay under the head-mean text)."""
    app, _ = running_app
    family = next(f for f in FAMILIES if "rollout" in app.MODELS.models[f].methods and f != "scratch_vit")
    photo = tmp_path / "race.png"  # a photo of its own: no map or score of it cached by another test
    Image.fromarray(np.random.default_rng(30).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    explain, slow = app.H.explain, 3.0

    def slow_max_score(model, image, method, layer=-1, head="mean", discard=0.9, score=True, *args, **kwargs):
        if score and head == "max":
            time.sleep(slow)
        return explain(model, image, method, layer, head, discard, score, *args, **kwargs)

    monkeypatch.setattr(app.H, "explain", slow_max_score)
    upload(page, photo)
    pick_model(page, app, family)
    pick_method(page, "rollout")
    settled_text(page, "#faithfulness", ["mean of its", "Is the map faithful?"])
    pick_head(page, "head 1")
    settled_text(page, "#faithfulness", ["head 1", "Is the map faithful?"], quiet_s=0.2)  # scored: cached from now
    pick_head(page, "max")  # a row not seen yet: its map, then its score (3 s) ...
    expect(page.locator("#faithfulness")).to_contain_text("largest weight")
    picked = time.monotonic()
    pick_head(page, "head 1")  # ... while head 1's map and score come back from the caches at once
    expect(page.locator("#faithfulness")).to_contain_text("head 1")  # head 1's map and text are on screen
    landed = time.monotonic() - picked  # the page may hold head 1's pick until the max chain ends (trigger_mode
    # "once"): then the race is not run here, and tests/test_handlers.py's (the race, no browser) guards the fix
    while time.monotonic() < picked + slow + 3:  # the max head's score has finished by then
        text = page.locator("#faithfulness").inner_text()
        assert "largest weight" not in text, f"the max head's score landed under head 1's map: {text}"
        page.wait_for_timeout(100)
    assert "head 1" in text and "Is the map faithful?" in text, text
    expect(page.locator("#head-dropdown input")).to_have_value("head 1")
    print(f"\nhead 1's map was up {landed:.1f} s after the max head's, whose score took {slow:.0f} s more; "
          "head 1's text stayed")
    assert_clean(page, js_errors, "after two heads in a row")


def test_the_inside_tab_shows_figure_7_of_both_vits(page, running_app, shots, js_errors):
    """Opened, the tab draws each ViT's three panels with a sentence under each; the hybrid's filters panel
    says it reads CNN features instead of drawing them."""
    app, _ = running_app
    vits = [f for f in FAMILIES if app.MODELS.has_attention(f)]
    page.get_by_role("tab", name="Inside the ViT").click()
    expect(page.locator("#inside-contrast")).to_contain_text("What the first layer of")
    for family in vits:
        for panel in ("position", "distance"):
            expect(page.locator(f"#inside-{panel}-{family} img")).to_be_visible()
            expect(page.locator(f"#inside-{panel}-{family}-text")).not_to_be_empty()
    expect(page.locator("#inside-filters-scratch_vit img")).to_be_visible()
    expect(page.locator("#inside-filters-timm_vit")).to_be_hidden()
    expect(page.locator("#inside-filters-timm_vit-text")).to_contain_text("not pixels")
    expect(page.locator("#inside-distance-timm_vit-text")).to_contain_text("almost evenly")
    assert_clean(page, js_errors, "on the Inside the ViT tab")
    save_shot(page, shots, "inside", full_page=True)


def test_a_click_on_a_mistake_opens_it_in_classify_with_its_answer(browser, running_app, shots, js_errors):
    """At 1400 px the Explorer tab shows the map, the confusion matrix and every mistake; a click on a mistake shows
    it in the Classify tab with the model's answer within 2 s (its map and nearest training photos follow), and so
    does a click on a point of the map. Saves explorer-1400.png and explorer-opened.png."""
    app, url = running_app
    record = app.H.records.models.get(app.DEFAULT)
    if record is None or not SHARED_DATA.is_dir():
        pytest.skip("needs the committed explorer record and ../shared/data (the mistakes' photos)")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    try:
        page.goto(url)
        page.locator("#classify-btn").wait_for()
        assert app.MODELS.wait(300)
        for p in app.MODELS.models.values():
            p.warm()  # the PyTorch models of the gradient maps, which a started app builds behind its first answers
        page.locator("#explorer-tab-button").click()
        mistakes = record["test"]["mistakes"] + record["val"]["mistakes"]
        expect(page.locator("#explorer-map [data-i]")).to_have_count(len(record["points"]["photo"]))
        expect(page.locator("#explorer-confusion table")).to_be_visible()
        expect(page.locator("#explorer-mistakes img")).to_have_count(len(mistakes))
        save_shot(page, shots, "explorer-1400", full_page=True)
        label = page.locator("#prediction [data-testid=label-output-value]")
        start = time.monotonic()
        page.locator("#explorer-mistakes img").nth(1).click()
        expect(page.locator("#classify-tab-button")).to_have_attribute("aria-selected", "true")
        expect(label).to_have_text(mistakes[1]["answer"])
        seconds = time.monotonic() - start
        print(f"a mistake opened in Classify with its answer in {seconds:.2f} s")
        assert seconds <= 2.0, f"{seconds:.2f} s from the click to the answer (bar: 2 s)"
        expect(page.locator("#model-radio").get_by_label(TITLES[app.DEFAULT], exact=True)).to_be_checked()
        page.wait_for_function(OVERLAY_LOADED, arg="")
        expect(page.locator("#neighbours img")).to_have_count(5)
        save_shot(page, shots, "explorer-opened", full_page=True)
        test_point = next(i for i, s in enumerate(record["points"]["split"]) if s == "test")
        answer = record["classes"][record["points"]["answer"][test_point]]
        page.locator("#explorer-tab-button").click()
        before = overlay_src(page)
        page.locator(f'#explorer-map [data-i="{test_point}"]').dispatch_event("click")
        expect(page.locator("#classify-tab-button")).to_have_attribute("aria-selected", "true")
        page.wait_for_function(OVERLAY_LOADED, arg=before)
        expect(label).to_have_text(answer)
        assert_clean(page, js_errors, "after opening a mistake and a point from the Explorer tab")
    finally:
        context.close()
