"""References that say whether a figure is good: timm on our weights, the Lite0 under the hybrid."""
from __future__ import annotations

import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

from vit.bench.figures import input_px
from vit.bench.flops import count_flops
from vit.bench.timing import Case, ratio, time_interleaved
from vit.models.checkpoint import Checkpoint, num_params
from vit.models.zoo import HYBRID, LITE0, build_timm_cnn

TIMM_BAR, ATTENTION_BAR = 1.05, 1.5


def timm_reference(model: nn.Module) -> nn.Module:
    """timm's VisionTransformer (VisionTransformerDistilled for a DeiT config) with our model's config
    and weights: our parameter names are timm's, so the state dict loads strictly."""
    c = model.cfg
    cls = VisionTransformerDistilled if c.distilled else TimmViT
    ref = cls(img_size=c.image_size, patch_size=c.patch_size, in_chans=c.in_chans, num_classes=c.num_classes,
              embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
              qkv_bias=c.qkv_bias, pos_drop_rate=c.dropout, proj_drop_rate=c.dropout,
              attn_drop_rate=c.attn_dropout, drop_path_rate=c.drop_path)
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref.eval()


def has_timm_twin(ckpt: Checkpoint) -> bool:
    """Our ViT (a ViTConfig on the model): timm's VisionTransformer can hold the same weights."""
    return hasattr(ckpt.model, "cfg") and hasattr(ckpt.model, "blocks")


def is_hybrid(ckpt: Checkpoint) -> bool:
    """timm's ViT over the Lite0 stem: the plain Lite0 is its reference."""
    return ckpt.meta["arch"].get("model_name") == HYBRID


def scratch_vs_timm(ckpt: Checkpoint, runs: int, warmup: int) -> dict:
    """(a) Our fast path against timm's on the same weights: do the logits match, and at what cost?"""
    model, size = ckpt.model, input_px(ckpt)
    ref = timm_reference(model)
    x = torch.randn(4, 3, size, size)
    with torch.inference_mode():
        ours, theirs = model(x), ref(x)
    t = time_interleaved({"ours": Case(model, x[:1]), "timm": Case(ref, x[:1])}, runs, warmup)
    r = ratio(t["ours"], t["timm"])
    return {"timm_class": f"{type(ref).__module__}.{type(ref).__name__}",
            "logits_allclose": bool(torch.allclose(ours, theirs, atol=1e-5)),
            "max_abs_diff": float((ours - theirs).abs().max()), "ours_ms": t["ours"], "timm_ms": t["timm"],
            "ratio": r, "bar": TIMM_BAR, "within_bar": r["p50"] <= TIMM_BAR}


def hybrid_vs_lite0(ckpt: Checkpoint, runs: int, warmup: int) -> dict:
    """(c) The hybrid ViT against the plain 3-class EfficientNet-Lite0 it borrows its stem from,
    at the hybrid's input size; the stem alone shows what the transformer adds."""
    model, size = ckpt.model, input_px(ckpt)
    n = len(ckpt.class_names)
    lite0 = build_timm_cnn({"model_name": LITE0, "num_classes": n}, n, None).model.eval()
    stem = model.patch_embed.backbone
    x = torch.randn(1, 3, size, size)
    t = time_interleaved({"hybrid": Case(model, x), "lite0": Case(lite0, x), "stem": Case(stem, x)}, runs, warmup)
    return {"reference": f"timm {LITE0}, {len(ckpt.class_names)} classes", "input_px": size,
            "hybrid_ms": t["hybrid"], "lite0_ms": t["lite0"], "stem_ms": t["stem"],
            "hybrid_gflops": count_flops(model, x) / 1e9, "lite0_gflops": count_flops(lite0, x) / 1e9,
            "hybrid_params": num_params(model), "lite0_params": num_params(lite0),
            "ratio": ratio(t["hybrid"], t["lite0"]), "stem_share": ratio(t["stem"], t["hybrid"])}
