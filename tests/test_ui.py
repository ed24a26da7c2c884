"""What the app shows, computed without Gradio (vit/app/ui.py)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import FAMILIES, ROOT, make_image
from PIL import Image

from vit.app import api, ui
from vit.explain.rollout import head_choices, parse_head
from vit.explain.errors import RequestError
from vit.models import checkpoint
from vit.serve import model_set, predictor


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return model_set.ModelSet(tiny_checkpoints).load()


def test_importing_the_app_imports_no_timm():
    """The page is built before the models: timm (seconds to import) is left to the loading thread."""
    code = ("import sys, vit.app.ui, vit.app.gradio_io, vit.app.examples, vit.serve.model_set, vit.app.handlers; from vit.models.checkpoint import read_meta; "
            "assert 'timm' not in sys.modules, 'timm imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_model_card_says_what_the_model_started_from_and_scores(models):
    card = ui.model_card(models.meta["timm_vit"], "Hybrid ViT (timm)", models.paths["timm_vit"])
    assert "Hybrid ViT (timm)" in card and "Started from:** random" in card and "50.0% on 6 photos" in card
    assert "vit_hybrid" in card and "2 layers × 2 heads" in card and "parameters" in card and "MB on disk" in card
    assert "**Classes:** pizza, steak, sushi" in card
    assert "8 px patches on 32 px" in ui.model_card(models.meta["scratch_vit"], "x", models.paths["scratch_vit"])


def test_model_card_says_what_a_distilled_model_learned_from(models):
    meta = dict(models.meta["scratch_vit"])
    meta["recipe"] = dict(meta.get("recipe", {}), n_train=10, n_val=2, feature_distill=1.0, distillation={
        "teacher_family": "effnet", "teacher_init": "imagenet"})
    meta["metrics"] = dict(meta.get("metrics", {}), val={"accuracy": 0.5, "n_images": 2})
    card = ui.model_card(meta, "x", models.paths["scratch_vit"])
    assert "from the EfficientNet-Lite0's predictions and feature maps" in card
    assert "the teacher started from imagenet weights" in card and "(validation: " in card
    meta["recipe"] = dict(meta["recipe"], feature_distill=0.0, distillation={"teacher_family": "effnet",
                                                                             "teacher_init": "random"})
    card = ui.model_card(meta, "x", models.paths["scratch_vit"])
    assert "predictions (" not in card and "feature maps" not in card and "teacher started" not in card


def test_model_card_counts_the_passes_of_a_repeated_epoch(models):
    """vit.train --repeats N: an epoch is N passes over the photos, and the card says so (run F's 48 epochs
    are 960 passes); a plain run says its epochs alone."""
    meta = dict(models.meta["scratch_vit"])
    meta["recipe"] = dict(meta.get("recipe", {}), n_train=10, n_val=2, epochs_run=48, repeats=20)
    assert "10 photos (2 more held out for validation), 48 epochs of 20 passes" in \
        ui.model_card(meta, "x", models.paths["scratch_vit"])
    assert checkpoint.describe_epochs(meta["recipe"], short=True) == "48 × 20 passes"  # the tables' cell
    meta["recipe"]["repeats"] = 1
    assert checkpoint.describe_epochs(meta["recipe"], short=True) == "48"
    assert "validation), 48 epochs" in ui.model_card(meta, "x", models.paths["scratch_vit"])
    assert "passes" not in ui.model_card(meta, "x", models.paths["scratch_vit"])


@pytest.mark.parametrize("text, expected", [(None, "mean"), ("max", "max"), ("head 2", 1), ("2", 1), (1, 1), (0, 0)])
def test_parse_head_counts_from_one_on_screen_and_takes_a_parsed_index(text, expected):
    assert parse_head(text, 2) == expected


@pytest.mark.parametrize("text", ["head 3", "head 0", "nose", 2, -1])
def test_parse_head_rejects_what_the_model_lacks(text):
    with pytest.raises(RequestError, match="head"):
        parse_head(text, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_overlays_and_grids_fit_the_models_view(models, family):
    p = models.get(family)
    r = p.explain(make_image(1, (120, 90)), p.methods[0])
    size = p.image_size
    assert r.view.size == (size, size) and r.heat.shape == r.grid
    assert ui.render_overlay(r).size == (ui.DISPLAY_SIDE, ui.DISPLAY_SIDE)
    assert ui.render_patches(r).size == (ui.DISPLAY_SIDE, ui.DISPLAY_SIDE)
    mosaic = ui.render_layers(r)
    assert (mosaic is None) == (not models.has_attention(family))
    if models.has_attention(family):
        assert head_choices(p.num_heads) == ["mean", "max"] + [f"head {i + 1}" for i in range(p.num_heads)]
    assert model_set.methods_of(models, family) == p.methods  # known from the metadata before the model loads


@pytest.mark.parametrize("family, grid", [("scratch_vit", (4, 4)), ("timm_vit", (4, 4)), ("effnet", None)])
def test_the_map_is_on_the_models_own_grid(models, family, grid):
    """Attention on the token grid (32 px / 8 px patches; 64 px / stride 16); Grad-CAM on EfficientNet's
    last feature map, 1/32 of the input; both non-negative and not constant."""
    p = models.get(family)
    r = p.explain(make_image(5, (200, 150)), "attention" if models.has_attention(family) else "grad-cam")
    assert r.heat.shape == (grid or (p.image_size // 32, p.image_size // 32))
    assert r.cell_px == p.image_size / r.heat.shape[1] and (r.heat >= 0).all() and np.ptp(r.heat) > 0


def test_faithfulness_is_shown_and_recorded(models):
    """Each number in its place (distinct made-up scores), and a real scored result renders."""
    from types import SimpleNamespace

    from vit.explain import Faithfulness

    f = Faithfulness(deletion_auc=0.111, insertion_auc=0.822, random_deletion_auc=0.333, random_insertion_auc=0.444,
                     deletion_curve=[1.0, 0.0], insertion_curve=[0.0, 1.0], steps=1, baseline="blur",
                     random_seeds=(7, 8))
    r = SimpleNamespace(faithfulness=f, method="grad-cam", top="pizza", probs={"pizza": 0.9, "sushi": 0.1},
                        latency_ms=1.234, explain_ms=5.0, map_ms=2.0, score_ms=3.0, grid=(7, 7))
    assert api.explain_record("effnet", r) == {
        "model": "effnet", "method": "grad-cam", "label": "pizza", "probs": {"pizza": 0.9, "sushi": 0.1},
        "deletion_auc": 0.111, "insertion_auc": 0.822, "random_deletion_auc": 0.333, "random_insertion_auc": 0.444,
        "steps": 1, "random_seeds": [7, 8], "latency_ms": 1.23, "explain_ms": 5.0,
        "map_ms": 2.0, "score_ms": 3.0, "grid": [7, 7],
        "in_distribution": None, "ood_score": None, "ood_threshold": None, "prediction_set": [], "temperature": 1.0,
        "neighbours": [], "neighbours_note": None}
    text = ui.faithfulness_text(r)
    assert "deletion AUC **0.111** vs 0.333 at random (lower is better)" in text
    assert "insertion AUC **0.822** vs 0.444 at random (higher is better)" in text
    p = models.get("effnet")
    scored = p.explain(make_image(4), "grad-cam", score=True)
    assert api.explain_record("effnet", scored)["steps"] == predictor.SCORE_STEPS
    assert api.explain_record("effnet", scored)["random_seeds"] == list(predictor.SCORE_SEEDS)
    assert ui.curves_image(scored).size[0] > 300 and "deletion AUC" in ui.faithfulness_text(scored)
    unscored = p.explain(make_image(4), "grad-cam")
    assert ui.faithfulness_text(unscored) == ui.scale_text(unscored) and ui.curves_image(unscored) is None
    assert api.faithfulness_record(unscored)["insertion_auc"] is None


def test_patch_grid_uses_the_models_patch_size(models):
    p = models.get("scratch_vit")  # 32 px input, 8 px patches: lines every 336/4 = 84 px on screen
    grid = np.asarray(ui.render_patches(p.explain(Image.new("RGB", (64, 64)), "attention")))
    assert (grid[:, 84] == 255).all() and (grid[:84, 42] == 0).all() and (grid[84, :] == 255).all()


def test_latency_text_names_device_threads_and_size(models):
    p = models.get("effnet")
    r = p.explain(make_image(3), "grad-cam")
    text = ui.latency_text(p, r)
    assert f"{r.latency_ms:.1f} ms prediction" in text and "grad-cam map" in text and "threads" in text
    assert "3.37 M parameters" in text and "MB" in text


def test_measure_p50_times_every_loaded_model(models):
    from vit.bench.timing import measure_p50

    p50 = measure_p50(models, runs=2)
    assert set(p50) == set(FAMILIES) and all(v > 0 for v in p50.values())


def test_history_rows_feed_the_curves(models):
    rows = ui.history_rows(models, "acc")
    assert ["Scratch ViT", 1, "Scratch ViT · train", 0.4] in rows and ["Scratch ViT", 1, "Scratch ViT · val", 0.3] in rows
    assert len(rows) == 2 * len(FAMILIES)


def test_the_reliability_diagram_says_which_models_have_no_bars(models):
    """The tiny checkpoints carry no gate: no diagram, and the caption names each model and why."""
    image, caption = ui.reliability(models)
    assert image is None and caption.count("no gate") == len(models.ids)


def test_reliability_bars_come_from_the_checkpoint_first_then_the_saved_ood_run(tmp_path):
    import json

    from vit.trust import reliability as rel

    bar = {"lo": 0.8, "hi": 0.87, "count": 5, "accuracy": 0.8, "confidence": 0.84}
    ckpt = tmp_path / "m.safetensors"
    (tmp_path / "ood.json").write_text(json.dumps({"runs": [{"checkpoint": "m.safetensors", "n_test": 75, "gate": {
        "test_reliability_before": [bar], "test_reliability_after": [bar]}}]}))
    runs = rel.ood_runs(tmp_path)
    own = {"trust": {"fitted_on": {"val": 71}, "measured": {"val_reliability_before": [bar],
                                                             "val_reliability_after": [bar, bar]}}}
    assert rel.bars_for("M", own, ckpt, runs).source.startswith("71 validation photos")
    from_run = rel.bars_for("M", {"trust": {"measured": {}}}, ckpt, runs)
    assert from_run.source == "75 test photos (from ood.json)" and from_run.before == [bar]
    assert "vit.trust.ood" in rel.bars_for("M", {"trust": {"x": 1}}, tmp_path / "other.safetensors", runs)
    assert rel.diagram([from_run]).size[0] > 200
    assert (from_run.split, from_run.n) == ("test", 75)  # for a caption in any language


def test_the_reliability_diagram_can_be_drawn_without_words(monkeypatch):
    """Its page version: the models' names and numbers only (the caption says the rest, in the page's language)."""
    from matplotlib.text import Text

    from vit.trust import reliability as rel

    drawn, draw = [], Text.draw
    monkeypatch.setattr(Text, "draw", lambda self, renderer: (drawn.append(self.get_text()), draw(self, renderer))[1])
    bar = {"lo": 0.8, "hi": 0.87, "count": 5, "accuracy": 0.8, "confidence": 0.84}
    rel.diagram([rel.Bars("Scratch ViT", "71 validation photos", [bar], [bar])], words=False)
    assert {t for t in drawn if t.strip() and not re.fullmatch(r"[\d.−-]+", t)} == {"Scratch ViT"}, drawn
