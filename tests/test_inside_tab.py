"""vit.app.inside_tab and /inside's record, without a browser: a ViT's Figure 7 from its record and weights,
a CNN refused, a checkpoint without a record served all the same and said so."""
import re

import numpy as np
import pytest
from conftest import tiny_checkpoint
from PIL import Image

from vit.app import api, inside_tab
from vit.explain.errors import RequestError
from vit.explore import inside
from vit.serve.model_set import ModelError, ModelSet


@pytest.fixture(scope="module")
def models(tmp_path_factory, image_folder):
    """Tiny checkpoints of the three families, the two ViTs measured on the tiny image folder."""
    folder = tmp_path_factory.mktemp("inside_tab")
    paths = {f: tiny_checkpoint(folder / f"{f}.safetensors", f) for f in ("scratch_vit", "timm_vit", "effnet")}
    inside.main(["--checkpoints", str(folder), "--data-dir", str(image_folder)])
    served = ModelSet(paths).start()
    assert served.wait(300)
    return served


def test_a_vits_view_has_its_record_and_its_weights(models):
    v = inside_tab.inside_view(models, "scratch_vit")
    assert v.record is not None and v.note is None and v.grid == (4, 4) and v.image_px == 32 and v.patch_px == 8
    assert v.similarity.shape == (16, 16) and np.allclose(v.similarity.diagonal(), 1, atol=1e-6)
    assert v.tiles.shape[1:] == (8, 8, 3)
    assert inside_tab.inside_view(models, "scratch_vit") is v  # computed once per checkpoint file
    files = inside_tab.panel_pictures(v)
    assert all(Image.open(files[p]).size[0] > 100 for p in inside_tab.PANELS)


def test_a_hybrid_has_no_filters_to_draw_and_says_why(models):
    v = inside_tab.inside_view(models, "timm_vit")
    assert v.tiles is None and inside_tab.panel_pictures(v)["filters"] is None
    assert "reads the" in inside_tab.panel_texts(v)["filters"] and "CNN stem" in inside_tab.panel_texts(v)["filters"]


def test_the_record_endpoint_gives_the_issues_fields(models):
    r = api.inside_record(inside_tab.inside_view(models, "timm_vit"))
    assert r["grid"] == [4, 4] and r["input_px"] == 64 and r["patch_px"] == 16
    assert np.asarray(r["attention_distance_px"]).shape == (2, 2) == np.asarray(r["cls_attention_entropy"]).shape
    assert np.asarray(r["position_similarity"]).shape == (16, 16) and r["filters_explained_variance"] is None
    assert r["uniform_distance_fraction"] == pytest.approx(r["uniform_distance_px"] / 64, abs=1e-4)


def test_a_cnn_is_refused_and_an_unknown_model_named(models):
    with pytest.raises(RequestError, match="EfficientNet-Lite0 has no attention maps: Inside the ViT is for the Vision "
                                           "Transformers \\(scratch_vit, timm_vit\\)"):
        inside_tab.inside_view(models, "effnet")
    with pytest.raises(ModelError, match="unknown model 'resnet'"):
        inside_tab.inside_view(models, "resnet")


def test_a_vit_without_a_record_is_served_and_says_so(tmp_path):
    path = tiny_checkpoint(tmp_path / "my_vit.safetensors", "scratch_vit")
    served = ModelSet({"my_vit": path}).start()
    assert served.wait(120)
    v = inside_tab.inside_view(served, "my_vit")
    assert v.record is None and "not measured for my_vit.safetensors" in str(v.note)
    r = api.inside_record(v)
    assert r["attention_distance_px"] is None and r["attention_entropy"] is None and "not measured" in r["note"]
    assert np.asarray(r["position_similarity"]).shape == (16, 16)
    assert inside_tab.panel_pictures(v)["distance"] is None
    assert inside_tab.panel_texts(v)["distance"].startswith("No attention figures: not measured for my_vit.safetensors")
    assert inside_tab.panel_texts(v, "ja")["distance"].startswith("注意の数値はありません：`my_vit.safetensors` では")


def test_the_tabs_words_follow_the_pages_language(models):
    """Every sentence the tab builds, in the page's language: English (the default, as docs/inside.md says them)
    and Japanese from vit.app.i18n's table; a model that cannot be shown says why in its own column."""
    shown = inside_tab.views(models, ["scratch_vit", "timm_vit", "effnet"])
    assert isinstance(shown["effnet"], RequestError)
    en, ja = inside_tab.tab_texts(models, shown), inside_tab.tab_texts(models, shown, "ja")
    assert set(en) == set(ja) == {"contrast", *((p, i) for p in inside_tab.PANELS for i in shown)}
    assert en["filters", "timm_vit"].startswith("No pixel filters") and "not pixels" in en["filters", "timm_vit"]
    assert ja["filters", "timm_vit"].startswith("画素のフィルタはありません")
    assert en["distance", "effnet"] == "⚠️ EfficientNet-Lite0 has no attention maps: Inside the ViT is for the " \
                                       "Vision Transformers (scratch_vit, timm_vit)"
    assert ja["distance", "effnet"].startswith("⚠️ EfficientNet-Lite0 には注意マップがありません")
    japanese = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
    assert all(japanese.search(t) for t in ja.values() if t) and not any(japanese.search(t) for t in en.values())
