import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH
from PIL import Image

from vit import explain
from vit.explain import methods
from vit.models import attention, families
from vit.models import scratch_vit as vit_model
from vit.models.factory import build


def test_timm_attention_path_reproduces_timms_own_forward():
    torch.manual_seed(0)
    for arch in (TINY_ARCH["timm_vit"], {"model_name": "vit_tiny_patch16_224", "depth": 2}):
        model = build("timm_vit", arch, num_classes=3).model.eval()
        size = arch.get("img_size", 224)
        x = torch.randn(2, 3, size, size)
        with torch.inference_mode():
            logits, maps = attention.attention_maps(model, x)
            assert torch.allclose(logits, model(x), atol=1e-5)  # timm's forward uses fused attention
        n = int(np.prod(attention.token_grid(model))) + 1
        assert len(maps) == len(model.blocks) and maps[0].shape == (2, model.blocks[0].attn.num_heads, n, n)
        assert torch.allclose(maps[-1].sum(-1), torch.ones(2, maps[-1].shape[1], n), atol=1e-5)


def test_cnn_has_no_attention_maps():
    model = build("effnet", TINY_ARCH["effnet"], num_classes=3).model
    with pytest.raises(TypeError, match="no attention maps"):
        attention.attention_maps(model, torch.randn(1, 3, 32, 32))


def random_attention(layers, heads, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(heads, n, n, generator=g).softmax(-1) for _ in range(layers)]


@pytest.mark.parametrize("discard", [0.0, 0.5, 0.9])
def test_rollout_rows_sum_to_one(discard):
    r = explain.rollout(random_attention(4, 3, 10), discard_ratio=discard)
    assert r.shape == (10, 10)
    assert torch.allclose(r.sum(-1), torch.ones(10), atol=1e-5)
    assert (r >= 0).all()


def test_rollout_of_one_identity_layer_is_the_identity():
    eye = torch.eye(7).expand(2, 7, 7)
    assert torch.allclose(explain.rollout([eye]), torch.eye(7))


def test_rollout_composes_layers_in_order():
    a, b = random_attention(2, 1, 5, seed=3)
    half = lambda m: 0.5 * m[0] + 0.5 * torch.eye(5)  # noqa: E731
    expected = half(b) @ half(a)
    assert torch.allclose(explain.rollout([a, b]), expected.float(), atol=1e-6)


def test_cls_attention_and_rollout_maps_have_the_token_grid_shape():
    maps = random_attention(2, 3, 2 + 16)  # distilled: class + distillation token, then 4x4 patches
    m = explain.cls_attention(maps[0], (4, 4), prefix=2, head=1)
    assert m.shape == (4, 4) and np.allclose(m.ravel(), maps[0][1, 0, 2:].numpy())
    assert np.allclose(explain.cls_attention(maps[0], (4, 4), 2, "max").ravel(), maps[0][:, 0, 2:].max(0).values.numpy())
    assert explain.rollout_map(maps, (4, 4), prefix=2, discard_ratio=0.5).shape == (4, 4)


def test_cam_is_non_negative_and_peaks_where_the_gradient_says():
    feats = torch.ones(8, 7, 7)
    grads = torch.zeros(8, 7, 7)
    feats[2] = 0
    feats[2, 5, 1] = 10.0  # channel 2 fires only at (5, 1)
    grads[2] = 1.0  # and only channel 2 matters to the class
    grads[3] = -1.0  # channel 3 counts against it everywhere
    cam = explain.cam_from(feats, grads)
    assert cam.shape == (7, 7) and (cam >= 0).all()
    assert np.unravel_index(cam.argmax(), cam.shape) == (5, 1)


def test_grad_cam_on_effnet_is_image_grid_sized_and_leaves_no_gradients():
    torch.manual_seed(0)
    model = build("effnet", TINY_ARCH["effnet"], num_classes=3).model.eval()
    cam, logits = explain.grad_cam(model, torch.randn(1, 3, 64, 64))
    assert cam.shape == (2, 2) and (cam >= 0).all() and logits.shape == (1, 3)
    assert all(p.grad is None for p in model.parameters())
    overlay = explain.overlay(Image.new("RGB", (64, 64)), cam)
    assert overlay.size == (64, 64)


def test_overlay_puts_the_hot_spot_where_the_map_is_hot():
    heat = np.zeros((4, 4))
    heat[0, 3] = 1.0  # top-right
    out = np.asarray(explain.overlay(Image.new("RGB", (80, 80), (128, 128, 128)), heat, alpha=1.0, cmap="gray"))
    assert out[5, 75].mean() > 200 and out[75, 5].mean() < 50


def test_patch_grid_draws_a_line_every_patch():
    out = np.asarray(explain.patch_grid(Image.new("RGB", (64, 64)), 16))
    assert (out[:, 16] == 255).all() and (out[48] == 255).all()
    assert (out[1:16, 15] == 0).all() and (out[:16, 1:16] == 0).all()


def test_layer_mosaic_tiles_every_layer():
    m = explain.layer_mosaic(Image.new("RGB", (50, 50)), [np.random.rand(4, 4) for _ in range(6)], tile=40)
    assert m.size == (4 * 40, 2 * 40)


# ---------------------------------------------------------------- the fixed attention scale


def peaked(cells: int, peak: float) -> np.ndarray:
    """A row of attention weights over `cells` patch keys whose largest weight is `peak` x uniform, the rest
    spread evenly: (rows, cols) = (1, cells)."""
    row = np.full(cells, (1 - peak / cells) / (cells - 1))
    row[cells // 2] = peak / cells
    return row[None] * 0.9  # sums to 0.9: the prefix tokens took the rest; the scale renormalises


def test_the_fixed_scale_leaves_the_photo_untouched_under_uniform_attention():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    uniform = np.full((12, 12), 0.98 / 144)  # any sum: 2 % on the class and distillation tokens
    assert np.all(explain.on_scale(uniform) == 0)
    assert np.array_equal(np.asarray(explain.scaled_overlay(photo, uniform, 0.5)), np.asarray(photo))
    s = explain.sharpness(uniform)
    assert s.peak == pytest.approx(1.0) and s.entropy == pytest.approx(1.0) and s.nearly_uniform and s.cells == 144
    # the stretched overlay of today draws the same flat map as a dark veil: not the photo
    assert np.abs(np.asarray(explain.overlay(photo, uniform), float) - np.asarray(photo, float)).mean() > 20


def test_the_fixed_scale_orders_a_5x_peak_below_a_15x_one_where_stretching_does_not():
    grey = Image.new("RGB", (196, 196), (128, 128, 128))
    five, fifteen = peaked(196, 5.0), peaked(196, 15.0)
    assert explain.sharpness(five).peak == pytest.approx(5.0) and explain.sharpness(fifteen).peak == pytest.approx(15.0)
    assert explain.on_scale(five).max() == pytest.approx(np.log2(5) / 5)  # one octave = 0.2 on 1x-32x
    assert explain.on_scale(fifteen).max() == pytest.approx(np.log2(15) / 5)

    def contrast(img: Image.Image) -> float:  # how far the drawn peak is from the untouched grey photo
        return float(np.abs(np.asarray(img, float) - 128).sum(-1).max())

    assert contrast(explain.scaled_overlay(grey, fifteen)) > 1.5 * contrast(explain.scaled_overlay(grey, five))
    assert contrast(explain.overlay(grey, fifteen)) == pytest.approx(contrast(explain.overlay(grey, five)))  # stretched
    assert explain.sharpness(five).entropy > explain.sharpness(fifteen).entropy


def test_the_scale_is_clipped_at_32x_and_renormalised():
    one = np.zeros((8, 8))
    one[2, 3] = 0.4  # all of the row on one of 64 keys: 64x, above the top of the scale
    assert explain.on_scale(one)[2, 3] == 1.0 and explain.on_scale(one).sum() == 1.0
    assert explain.sharpness(one).entropy == 0.0 and explain.sharpness(one).peak == pytest.approx(64.0)
    sixteen = np.zeros((4, 4))
    sixteen[0, 0] = 3.0  # 16x on 16 keys: four octaves of five
    assert explain.on_scale(sixteen)[0, 0] == pytest.approx(0.8)


def test_scale_bars_are_numbers_inside_the_image():
    img = Image.new("RGB", (336, 336), (255, 255, 255))
    bar = np.asarray(explain.scale_bar(img))
    assert bar.shape == (336, 336, 3) and (bar[:, :300] == 255).mean() < 1  # labels left of the ramp
    ramp = bar[336 - 6 - 168:336 - 6, 336 - 12]  # the ramp's column, top to bottom
    assert np.allclose(ramp[-1], 127, atol=1) and ramp[0].sum() > 550  # 1x: the grey behind it untouched; 32x: bright
    assert (np.asarray(explain.colour_bar(img)) != 255).any()


# ---------------------------------------------------------------- compute(): ground truth and hygiene

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from probes import (  # noqa: E402
    CELLS,
    COL,
    ROW,
    ProbeCNN,
    TwoCellCNN,
    probe_image,
    probe_vit,
    two_cell_image,
    two_cell_timm_vit,
    two_cell_vit,
)


def argmax2d(heat: np.ndarray) -> tuple[int, int]:
    return tuple(int(i) for i in np.unravel_index(heat.argmax(), heat.shape))


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown explanation method .gradcam.; choose one of .*chefer.*lrp.*grad-cam"):
        explain.compute(probe_vit(), probe_image(), "gradcam")


@pytest.mark.parametrize("method", methods.ids())
@pytest.mark.parametrize("cls", [0, 1, 2])
def test_every_vit_method_finds_the_one_patch_the_class_token_reads(method, cls):
    h = explain.compute(probe_vit(), probe_image(cls, cls), method)
    assert h.heat.shape == (4, 4) and h.target == cls and h.method == method
    assert argmax2d(h.heat) == (ROW, COL)
    assert h.probs is not None and torch.allclose(h.probs.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("method", ["grad-cam", "occlusion", "rise"])
def test_cnn_methods_find_the_one_cell_the_head_reads(method):
    h = explain.compute(ProbeCNN(), probe_image(3, 1), method)
    assert h.heat.shape == (4, 4) and h.target == 1 and argmax2d(h.heat) == (ROW, COL)


def test_rise_runs_its_masks_in_batches_and_is_deterministic():
    """RISE: the intact image plus one masked copy per mask, at most 32 a pass; the same map twice."""
    model, x, sizes = probe_vit(), probe_image(2, 1), []

    def forward(batch):
        sizes.append(len(batch))
        with torch.inference_mode():
            return model(batch)
    a = explain.compute(model, x, "rise", forward_batch=forward)
    assert sum(sizes) == len(explain.rise_masks(16)) + 1 and max(sizes) <= 32  # the probe's 4 x 4 grid
    b = explain.compute(model, x, "rise", forward_batch=forward)
    assert np.array_equal(a.heat, b.heat) and a.target == b.target == 1


@pytest.mark.parametrize("cells", [1, 16, 49, 63])
def test_rise_masks_on_a_small_grid_are_an_orthogonal_design(cells):
    """Up to 63 cells: a two-level orthogonal design of the first power of two above the cell count
    (64 masks for the EfficientNet's 7 x 7), each cell kept in half the masks, each pair in a quarter."""
    kept = explain.rise_masks(cells)
    m = 1 << cells.bit_length()
    assert kept.shape == (m, cells) and m <= explain.maps.RISE_MASKS
    assert (kept.sum(0) == m // 2).all()
    together = kept.T.astype(int) @ kept.astype(int)  # (cells, cells): masks keeping both
    assert (together[~np.eye(cells, dtype=bool)] == m // 4).all()
    assert np.array_equal(kept, explain.rise_masks(cells))
    assert any(not np.array_equal(kept, explain.rise_masks(cells, seed=s)) for s in range(1, 6))


def test_rise_masks_on_a_large_grid_are_independent_draws():
    """From 64 cells on (the ViTs' 12 x 12 and 14 x 14 grids need 256) the design would exceed RISE_MASKS:
    RISE_MASKS random masks instead, the same as before the design existed (the ViTs' maps did not change)."""
    for cells in (64, 144, 196):  # 64: the first count whose design (128) would exceed RISE_MASKS
        kept = explain.rise_masks(cells)
        assert kept.shape == (explain.maps.RISE_MASKS, cells)
        assert np.array_equal(kept, np.random.default_rng(explain.maps.RISE_SEED).random(kept.shape) < 0.5)
    assert explain.rise_masks(49, keep=0.3).shape == (explain.maps.RISE_MASKS, 49)  # the design needs keep = 1/2


def test_chefer_relevance_only_where_attention_and_gradient_agree():
    """One block with one-hot class attention: R = I + relu(dA * A), so the class row is 0 off the patch."""
    h = explain.compute(probe_vit(), probe_image(1, 0), "chefer")
    off = np.delete(h.heat.ravel(), ROW * 4 + COL)
    assert h.heat[ROW, COL] > 0 and np.all(off == 0)


def test_explicit_target_is_explained_not_the_top_class():
    m, x = probe_vit(), probe_image(0, 0)
    for method in ("chefer", "grad-cam", "occlusion", "rise"):
        h = explain.compute(m, x, method, target=2)
        assert h.target == 2
    with pytest.raises(ValueError, match="target"):
        explain.compute(m, x, "chefer", target=3)


TWO_CELL_PROBES = {"scratch_vit": two_cell_vit, "timm_vit": two_cell_timm_vit, "effnet": TwoCellCNN}


@pytest.mark.parametrize("family", list(TWO_CELL_PROBES))
@pytest.mark.parametrize("lift", [(3.0, 2.0), (2.0, 3.0)], ids=["class 0 on top", "class 1 on top"])
def test_an_explicit_target_moves_the_map_to_the_cells_that_class_reads(family, lift):
    """Class 0 reads cell A only and class 1 cell B only (tests/probes.py, hand-set weights): for every
    method the registry says is targeted, target 0's map peaks on A and target 1's on B, whichever class
    is on top; a map that explains the top class instead, and echoes the target, fails one of the two.
    The untargeted maps (one map whatever the class) are the same for both."""
    model, x = TWO_CELL_PROBES[family](), two_cell_image(1, lift)
    probe = dataclasses.replace(families.get(family), lrp_rules=False)  # the CNN probe is no EfficientNet:
    offered = [m for m in methods.of(families.get(family)) if methods.get(m).applies_to(probe)]  # its LRP: below
    targeted = [m for m in offered if methods.get(m).targeted]
    assert targeted and all(methods.get(m).targeted for m in methods.of(families.get("effnet")))
    for method in offered:
        a, b = (explain.compute(model, x, method, target=t) for t in (0, 1))
        assert (a.target, b.target) == (0, 1), method
        if method in targeted:
            assert (argmax2d(a.heat), argmax2d(b.heat)) == CELLS, (family, method, lift)
        else:
            assert np.array_equal(a.heat, b.heat), (family, method)


def test_attention_maps_are_in_the_autograd_graph_when_asked():
    model = probe_vit()
    with torch.enable_grad():
        t = attention.trace(model, probe_image().requires_grad_(True))
        assert all(a.requires_grad for a in t.maps) and t.attn_inputs[-1].requires_grad
    assert torch.allclose(t.logits.detach(), model(probe_image()), atol=1e-5)


def test_trace_reproduces_the_model_forward():
    torch.manual_seed(0)
    model = build("scratch_vit", {"preset": "vit_foodvision_p8_96"}, num_classes=3).model.eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        t = attention.trace(model, x)
        assert torch.allclose(t.logits, model(x), atol=1e-5) and len(t.attn_inputs) == len(model.blocks)


def tiny_models():
    torch.manual_seed(0)
    out = [(probe_vit(), probe_image()), (ProbeCNN(), probe_image())]
    for family in ("timm_vit", "effnet"):
        model = build(family, TINY_ARCH[family], num_classes=3).model.eval()
        out.append((model, torch.randn(1, 3, 64, 64)))
    return out


def no_state_left(model: torch.nn.Module) -> bool:
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return (all(p.grad is None for p in model.parameters())
            and all(not getattr(m, h, None) for m in model.modules() for h in hooks))


def test_no_method_leaves_a_gradient_or_a_hook_even_from_inference_mode():
    for model, x in tiny_models():
        generic_cnn = dataclasses.replace(families.get("effnet"), lrp_rules=False)  # a CNN LRP has no rules for
        family_methods = (methods.ids() if hasattr(model, "patch_embed") else methods.of(families.get("effnet"))
                          if hasattr(model, "conv_stem") else [m for m in methods.ids()
                                                               if methods.get(m).applies_to(generic_cnn)])
        for method in family_methods:
            explain.compute(model, x, method)
            with torch.inference_mode():
                h = explain.compute(model, x, method)
            assert np.isfinite(h.heat).all(), (type(model).__name__, method)
            assert no_state_left(model), (type(model).__name__, method)


def test_concurrent_requests_get_the_same_maps_as_sequential_ones():
    model = probe_vit()
    jobs = [(method, probe_image(seed, seed % 3)) for method in methods.ids() for seed in range(4)]
    expected = [explain.compute(model, x, method).heat for method, x in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:  # the same method on four images at once
        got = list(pool.map(lambda job: explain.compute(model, job[1], job[0]).heat, jobs * 2))
    for a, b in zip(expected * 2, got):
        assert np.array_equal(a, b)


def chefer_reference(model, x, target):
    """Chefer et al. 2021 written from the paper (Eq. 5-6), step by step, for a model of any depth."""
    with torch.enable_grad():
        t = attention.trace(model, x.clone().requires_grad_(True))
        grads = torch.autograd.grad(t.logits[0, target], t.maps)
    n = t.maps[0].shape[-1]
    relevance = torch.eye(n)
    for a, g in zip(t.maps, grads):
        a_bar = (g[0] * a[0]).clamp(min=0).mean(0)  # Eq. 5
        relevance = relevance + a_bar @ relevance  # Eq. 6
    return relevance[0, 1:].reshape(attention.token_grid(model)).detach().numpy()


def test_chefer_matches_the_paper_on_a_three_block_vit():
    torch.manual_seed(1)
    model = vit_model.VisionTransformer(vit_model.preset("vit_test_p8_32", depth=3)).eval()
    x = torch.randn(1, 3, 32, 32)
    h = explain.compute(model, x, "chefer", target=1)
    assert np.allclose(h.heat, chefer_reference(model, x, 1), atol=1e-6, rtol=1e-4)


def test_cnn_grad_cam_is_the_papers_weighted_sum():
    """ProbeCNN: gradients are `gain` at one cell of the target channel, so the weights are gain / 16
    there and 0 elsewhere: Grad-CAM = ReLU(gain / 16 * that channel's pooled map)."""
    model, x = ProbeCNN(), probe_image(4, 2)
    h = explain.compute(model, x, "grad-cam")
    expected = torch.relu(model.gain.detach() / 16 * torch.nn.functional.avg_pool2d(x, 8)[0, 2])
    assert np.allclose(h.heat, expected.numpy(), atol=1e-6)


def test_occlusion_coarsens_a_14x14_grid_to_7x7_blocks_in_batches_of_at_most_32():
    torch.manual_seed(0)
    model = vit_model.VisionTransformer(vit_model.preset("vit_test_p8_32", image_size=112)).eval()
    sizes = []

    def forward(x):
        sizes.append(len(x))
        with torch.inference_mode():
            return model(x)
    h = explain.compute(model, torch.randn(1, 3, 112, 112), "occlusion", forward_batch=forward)
    assert h.heat.shape == (14, 14) and sum(sizes) == 1 + 49 and max(sizes) <= 32
    blocks = h.heat.reshape(7, 2, 7, 2)
    assert np.allclose(blocks, blocks[:, :1, :, :1])  # constant within each 2 x 2 block


def test_attention_method_picks_layer_and_head():
    model = vit_model.VisionTransformer(vit_model.preset("vit_test_p8_32")).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        _, maps = attention.attention_maps(model, x)
    h = explain.compute(model, x, "attention", layer=0, head=1)
    assert np.allclose(h.heat.ravel(), maps[0][0, 1, 0, 1:].numpy())


def test_gradient_methods_on_an_int8_model_say_what_to_do():
    import warnings

    from torch.ao.quantization import quantize_dynamic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(vit_model.VisionTransformer(vit_model.preset("vit_test_p8_32")).eval(),
                             {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(1, 3, 32, 32)
    for method in ("chefer", "grad-cam"):
        with pytest.raises(TypeError, match="float model"):
            explain.compute(q, x, method)
    assert explain.compute(q, x, "occlusion").heat.shape == (4, 4)  # forward-only methods still work


def test_every_family_offers_registered_methods_its_default_first():
    for n in families.names():
        offered = methods.of(families.get(n))
        assert set(offered) <= set(methods.ids()) and offered[0] == families.get(n).default_method, n
    assert methods.of(families.get("effnet")) == ("lrp", "occlusion", "rise", "grad-cam")  # no attention maps


def test_the_colour_bar_is_marked_without_words(monkeypatch):
    """+ over the bar's top, − under its bottom, drawn as lines: the overlay reads the same in any language."""
    from PIL import ImageDraw

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda *a, **k: pytest.fail("text drawn on the overlay"))
    out = np.asarray(explain.colour_bar(Image.new("RGB", (200, 200), (0, 0, 0))))
    top, bottom = 200 - 6 - 80, 200 - 6  # the bar's 40 % of the height, 6 px from the edge
    x = 200 - 10 - 6 - 9  # the marks' centre, left of the bar
    assert (out[top + 5, x - 3:x + 4] == 255).all() and (out[top + 2:top + 9, x] == 255).all()  # +
    assert (out[bottom - 6, x - 3:x + 4] == 255).all() and (out[bottom - 9, x] == 0).all()  # −
