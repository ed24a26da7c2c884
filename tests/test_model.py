import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from vit.models.scratch_vit import PRESETS, VisionTransformer, ViTConfig, preset


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("num_classes, expected", [(1000, 86_567_656), (3, 85_800_963)])
def test_vit_base_parameter_count(num_classes, expected):
    # torchvision / vit_jax ViT-B/16 (1000 classes) and the course's 3-class ViT-B/16
    with torch.device("meta"):
        model = VisionTransformer(preset("vit_base_patch16_224", num_classes=num_classes))
    assert n_params(model) == expected


@pytest.mark.parametrize("name, expected", [("vit_large_patch16_224", 304_326_632), ("vit_huge_patch16_224", 632_199_400)])
def test_table1_parameter_counts(name, expected):
    # timm's vit_large_patch16_224 / vit_huge_patch14_224-sized rows of Table 1 at patch 16
    with torch.device("meta"):
        model = VisionTransformer(preset(name))
    assert n_params(model) == expected


def tiny(**kw) -> ViTConfig:
    return preset("vit_test_p8_32", **kw)


@pytest.mark.parametrize("distilled", [False, True])
def test_fused_and_explicit_attention_agree(distilled):
    torch.manual_seed(0)
    model = VisionTransformer(tiny(distilled=distilled)).eval()
    x = torch.randn(4, 3, 32, 32)
    fast = model(x)
    slow, maps = model.forward_with_attention(x)
    assert torch.allclose(fast, slow, atol=1e-5)
    n = 16 + model.cfg.num_prefix_tokens
    assert len(maps) == model.cfg.depth
    for m in maps:
        assert m.shape == (4, model.cfg.num_heads, n, n)
        assert torch.allclose(m.sum(-1), torch.ones(4, model.cfg.num_heads, n), atol=1e-5)
        assert (m >= 0).all()


def test_the_explicit_attention_switch_skips_the_fused_kernel_and_keeps_outputs_and_gradients(monkeypatch):
    """vit.train on a CPU turns `fused_attn` off (timm's switch, found on our ViT and timm's alike): the
    explicit softmax then runs with the same outputs and gradients, no weights are returned unasked, and
    the fused kernel is not called."""
    from timm.models.vision_transformer import Attention as TimmAttention

    from vit.train import loop

    torch.manual_seed(0)
    model = VisionTransformer(tiny(distilled=True)).train()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    fused = sum(head.sum() for head in model(x))  # training: both heads
    fused.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    assert loop.explicit_attention(model) == model.cfg.depth
    calls = []
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1))
    torch.manual_seed(1)
    explicit = sum(head.sum() for head in model(x))
    explicit.backward()
    assert not calls and torch.allclose(fused, explicit, atol=1e-5)
    assert all(torch.allclose(grads[n], p.grad, atol=1e-5) for n, p in model.named_parameters())
    assert model.blocks[0].attn(torch.randn(2, 5, model.cfg.embed_dim))[1] is None
    timm_attention = TimmAttention(48, num_heads=3)
    assert loop.explicit_attention(timm_attention) == 1 and timm_attention.fused_attn is False


def test_attention_scale_is_head_dim():
    model = VisionTransformer(tiny(embed_dim=48, num_heads=3))
    assert model.blocks[0].attn.scale == pytest.approx(16 ** -0.5)


@pytest.mark.parametrize("distilled", [False, True])
def test_every_parameter_gets_a_gradient(distilled):
    torch.manual_seed(0)
    model = VisionTransformer(tiny(distilled=distilled, dropout=0.1, drop_path=0.1)).train()
    out = model(torch.randn(2, 3, 32, 32))
    logits = sum(out) if isinstance(out, tuple) else out
    assert torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_distilled_model_returns_both_heads_while_training_and_their_mean_in_eval():
    torch.manual_seed(0)
    model = VisionTransformer(tiny(distilled=True))
    x = torch.randn(2, 3, 32, 32)
    cls_logits, dist_logits = model.train()(x)
    assert cls_logits.shape == dist_logits.shape == (2, 3)
    model.eval()
    tokens, _ = model.forward_features(x)
    expected = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_wrong_image_size_is_a_clear_value_error():
    model = VisionTransformer(tiny())
    with pytest.raises(ValueError, match="built for 32x32"):
        model(torch.randn(1, 3, 64, 64))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        ViTConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("vit_nope")


@pytest.mark.parametrize("cfg", [tiny(), tiny(embed_dim=48, num_heads=3, depth=3, image_size=48, patch_size=16)])
def test_timm_weights_load_one_to_one_and_give_the_same_logits(cfg):
    torch.manual_seed(0)
    reference = TimmViT(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                        depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                        num_classes=cfg.num_classes).eval()
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_foodvision_preset_is_the_trained_shape():
    cfg = PRESETS["vit_foodvision_p8_96"]
    assert (cfg.image_size, cfg.patch_size, cfg.grid_size, cfg.num_classes) == (96, 8, 12, 3)
    assert cfg.distilled


PRESET_PARAMS = {  # every preset, at its own num_classes (issue 9): a changed layer changes a count
    "vit_base_patch16_224": 86_567_656, "vit_large_patch16_224": 304_326_632, "vit_huge_patch16_224": 632_199_400,
    "vit_foodvision_p8_96": 2_736_198, "vit_cifar10_p4_32": 2_098_762, "vit_test_p8_32": 32_323,
}


def test_every_preset_has_its_pinned_parameter_count():
    assert set(PRESET_PARAMS) == set(PRESETS)  # a new preset needs its count here
    for name, expected in PRESET_PARAMS.items():
        with torch.device("meta"):
            model = VisionTransformer(PRESETS[name])
        assert n_params(model) == expected, name


def test_cifar10_preset_is_the_tutorial_vit():
    # 4 px patches on 32 px: 64 tokens (+ class token), width 192, depth 6, MLP 512, no qkv bias,
    # classifier LayerNorm + Linear. 2,098,762 = patch conv 9,408 + class token 192 + position 12,480
    # + 6 blocks x 345,728 + norm 384 + head 1,930.
    cfg = PRESETS["vit_cifar10_p4_32"]
    assert (cfg.grid_size**2, cfg.embed_dim, cfg.depth, cfg.mlp_hidden, cfg.num_classes) == (64, 192, 6, 512, 10)
    model = VisionTransformer(cfg)
    assert model.blocks[0].attn.qkv.bias is None and model.head_dist is None
    assert model.blocks[0].mlp.fc1.out_features == 512
    assert n_params(model) == 2_098_762
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
