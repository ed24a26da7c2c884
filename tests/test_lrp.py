"""Conservative LRP (vit/explain/lrp.py): conservation, the forward it rewrites, and per-request hygiene."""
import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH

from vit import explain
from vit.explain import methods
from vit.explain.lrp import token_relevance
from vit.models import families
from vit.models import scratch_vit as vit_model
from vit.models.factory import build


def bias_free(model: torch.nn.Module) -> torch.nn.Module:
    """Every bias (Linear, conv and LayerNorm) set to 0: the rules-built-in network is then linear in its tokens."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model


def tiny_scratch(**overrides) -> vit_model.VisionTransformer:
    torch.manual_seed(0)
    model = vit_model.VisionTransformer(vit_model.preset("vit_test_p8_32", **overrides)).eval()
    with torch.no_grad():  # LayerNorm weights away from 1 and larger weights: the rules then matter more
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name else 0.1))
    return model


def tiny_timm() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("timm_vit", TINY_ARCH["timm_vit"], num_classes=3).model.eval()


@pytest.mark.parametrize("distilled", [False, True])
def test_relevance_sums_to_the_logit_without_biases(distilled):
    """Ali et al. 2022: with the attention weights and LayerNorm scales constant (and GELU by the identity
    rule) a bias-free network is linear in its tokens, so gradient x input sums to the logit exactly."""
    model = bias_free(tiny_scratch(depth=3, distilled=distilled)).double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for target in range(3):
        r = token_relevance(model, x, target)
        logit = float(r.logits[0, target])
        assert abs(float(r.tokens.sum()) - logit) <= 1e-10 * max(1.0, abs(logit)), (target, r.conservation_gap())


def test_relevance_sums_to_the_logit_on_a_bias_free_timm_vit():
    model = bias_free(tiny_timm()).double()
    r = token_relevance(model, torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert abs(r.conservation_gap()) < 1e-9


def test_biases_keep_the_difference():
    """With biases the sum is not the logit (the biases absorb relevance), the gap says by how much."""
    model = tiny_scratch(depth=3).double()
    r = token_relevance(model, torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert abs(r.conservation_gap()) > 1e-6


def test_attnlrp_rule_is_not_conservative_through_the_softmax():
    """AttnLRP lets relevance through the softmax, whose rule (Eq. 13) absorbs some: not the CP sum."""
    model = bias_free(tiny_scratch(depth=3)).double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    cp, attn = token_relevance(model, x, rule="cp"), token_relevance(model, x, rule="attnlrp")
    assert torch.equal(cp.logits, attn.logits) and not torch.allclose(cp.tokens, attn.tokens)
    with pytest.raises(ValueError, match="rule"):
        token_relevance(model, x, rule="gamma")


@pytest.mark.parametrize("make, size", [(tiny_scratch, 32), (tiny_timm, 64)])
def test_the_rules_leave_the_forward_pass_unchanged(make, size):
    model = make()
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        expected = model(x)
    assert torch.allclose(token_relevance(model, x).logits, expected, atol=1e-5)


@pytest.mark.parametrize("make, size, grid", [(tiny_scratch, 32, (4, 4)), (tiny_timm, 64, (4, 4))])
def test_lrp_map_is_the_token_grid_and_finite(make, size, grid):
    h = explain.compute(make(), torch.randn(1, 3, size, size), "lrp", target=2)
    assert h.heat.shape == grid and h.heat.dtype == np.float32 and np.isfinite(h.heat).all()
    assert h.method == "lrp" and h.target == 2 and torch.allclose(h.probs.sum(), torch.tensor(1.0))
    assert np.abs(h.heat).max() > 0


def test_lrp_is_offered_where_every_layer_has_a_rule():
    """Both ViTs (token rules, vit/explain/lrp.py) and the EfficientNet (its family declares CNN rules,
    vit/explain/lrp_cnn.py); not a CNN family without them, and a CNN LRP has no rules for is refused clearly."""
    offered = {n: methods.of(families.get(n)) for n in families.names()}
    assert all("lrp" in offered[n] for n in ("scratch_vit", "timm_vit", "effnet"))
    assert not methods.get("lrp").applies_to(dataclasses.replace(families.get("effnet"), lrp_rules=False))
    cnn = build("effnet", TINY_ARCH["effnet"], num_classes=3).model.eval()
    assert explain.compute(cnn, torch.randn(1, 3, 64, 64), "lrp").heat.shape == (2, 2)
    resnet = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()
    with pytest.raises(TypeError, match="no conv_stem"):
        explain.compute(resnet, torch.randn(1, 3, 32, 32), "lrp")


def test_lrp_refuses_an_int8_model_with_a_clear_message():
    model = torch.ao.quantization.quantize_dynamic(tiny_scratch(), {torch.nn.Linear}, dtype=torch.qint8)
    with pytest.raises(TypeError, match="needs gradients"):
        explain.compute(model, torch.randn(1, 3, 32, 32), "lrp")


def test_concurrent_lrp_requests_get_the_sequential_maps_and_leave_no_gradient():
    model = tiny_scratch(depth=3)
    images = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    jobs = [(x, t) for x in images for t in (None, 0, 1)]
    expected = [explain.compute(model, x, "lrp", target=t).heat for x, t in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda job: explain.compute(model, job[0], "lrp", target=job[1]).heat, jobs * 2))
    for a, b in zip(expected * 2, got):
        assert np.array_equal(a, b)
    assert all(p.grad is None for p in model.parameters())
