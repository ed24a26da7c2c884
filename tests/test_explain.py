import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_ARCH
from vit import explain
from vit.zoo import build


def test_timm_attention_path_reproduces_timms_own_forward():
    torch.manual_seed(0)
    for arch in (TINY_ARCH["timm_vit"], {"model_name": "vit_tiny_patch16_224", "depth": 2}):
        model = build("timm_vit", arch, num_classes=3).model.eval()
        size = arch.get("img_size", 224)
        x = torch.randn(2, 3, size, size)
        with torch.inference_mode():
            logits, maps = explain.attention_maps(model, x)
            assert torch.allclose(logits, model(x), atol=1e-5)  # timm's forward uses fused attention
        n = int(np.prod(explain.token_grid(model))) + 1
        assert len(maps) == len(model.blocks) and maps[0].shape == (2, model.blocks[0].attn.num_heads, n, n)
        assert torch.allclose(maps[-1].sum(-1), torch.ones(2, maps[-1].shape[1], n), atol=1e-5)


def test_cnn_has_no_attention_maps():
    model = build("effnet", TINY_ARCH["effnet"], num_classes=3).model
    with pytest.raises(TypeError, match="no attention maps"):
        explain.attention_maps(model, torch.randn(1, 3, 32, 32))


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
