"""What the app shows, computed without Gradio (vit/ui.py)."""
import numpy as np
import pytest
from PIL import Image

from conftest import FAMILIES, make_image
from vit import ui


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return ui.load_models(tiny_checkpoints)


def test_unloadable_checkpoints_are_reported_not_fatal(tmp_path, tiny_checkpoints):
    truncated = tmp_path / "timm_vit.safetensors"
    truncated.write_bytes(tiny_checkpoints["timm_vit"].read_bytes()[:300])
    paths = {"scratch_vit": tiny_checkpoints["scratch_vit"], "timm_vit": truncated,
             "effnet": tiny_checkpoints["scratch_vit"]}  # a file of the wrong family
    models = ui.load_models(paths)
    assert set(models.models) == {"scratch_vit"}
    assert "timm_vit.safetensors" in models.errors["timm_vit"] and "expected effnet" in models.errors["effnet"]
    with pytest.raises(LookupError, match="Hybrid ViT \\(timm\\) is unavailable: .*timm_vit.safetensors"):
        models.get("timm_vit")
    rows = ui.comparison_rows(models)
    assert rows[1][1].startswith("unavailable") and rows[0][4] == "50.0%"


def test_model_card_says_what_the_model_started_from_and_scores(models):
    card = ui.model_card(models.get("timm_vit"))
    assert "Hybrid ViT (timm)" in card and "Started from:** random" in card and "50.0% on 6 photos" in card
    assert "EfficientNet-Lite0 stem" in card and "parameters" in card and "MB on disk" in card
    assert "8 px patches on 32 px" in ui.model_card(models.get("scratch_vit"))


def test_checkpoint_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FOODVISION_CHECKPOINTS", str(tmp_path))
    assert ui.checkpoint_paths() == {f: tmp_path / f"{f}.safetensors" for f in FAMILIES}


@pytest.mark.parametrize("text, expected", [(None, "mean"), ("max", "max"), ("head 2", 1), (2, 1)])
def test_parse_head(text, expected):
    assert ui.parse_head(text, 2) == expected


@pytest.mark.parametrize("text", ["head 3", "head 0", "nose"])
def test_parse_head_rejects_what_the_model_lacks(text):
    with pytest.raises(ValueError, match="head"):
        ui.parse_head(text, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_overlays_and_grids_fit_the_models_view(models, family):
    p = models.get(family)
    r = p.explain(make_image(1, (120, 90)))
    size = p.image_size
    assert r.view.size == (size, size)
    for view in ("attention", "rollout"):
        heat = ui.heat_map(p, r, view, layer=99, head="max", discard=0.5)  # layer clipped to the last
        assert heat.shape == (p.token_grid if p.is_vit else r.cam.shape)
    assert ui.render_overlay(p, r, "rollout").size == (ui.DISPLAY_SIDE, ui.DISPLAY_SIDE)
    assert ui.render_patches(p, r).size == (ui.DISPLAY_SIDE, ui.DISPLAY_SIDE)
    mosaic = ui.render_layers(p, r)
    assert (mosaic is None) == (not p.is_vit)
    if p.is_vit:
        assert ui.head_choices(p) == ["mean", "max"] + [f"head {i + 1}" for i in range(p.num_heads)]


def test_attention_heat_map_is_the_class_token_row(models):
    p = models.get("scratch_vit")
    r = p.explain(make_image(2))
    heat = ui.heat_map(p, r, "attention", layer=2, head=0, discard=0)
    assert np.allclose(heat.ravel(), r.maps[1][0, 0, 1:].numpy())


def test_patch_grid_uses_the_models_patch_size(models):
    p = models.get("scratch_vit")  # 32 px input, 8 px patches: lines every 336/4 = 84 px on screen
    grid = np.asarray(ui.render_patches(p, p.explain(Image.new("RGB", (64, 64)))))
    assert (grid[:, 84] == 255).all() and (grid[:84, 42] == 0).all() and (grid[84, :] == 255).all()


def test_latency_text_names_device_threads_and_size(models):
    text = ui.latency_text(models.get("effnet"), 12.34, 56.78)
    assert "12.3 ms prediction" in text and "56.8 ms Grad-CAM" in text and "threads" in text and "MB" in text
    assert "3.37 M parameters" in text


def test_measure_p50_times_every_loaded_model(models):
    p50 = ui.measure_p50(models, runs=2)
    assert set(p50) == set(FAMILIES) and all(v > 0 for v in p50.values())


def test_optimisations_come_from_a_spec_or_the_environment(monkeypatch, tiny_checkpoints):
    assert ui.optimisations("scratch_vit=int8, effnet=channels_last") == {"scratch_vit": "int8",
                                                                         "effnet": "channels_last"}
    monkeypatch.setenv("FOODVISION_OPTIMISE", "timm_vit=channels_last")
    assert ui.optimisations() == {"timm_vit": "channels_last"}
    monkeypatch.delenv("FOODVISION_OPTIMISE")
    assert ui.optimisations() == {}
    for bad in ("resnet=int8", "effnet=fast", "effnet"):
        with pytest.raises(ValueError, match="bad optimisation"):
            ui.optimisations(bad)
    models = ui.load_models({"scratch_vit": tiny_checkpoints["scratch_vit"]}, {"scratch_vit": "int8"})
    p = models.get("scratch_vit")
    assert p.optimisation == "int8" and sum(p.predict(make_image(3)).values()) == pytest.approx(1.0, abs=1e-5)
    assert p.explain(make_image(3)).maps  # attention maps still come out of the quantised model
