"""The app's request handling (vit/app/handlers.py) and its endpoints (vit/app/api.py), without a browser or a
server."""
import inspect
from types import SimpleNamespace

import gradio as gr
import pytest
from conftest import CLASSES, make_image

from vit.app import api, handlers, ui
from vit.data.images import Decoded
from vit.explain import methods as registry
from vit.explain.errors import RequestError
from vit.serve import model_set
from vit.trust import Trust


@pytest.fixture(scope="module")
def h(tiny_checkpoints):
    models = model_set.ModelSet(tiny_checkpoints).load()
    return handlers.Handlers(models, model_set.default_model(models))


def photo_value(tmp_path):
    """An upload as the page's events receive it (preprocess=False): Gradio's FileData record."""
    path = tmp_path / "photo.png"
    make_image(5, (64, 48)).save(path)
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("layer, layers, expected", [(1, 4, 0), (4, 4, 3), (9, 4, 3), (0, 4, -1), (-3, 4, -1),
                                                     (2.0, 4, 1), (3, 0, -1)])
def test_the_page_counts_layers_from_one(layer, layers, expected):
    assert handlers.layer_index(layer, layers) == expected


def test_a_method_is_the_models_own_or_its_default(h):
    p = h.models.get("effnet")
    default, other = p.methods[0], p.methods[-1]
    assert p.check(None, -1, "mean")[0] == p.check("", -1, "mean")[0] == default
    assert p.check(other, -1, "mean")[0] == other
    with pytest.raises(RequestError, match=rf"unknown method 'rollout' for effnet; choose one of \[{p.methods[0]!r}"):
        p.check("rollout", -1, "mean")


def test_the_default_model_has_attention_maps(h):
    assert h.default in ("scratch_vit", "timm_vit") and h.models.has_attention(h.default)


@pytest.mark.parametrize("model, method, head, message", [
    ("resnet", None, "mean", r"unknown model 'resnet'"),
    ("effnet", "rollout", "mean", r"unknown method 'rollout' for effnet"),
    ("scratch_vit", "attention", "head 9", r"head 9 does not exist: this model has heads 1 \.\. "),
    ("scratch_vit", "attention", "nose", r"unknown head 'nose'"),
])
def test_a_request_that_cannot_be_answered_says_why(h, tmp_path, model, method, head, message):
    with pytest.raises(gr.Error, match=message):
        handlers.answers(h.view)(photo_value(tmp_path), model, method, 1, head, 0.5, 0.9)
    endpoints = {f.__name__: f for f in api.api(h)}  # the API says the same, through the same one place
    with pytest.raises(gr.Error, match=message):
        if method is None:
            endpoints["predict"](photo_value(tmp_path), model)
        elif head == "mean":
            endpoints["explain"](photo_value(tmp_path), model, method)
        else:
            endpoints["attention"](photo_value(tmp_path), model, method, 1, head)


def test_a_decoded_photo_passes_through(h, tmp_path):
    """The handler decodes the upload once (tests/test_methods.py counts it); the predictor uses that photo as it is."""
    photo = handlers.decode(photo_value(tmp_path))
    assert isinstance(photo, Decoded) and handlers.decode(photo) is photo and photo.name == "photo.png"


def test_an_image_that_is_no_image_says_so(h, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="notes.png"):
        h.show({"path": str(bad), "meta": {"_type": "gradio.FileData"}}, "effnet", None, 1, "mean", 0.5, 0.9)
    with pytest.raises(gr.Error, match="a path on the server is not accepted"):
        h.show(str(bad), "effnet", None, 1, "mean", 0.5, 0.9)
    with pytest.raises(gr.Error, match="notes.png"):
        h.check_upload({"path": str(bad), "orig_name": bad.name, "meta": {"_type": "gradio.FileData"}})


def test_a_view_gives_what_the_page_shows(h, tmp_path):
    v = h.view(photo_value(tmp_path), "scratch_vit", "attention", 2, "head 1", 0.5, 0.9)
    assert list(v.label) == sorted(CLASSES, key=lambda c: -v.label[c]) and "ms prediction" in v.timing
    assert v.overlay.endswith(".png") and v.layers.endswith(".png") and v.patches.endswith(".png")  # the API's: lossless
    page = h.view(photo_value(tmp_path), "scratch_vit", "attention", 2, "head 1", 0.5, 0.9, page="a page")
    assert page.overlay.endswith(".jpg") and page.layers.endswith(".jpg") and page.patches.endswith(".jpg")
    assert v.shown.model == "scratch_vit" and v.shown.result.method == "attention"
    assert "has no out-of-distribution gate" in v.verdict and "Unreliable" not in v.timing  # the tiny ones have none
    assert h.show(None, "scratch_vit", "attention", 2, "mean", 0.5, 0.9) == handlers.CLEARED
    assert all(value in (None, "") for name, value in vars(handlers.CLEARED).items() if name != "model")


def test_an_answer_reaches_its_components_by_name_and_keep_leaves_them():
    with gr.Blocks():
        label, text = gr.Label(), gr.Markdown()
    outputs = handlers.Outputs(label=label, timing=text)
    assert outputs.of(handlers.View(timing="t")) == {text: "t"}
    skipped = outputs.bind(lambda: handlers.View())()  # nothing to change: each component skipped, not {}
    assert set(skipped) == {label, text} and all(v == gr.skip() for v in skipped.values())
    assert outputs.bind(lambda x: handlers.View(label={"a": x}, timing=""))(1.0) == {label: {"a": 1.0}, text: ""}
    with pytest.raises(AssertionError, match="verdict"):
        outputs.of(handlers.View(verdict="no component for me"))


def test_the_button_shows_the_map_first_and_its_score_next(h, tmp_path):
    value = photo_value(tmp_path)
    # "attention" is the last model's method in the menu: effnet shows its default, unscored ...
    v = h.show(value, "effnet", "attention", 1, "mean", 0.5, 0.9)
    assert v.overlay.endswith(".png") and "AUC" not in v.faithfulness and v.curves is None  # how to read it: no score yet
    assert v.shown.result.method == model_set.methods_of(h.models, "effnet")[0] and v.shown.result.faithfulness is None
    scored = h.score_view(v.shown)  # ... and then scores that map, whatever the menus show by now
    assert "**Is the map faithful?**" in scored.faithfulness and scored.curves.endswith(".png")
    assert scored.overlay is handlers.KEEP and scored.label is handlers.KEEP  # the rest of the page stays
    full = h.view(value, "effnet", None, 1, "mean", 0.5, 0.9)  # one call: both, the same score
    assert full.faithfulness == scored.faithfulness
    assert full.shown.result.probs == pytest.approx(v.shown.result.probs, rel=1e-4, abs=1e-6)


def test_a_model_switch_shows_the_new_models_default_and_scores_that(h, tmp_path):
    value = photo_value(tmp_path)
    shown = h.show(value, "scratch_vit", "attention", 2, "head 1", 0.5, 0.9).shown
    assert shown.result.method == "attention"
    shown = h.show_default(value, "timm_vit", 0.5).shown  # the menu still said "attention"
    default = model_set.methods_of(h.models, "timm_vit")[0]
    assert shown.result.method == default and shown.method == default
    assert f"**Is the map faithful?** ({registry.title(default)}" in h.score_view(shown).faithfulness
    assert h.score_view(None) == handlers.View()  # a new photo cleared the state: nothing to score


def test_classify_endpoint_is_the_page_in_one_call(h, tmp_path):
    classify = {f.__name__: f for f in api.api(h)}["classify"]
    label, timing, overlay, faithful, curves, layers, patches, verdict = classify(photo_value(tmp_path), "effnet")
    assert label["label"] in CLASSES and "**Is the map faithful?**" in faithful and layers is None
    assert all(f["path"].endswith(".png") for f in (overlay, curves, patches)) and "gate" in verdict


def _trust(monkeypatch, p, in_distribution: bool, prediction_set: list[str]) -> None:
    """Make model `p` answer with this verdict (the tiny checkpoints carry no gate)."""
    verdict = Trust(in_distribution, 1.5 if not in_distribution else 0.4, 1.1152, prediction_set, 0.75, "knn")
    assess = p.assess
    monkeypatch.setattr(p, "assess", lambda logits, feats: (*assess(logits, feats)[:2], verdict))


def test_an_out_of_distribution_photo_is_said_first_and_its_guess_marked(h, tmp_path, monkeypatch):
    _trust(monkeypatch, h.models.get("effnet"), False, [])
    v = h.view(photo_value(tmp_path), "effnet", None, 1, "mean", 0.5, 0.9)
    assert v.verdict.startswith(f"### ⚠️ This doesn't look like {ui.classes_text(CLASSES)}")
    assert "1.500 > threshold 1.115" in v.verdict and "unreliable" in v.verdict
    assert v.timing.startswith("⚠️ ***Unreliable:***") and set(v.label) == set(CLASSES)  # the guess stays reachable


def test_an_unsure_photo_gets_its_prediction_set(h, tmp_path, monkeypatch):
    _trust(monkeypatch, h.models.get("effnet"), True, CLASSES[:2])
    verdict = h.view(photo_value(tmp_path), "effnet", None, 1, "mean", 0.5, 0.9).verdict
    plain, figures = verdict.split("<details>")  # words first; the set's coverage behind them
    assert plain.startswith("✅") and f"not sure: **{CLASSES[0]} or {CLASSES[1]}**" in plain and "%" not in plain
    assert f"90 % prediction set: {CLASSES[0]} or {CLASSES[1]}" in figures


def test_the_api_records_carry_the_verdict(h, tmp_path, monkeypatch):
    """/predict's and /explain's records: the five fields; a null verdict for a model without a gate."""
    endpoints = {f.__name__: f for f in api.api(h)}
    fields = {"in_distribution", "ood_score", "ood_threshold", "prediction_set", "temperature"}
    _, record = endpoints["predict"](photo_value(tmp_path), "scratch_vit")
    assert fields <= set(record) and record["in_distribution"] is None and record["ood_score"] is None
    assert record["prediction_set"] == [] and record["temperature"] == 1.0
    _trust(monkeypatch, h.models.get("effnet"), False, [])
    _, record = endpoints["predict"](photo_value(tmp_path), "effnet")
    assert record["in_distribution"] is False and record["ood_score"] == 1.5 and record["ood_threshold"] == 1.1152
    _, record = endpoints["explain"](photo_value(tmp_path), "effnet", "")
    assert fields <= set(record) and record["in_distribution"] is False and record["temperature"] == 0.75


def test_compare_answers_for_every_model_and_notes_a_method_it_lacks(h, tmp_path):
    out = h.compare(photo_value(tmp_path), "rollout", 0.9)
    assert len(out) == len(h.models.ids)
    texts = dict(zip(h.models.ids, (a.text for a in out)))
    assert "does not apply" in texts["effnet"] and "does not apply" not in texts["scratch_vit"]
    assert all(t.startswith("ℹ️ **This model has no out-of-distribution gate**") for t in texts.values())


def test_compare_says_each_models_verdict(h, tmp_path, monkeypatch):
    _trust(monkeypatch, h.models.get("effnet"), False, [])
    texts = dict(zip(h.models.ids, (a.text for a in h.compare(photo_value(tmp_path), "grad-cam", 0.9))))
    assert texts["effnet"].startswith("### ⚠️ This doesn't look like") and "Unreliable" in texts["effnet"]
    assert "no out-of-distribution gate" in texts["scratch_vit"]


def test_the_endpoints_default_to_the_pages_model(h):
    endpoints = {f.__name__: f for f in api.api(h)}
    assert list(endpoints) == ["predict", "explain", "attention", "methods", "classify", "explorer"]
    for name in ("predict", "explain", "attention", "classify", "explorer"):
        assert inspect.signature(endpoints[name]).parameters["model"].default == h.default
    assert endpoints["methods"]() == {i: list(model_set.methods_of(h.models, i)) for i in h.models.ids}


def test_a_late_score_never_lands_under_a_newer_map(h, tmp_path, monkeypatch):
    """A map is scored after it is shown (seconds); a newer map put up on the same page meanwhile makes that
    score land as nothing (View(): every field KEEP), whether it went up before the score started or while it
    ran; the same view asked twice is the same map; another page's maps do not count; nor does the API. Seen in
    Chromium before: a rollout "head 1" overlay under the head-mean text."""
    value, page, other = photo_value(tmp_path), SimpleNamespace(session_hash="page"), SimpleNamespace(session_hash="b")
    first = h.show(value, "scratch_vit", "rollout", 1, "mean", 0.5, 0.9, "en", page).shown
    newer = h.show(value, "scratch_vit", "rollout", 1, "head 1", 0.5, 0.9, "en", page).shown
    assert h.score_view(first, "en", page) == handlers.View()  # the page shows `newer` by now
    assert "Is the map faithful?" in h.score_view(newer, "en", page).faithfulness
    again = h.redraw_map(value, "scratch_vit", "rollout", 1, "head 1", 0.5, 0.9, "en", page).shown  # a 2nd trigger
    assert again.key == newer.key and "Is the map faithful?" in h.score_view(newer, "en", page).faithfulness
    h.show(value, "scratch_vit", "rollout", 1, "max", 0.5, 0.9, "en", other)  # another visitor's page
    assert "Is the map faithful?" in h.score_view(newer, "en", page).faithfulness

    explain = h.explain
    def newer_map_while_scoring(*args, **kwargs):  # the score's passes run; meanwhile the visitor picks a head
        out = explain(*args, **kwargs)
        if kwargs.get("score", True):
            monkeypatch.setattr(h, "explain", explain)
            h.show(value, "scratch_vit", "rollout", 1, "head 2", 0.5, 0.9, "en", page)
        return out
    shown = h.show(value, "scratch_vit", "rollout", 1, "max", 0.5, 0.9, "en", page).shown
    monkeypatch.setattr(h, "explain", newer_map_while_scoring)
    assert h.score_view(shown, "en", page) == handlers.View()
    shown = h.show(value, "scratch_vit", "rollout", 1, "max", 0.5, 0.9, "en", page).shown
    h.new_photo(page)  # a new photo (or an example) replaces the map: nothing on screen to score
    assert h.score_view(shown, "en", page) == handlers.View()
    assert "Is the map faithful?" in h.score_view(shown).faithfulness  # the API, no page: always its score
