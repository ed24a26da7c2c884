"""vit.explore.inside (the record and its command), inside_words and inside_plots: Figure 7 measured on photos,
saved beside the checkpoints, read in sentences and drawn; and the committed checkpoints/inside.json is current."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import ROOT, SHARED_DATA, tiny_checkpoint

from vit.explore import figure7, inside, inside_plots, inside_words
from vit.models.attention import attention_maps
from vit.models.factory import load, read_meta
from vit.models.families import get as family

COMMITTED = ROOT / "checkpoints"
TEST_PHOTOS = SHARED_DATA / "pizza_steak_sushi" / "test"


@pytest.fixture(scope="module")
def measured(tmp_path_factory, image_folder):
    """A folder with a tiny scratch ViT and a tiny hybrid (and a CNN), measured by the command on the tiny
    image folder's test split (2 photos a class), as `python -m vit.explore.inside` does."""
    folder = tmp_path_factory.mktemp("inside_ckpts")
    for f in ("scratch_vit", "timm_vit", "effnet"):
        tiny_checkpoint(folder / f"{f}.safetensors", f)
    assert inside.main(["--checkpoints", str(folder), "--data-dir", str(image_folder), "--batch", "4"]) == 0
    return folder


def test_the_command_measures_every_vit_and_no_cnn(measured, image_folder):
    run = json.loads((measured / inside.FILE_NAME).read_text())
    assert sorted(run["records"]) == ["scratch_vit", "timm_vit"] and run["command"].startswith("python -m vit.explore.inside")
    r = inside.read(measured / inside.FILE_NAME)["scratch_vit"]
    assert r.photos == 6 and r.split == f"{image_folder.name}/test" and r.grid == (4, 4) and r.prefix == 1
    assert np.asarray(r.attention_distance_px).shape == (2, 2) == np.asarray(r.cls_attention_entropy).shape
    assert r.checkpoint_sha256 == inside.sha256(measured / "scratch_vit.safetensors")


def test_the_record_is_the_definitions_on_every_photo(measured, image_folder):
    """The saved means equal figure7's functions on all the photos' maps at once (batches of 4 and 2 combined)."""
    from vit.data.datasets import list_images
    from vit.data.images import open_image
    from vit.data.preprocess import split_eval_transform

    ckpt = load(measured / "timm_vit.safetensors")
    view, to_tensor = split_eval_transform(ckpt.preprocessing.to_dict())
    x = torch.stack([to_tensor(view(open_image(s.path))) for s in list_images(image_folder / "test")[0]])
    with torch.inference_mode():
        _, maps = attention_maps(ckpt.model.eval(), x)
    r = inside.read(measured / inside.FILE_NAME)["timm_vit"]
    assert np.allclose(r.attention_distance_px, figure7.attention_distance(maps, r.grid, r.patch_px, 1), rtol=1e-4)
    assert np.allclose(r.cls_attention_entropy, figure7.cls_attention_entropy(maps, 1), atol=1e-5)
    assert r.uniform_distance_px == pytest.approx(figure7.uniform_distance(r.grid, r.patch_px), abs=1e-4)


def test_a_record_of_another_checkpoint_file_is_stale(measured, tmp_path):
    record, why = inside.record_for(measured / "scratch_vit.safetensors")
    assert record is not None and why is None
    other = tmp_path / "scratch_vit.safetensors"
    tiny_checkpoint(other, "scratch_vit")
    other.write_bytes(other.read_bytes()[:-4] + b"\x00\x01\x02\x03")  # the same model id, other weights
    (tmp_path / inside.FILE_NAME).write_text((measured / inside.FILE_NAME).read_text())
    record, why = inside.record_for(other)
    assert record is None and "measured on another scratch_vit.safetensors" in str(why) and \
        "python -m vit.explore.inside" in str(why) and why.code == "inside.stale"
    record, why = inside.record_for(measured / "effnet.safetensors")
    assert record is None and "not measured for effnet.safetensors" in str(why) and why.code == "inside.not_measured"


def test_a_record_survives_its_json(measured):
    r = inside.read(measured / inside.FILE_NAME)["scratch_vit"]
    again = inside.InsideRecord.from_json(json.loads(json.dumps(r.to_json())))
    assert again.grid == r.grid and np.allclose(again.attention_entropy, r.attention_entropy, atol=1e-5)
    assert again.uniform_distance_fraction == pytest.approx(r.uniform_distance_px / r.image_px, abs=1e-6)


# ---------------------------------------------------------------- the committed record


@pytest.mark.parametrize("model", ["scratch_vit", "timm_vit"])
def test_the_committed_record_is_of_the_committed_checkpoint(model):
    """After a retrain, `python -m vit.explore.inside` (and `python -m vit.bench.readme`) must be rerun."""
    record, why = inside.record_for(COMMITTED / f"{model}.safetensors")
    assert record is not None, why
    meta = read_meta(COMMITTED / f"{model}.safetensors")
    assert family(meta["family"]).attention
    assert record.photos == meta["metrics"]["test"]["n_images"] == 75 and record.split == "pizza_steak_sushi/test"
    assert record.accuracy == pytest.approx(meta["metrics"]["test"]["accuracy"], abs=0.5 / 75)  # the same photos
    assert np.asarray(record.attention_entropy).shape == (record.layers, record.heads)


@pytest.mark.slow
@pytest.mark.skipif(not TEST_PHOTOS.is_dir(), reason="needs ../shared/data")
def test_the_committed_record_is_reproduced_on_the_test_photos(tmp_path):
    """The command again, now: the same numbers (to rounding) for both ViTs."""
    saved = inside.read(COMMITTED / inside.FILE_NAME)
    for model in saved:
        again = inside.measure(load(COMMITTED / f"{model}.safetensors"), TEST_PHOTOS.parent, "test")
        for name in ("attention_distance_px", "attention_entropy", "cls_attention_entropy", "attention_peak"):
            assert np.allclose(getattr(again, name), getattr(saved[model], name), rtol=1e-3), (model, name)


# ---------------------------------------------------------------- sentences and pictures


def record(**overrides) -> inside.InsideRecord:
    """A made-up 2-layer, 2-head record on a 4 x 4 grid of 8 px patches."""
    base = dict(model="m", checkpoint_sha256="0" * 64, photos=10, split="food/test", accuracy=1.0, image_px=32,
                patch_px=8, grid=(4, 4), prefix=1, uniform_distance_px=figure7.uniform_distance((4, 4), 8),
                attention_distance_px=[[10.0, 12.0], [14.0, 13.0]], attention_entropy=[[0.7, 0.8], [0.85, 0.9]],
                cls_attention_entropy=[[0.8, 0.8], [0.9, 0.9]], attention_peak=[[9.0, 7.0], [4.0, 3.0]],
                cls_attention_peak=[[8.0, 8.0], [5.0, 5.0]], prefix_mass=[[0.0] * 2] * 2,
                cls_mean_row_entropy=[0.9, 0.95], cls_mean_row_peak=[6.0, 4.0], cls_mean_row_peak_max=[9.0, 5.0], rows={},
                weights={"filters_explained_variance": [0.3, 0.2], "embed_dim": 32})
    return inside.InsideRecord(**{**base, **overrides})


def test_sentences_follow_the_numbers():
    selective = record()
    even = replace(selective, attention_entropy=[[0.98, 0.99], [0.99, 0.995]], attention_peak=[[1.5, 1.4], [1.3, 1.2]],
                   weights={"filters_explained_variance": None, "embed_dim": 32})
    assert "In layer 1 each patch attends to a few patches" in inside_words.distance_text(selective)
    assert "0.70–0.80" in inside_words.distance_text(selective)
    assert "no head is local" in inside_words.distance_text(selective)  # 10-12 px against 14.3 for even attention
    local = replace(selective, attention_distance_px=[[5.0, 12.0], [14.0, 13.0]])  # under 0.6 x 14.3 px
    assert "some heads are local" in inside_words.distance_text(local)
    assert "almost evenly to all 16 patches" in inside_words.distance_text(even)
    assert inside_words.distance_text(None, "not measured for x") == "No attention figures: not measured for x."
    contrast = inside_words.contrast_text({"A": selective, "B": even})
    assert contrast.startswith("**What the first layer of A does that B's does not:**") and "CNN stem" in contrast
    assert inside_words.contrast_text({"A": selective}) == ""


def test_position_and_filter_sentences_follow_the_numbers():
    layout = {"position_similarity": {"neighbours": 0.8, "all_pairs": 0.03, "all_pairs_std": 0.4, "centre_vs_border": -0.5,
                                      "left_right_mirror": 0.7}, "embed_dim": 192, "filters_explained_variance": [0.5] * 2,
              "patch_embedding_channels": 3, "patch_embedding_kernel": 8}
    assert "learned where each patch sits" in inside_words.position_text(layout)
    assert "mirror positions are alike (0.70)" in inside_words.position_text(layout)
    flat = {**layout, "position_similarity": {**layout["position_similarity"], "neighbours": 0.05, "all_pairs": 0.02},
            "filters_explained_variance": None, "patch_embedding_channels": 112, "patch_embedding_kernel": 1}
    assert "show no layout" in inside_words.position_text(flat) and f"{1 / math.sqrt(192):.2f}" in inside_words.position_text(flat)
    assert "reads the 112 feature channels of its CNN stem" in inside_words.filters_text(flat, 16)
    assert "first 2 carry 100%" in inside_words.filters_text(layout, 8)


def test_the_panels_are_pictures_of_a_fixed_size():
    sim = figure7.position_similarity(_tiny_vit())
    assert inside_plots.similarity_panel(sim, (4, 4)).size == inside_plots.PANEL_PX
    assert inside_plots.distance_panel([[10.0, 12.0], [14.0, 13.0]], 14.3, 32).size == inside_plots.PANEL_PX
    tiles = figure7.patch_filter_pcs(_tiny_vit())[0]
    image = inside_plots.filters_panel(tiles)
    assert image.width <= inside_plots.PANEL_PX[0] and image.height <= inside_plots.PANEL_PX[1]


def _tiny_vit():
    from vit.models.scratch_vit import VisionTransformer, preset

    torch.manual_seed(0)
    return VisionTransformer(preset("vit_test_p8_32"))


def test_another_language_needs_only_the_same_keys_and_fields():
    """A table with the same keys whose templates use the same {fields} in another order says everything: the
    functions format numbers, never words."""
    from string import Formatter

    fields = {k: [f for _, f, _, _ in Formatter().parse(t) if f] for k, t in inside_words.WORDS.items()}
    other = {k: "<" + k + ">" + "|".join("{" + f + "}" for f in reversed(fs)) for k, fs in fields.items()}
    selective, layout = record(), {"position_similarity": {"neighbours": 0.8, "all_pairs": 0.03, "all_pairs_std": 0.4,
                                                          "centre_vs_border": -0.5, "left_right_mirror": 0.7},
                                   "embed_dim": 32, "filters_explained_variance": [0.5, 0.2]}
    even = replace(selective, attention_entropy=[[0.99] * 2] * 2, weights={"filters_explained_variance": None})
    flat = {**layout, "position_similarity": {**layout["position_similarity"], "neighbours": 0.02},
            "filters_explained_variance": None, "patch_embedding_channels": 112, "patch_embedding_kernel": 1}
    said = [inside_words.filters_text(layout, 8, other), inside_words.filters_text(flat, 16, other),
            inside_words.position_text(layout, other), inside_words.position_text(flat, other),
            inside_words.distance_text(selective, words=other), inside_words.distance_text(even, words=other),
            inside_words.distance_text(None, "x", other), inside_words.contrast_text({"A": selective, "B": even}, other),
            inside_words.distance_text(replace(selective, attention_distance_px=[[5.0, 5.0]] * 2), words=other),
            inside_words.contrast_text({"A": selective, "B": record(attention_entropy=[[0.9] * 2] * 2)}, other)]
    assert all(text.startswith("<fv.inside.") and "{" not in text for text in said), said
    assert all(f"<{key}>" in " ".join(said) for key in inside_words.WORDS), "a template no sentence used"
