"""The method registry (vit/explain/methods.py) and what it buys: a method added in one place is served
everywhere, and a redraw, a method switch or a return to a view runs no model twice (vit/serve/cache.py)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image

from vit.app import api, handlers
from vit.data.images import open_image
from vit.explain import methods
from vit.explain.maps import Heat
from vit.serve import model_set
from vit.serve.cache import LRU, content_key
from vit.serve.predictor import Predictor


class Counting:
    """An engine that counts its forward calls (and can refuse them)."""

    def __init__(self, engine, refuse: bool = False) -> None:
        self.engine, self.calls, self.refuse = engine, [], refuse

    def __getattr__(self, name: str):
        attr = getattr(self.engine, name)
        if not name.startswith("forward"):
            return attr

        def counted(*args, **kwargs):
            if self.refuse:
                raise AssertionError(f"the model ran ({name}) for what needs no run")
            self.calls.append(name)
            return attr(*args, **kwargs)
        return counted


@pytest.fixture
def vit(tiny_checkpoints, monkeypatch) -> Predictor:
    p = Predictor.from_checkpoint(tiny_checkpoints["scratch_vit"], engine="torch")
    p.engine = Counting(p.engine)
    model = p.ckpt.model  # the float model of the gradient methods: count its passes too
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (p.engine.calls.append("model"), forward(*a, **k))[1])
    return p


def test_a_method_registered_once_is_offered_by_the_api_and_the_menu(tiny_checkpoints):
    def centre(i: methods.Inputs) -> Heat:  # a toy map: the image's centre
        heat = np.zeros((3, 3), np.float32)
        heat[1, 1] = 1
        return Heat(heat, int(i.target or 0), "")

    methods.register(methods.Method("centre", "Centre (toy)", centre))
    try:
        models = model_set.ModelSet(tiny_checkpoints).load()
        h = handlers.Handlers(models, model_set.default_model(models))
        listed = api.api(h)[3]()
        assert all("centre" in listed[i] for i in models.ids), listed
        menu = h.on_model_change("effnet").method["choices"]
        assert ("Centre (toy)", "centre") in menu
        r = models.get("effnet").explain(make_image(2), "centre")
        assert r.method == "centre" and r.heat[1, 1] == 1
    finally:
        methods.unregister("centre")
    assert "centre" not in methods.of(models.get("effnet").spec)


def test_controls_and_needs_come_from_the_registry():
    assert methods.uses("attention", methods.LAYER) and not methods.uses("rise", methods.LAYER)
    assert methods.uses("rollout", methods.DISCARD) and methods.first_using(methods.LAYER) == "attention"
    assert methods.get("attention").redraws and not methods.get("chefer").redraws
    assert [m for m in methods.ids() if not methods.get(m).targeted] == ["attention", "rollout"]  # no class
    with pytest.raises(ValueError, match="unknown explanation method 'nope'"):
        methods.get("nope")


@pytest.mark.parametrize("method, changes", [
    ("attention", [{"layer": 0}, {"layer": 1, "head": 0}, {"layer": 1, "head": "max"}]),
    ("rollout", [{"discard": 0.5}, {"discard": 0.0, "head": 1}]),
])
def test_a_redraw_at_a_new_layer_head_or_discard_runs_no_model(vit, method, changes):
    image = make_image(4, (120, 100))
    first = vit.explain(image, method)
    vit.engine.refuse = True
    for change in changes:
        r = vit.explain(image.copy(), method, **change)  # another object, the same pixels
        assert r.reused and r.probs == first.probs and np.isfinite(r.heat).all()
    assert not np.allclose(vit.explain(image, method, **changes[0]).heat, first.heat)


def test_switching_method_reuses_the_pass_and_going_back_is_not_rescored(vit):
    image = make_image(5, (120, 100))
    a = vit.explain(image, "attention", layer=0, score=True)
    passes = vit.engine.calls.count("forward_attention_features")
    vit.explain(image, "rollout", score=True)
    vit.explain(image, "chefer", score=True)
    assert passes == 1 and vit.engine.calls.count("forward_attention_features") == passes  # one timed pass for every method
    vit.engine.refuse = True  # back to a scored view: neither map nor score runs the model
    back = vit.explain(image, "attention", layer=0, score=True)
    assert back.faithfulness is a.faithfulness and np.array_equal(back.heat, a.heat)
    assert back.map_reused and not a.map_reused  # the page says "reused", not "0.0 ms"


def test_two_images_never_share_an_entry(vit):
    a, b = make_image(6, (120, 100)), make_image(7, (120, 100))
    assert content_key(a) != content_key(b) and content_key(a) == content_key(a.copy())
    ra = vit.explain(a, "rise", score=True)
    calls = len(vit.engine.calls)
    rb = vit.explain(b, "rise", score=True)
    assert len(vit.engine.calls) > calls and not rb.reused  # b ran its own pass, map and score
    fresh = Predictor.from_checkpoint(vit.ckpt.path, engine="torch").explain(b, "rise", score=True)
    assert np.allclose(rb.heat, fresh.heat) and not np.allclose(ra.heat, rb.heat)
    assert rb.faithfulness.deletion_auc == pytest.approx(fresh.faithfulness.deletion_auc, abs=1e-6)


def test_the_caches_are_bounded():
    lru = LRU(2)
    for k in "abc":
        lru.put(k, k)
    assert len(lru) == 2 and lru.get("a") is None and lru.get("c") == "c"


def test_explain_records_map_and_score_time(tiny_checkpoints, tmp_path):
    models = model_set.ModelSet(tiny_checkpoints).load()
    h = handlers.Handlers(models, model_set.default_model(models))
    path = tmp_path / "photo.png"
    make_image(8, (64, 48)).save(path)
    _, record = api.api(h)[1]({"path": str(path), "meta": {"_type": "gradio.FileData"}}, "effnet", "")
    assert record["map_ms"] > 0 and record["score_ms"] > 0
    assert record["explain_ms"] == pytest.approx(record["map_ms"] + record["score_ms"], abs=0.02)


def test_map_ms_is_the_map_alone_not_the_wait_for_a_lazy_models_build(tiny_checkpoints, monkeypatch):
    """The app answers before its PyTorch models are built, so the first gradient map of a model may wait
    for the build: start-up, not the map's time. A fake clock jumps an hour while the model builds."""
    import vit.serve.predictor

    p = Predictor.from_checkpoint(tiny_checkpoints["scratch_vit"], engine="torch")
    clock, build = [0.0], p.ckpt.build

    def slow_build():
        clock[0] += 3600.0
        return build()
    monkeypatch.setattr(p.ckpt, "_model", None)  # not built yet, as in the app just after start
    monkeypatch.setattr(p.ckpt, "build", slow_build)
    compute = vit.serve.predictor.registry.compute

    def one_second_map(*args, **kwargs):
        clock[0] += 1.0
        return compute(*args, **kwargs)
    monkeypatch.setattr(vit.serve.predictor.registry, "compute", one_second_map)
    monkeypatch.setattr(vit.serve.predictor, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    r = p.explain(make_image(9, (64, 48)), "lrp", score=False)
    assert p.ckpt.built and clock[0] == 3601.0 and r.map_ms == 1000.0  # the map's second, not the build's hour


def test_the_pages_redraw_runs_no_model_and_a_view_seen_before_is_not_rescored(tiny_checkpoints, tmp_path):
    models = model_set.ModelSet(tiny_checkpoints).load()
    h = handlers.Handlers(models, model_set.default_model(models))
    path = tmp_path / "photo.png"
    make_image(9, (64, 48)).save(path)
    value = {"path": str(path), "meta": {"_type": "gradio.FileData"}}
    p = models.get("scratch_vit")
    first = h.view(value, "scratch_vit", "attention", 1, "mean", 0.5, 0.9)
    engine, p.engine = p.engine, Counting(p.engine, refuse=True)
    try:
        shown = h.redraw_map(value, "scratch_vit", "attention", 2, "max", 0.5, 0.9)  # new layer and head
        assert "AUC" not in shown.faithfulness and shown.shown.result.faithfulness is None  # unscored until score_view
        assert h.score_view(first.shown).faithfulness == first.faithfulness  # seen: no run
    finally:
        p.engine = engine
    assert "**Is the map faithful?**" in h.score_view(shown.shown).faithfulness


def test_the_bench_times_a_full_explanation_a_redraw_and_a_method_switch(tiny_checkpoints):
    from vit.bench import report
    from vit.bench.explanations import bench_interaction

    p = Predictor.from_checkpoint(tiny_checkpoints["timm_vit"], engine="torch")
    e = bench_interaction(p, runs=1)
    assert e["switch_from"] == p.methods[1] and all(e[k] > 0 for k in ("full_ms", "map_ms", "score_ms", "redraw_ms"))
    row = {"method": p.methods[0], "default": True, "engine": "torch", "p50_s": 1.0, "max_s": 1.0, "bar_s": 2,
           "within_bar": True}
    result = {"models": {"timm_vit": {"title": "H"}}, "explanations": {"timm_vit": [row]}}
    assert report.explanation_rows(result)[0][-1] == "within bar"  # a saved run from before: the same table
    row.update(e)
    headers, rows = report.explanation_rows(result)
    assert headers[-2:] == ["redraw ms", "method switch ms"] and rows[0][-1].endswith(f"(from {p.methods[1]})")


def test_compare_all_decodes_the_photo_once_for_every_model(tiny_checkpoints, tmp_path, monkeypatch):
    models = model_set.ModelSet(tiny_checkpoints).load()
    h = handlers.Handlers(models, model_set.default_model(models))
    path = tmp_path / "photo.png"
    make_image(10, (64, 48)).save(path)
    opened = []
    monkeypatch.setattr(handlers, "open_image", lambda source: opened.append(source) or open_image(source))
    outputs = h.compare({"path": str(path), "meta": {"_type": "gradio.FileData"}}, "rise", 0.9)
    assert len(outputs) == len(models.ids) and opened == [str(path)]
