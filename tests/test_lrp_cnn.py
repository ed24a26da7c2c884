"""vit/explain/lrp_cnn.py: the folded forward is the model's, relevance is conserved where LRP says it is,
and the rules agree with zennit's (Anders et al. 2021, the reference implementation; a test requirement) on a
small timm EfficientNet and on our checkpoint."""
from __future__ import annotations

import copy
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet
from torch import nn

from vit.explain import lrp_cnn as L
from vit.models.factory import load

CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "effnet.safetensors"
ZENNIT_NAMES = {  # our composite -> a function of zennit building the same one
    "epsilon": lambda z: z.composites.LayerMapComposite(z.composites.layer_map_base() + [
        (z.types.Convolution, z.rules.Epsilon()), (nn.Linear, z.rules.Epsilon())]),
    "epsilon-plus": lambda z: z.composites.EpsilonPlus(),
    "epsilon-plus-flat": lambda z: z.composites.EpsilonPlusFlat(),
    "epsilon-plus-box": lambda z: z.composites.SpecialFirstLayerMapComposite(
        z.composites.layer_map_base() + [(z.types.Convolution, z.rules.ZPlus()), (nn.Linear, z.rules.Epsilon())],
        [(z.types.Convolution, z.rules.ZBox(low=-1.0, high=1.0))]),
    "epsilon-gamma-box": lambda z: z.composites.EpsilonGammaBox(low=-1.0, high=1.0),
    "epsilon-alpha2beta1": lambda z: z.composites.EpsilonAlpha2Beta1(),
    "epsilon-alpha2beta1-flat": lambda z: z.composites.EpsilonAlpha2Beta1Flat(),
}


def tiny_effnet(act: type[nn.Module] = nn.ReLU6, seed: int = 0, bias_free: bool = False) -> nn.Module:
    """A small timm EfficientNet-Lite-like CNN (TF 'same' padding: Conv2dSame at stride 2; a depthwise
    separable block with a skip, inverted residuals with and without one), its BatchNorms given random
    statistics so folding them matters. `bias_free`: every folded bias 0 (BN mean 0, beta 0, Linear bias 0)."""
    torch.manual_seed(seed)
    arch = [["ds_r1_k3_s1_e1_c8"], ["ir_r2_k3_s2_e3_c8"], ["ir_r1_k5_s2_e3_c16"]]
    model = EfficientNet(decode_arch_def(arch), num_classes=3, num_features=24, stem_size=8, fix_stem=True,
                         pad_type="same", act_layer=act, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0 if bias_free else torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(0 if bias_free else torch.randn(m.num_features, generator=g) * 0.3)
            if isinstance(m, nn.Linear) and bias_free:
                m.bias.zero_()
    return model.eval()


def image(size: int = 32, seed: int = 1) -> torch.Tensor:
    """A normalised image in [-1, 1] (the box rule's bounds)."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def effnet() -> nn.Module:
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} missing")
    return load(CKPT).model.eval()


# --- folding and the re-written forward ----------------------------------------------------------------------

def folded_copy(model: nn.Module) -> nn.Module:
    """A copy of a timm EfficientNet with every BatchNorm folded into its conv (`L.fold`) and the BN left
    exactly the identity (var = 1 - eps, so 1 / sqrt(var + eps) = 1; zennit's merge sets var = 1, which
    leaves a factor 1 / sqrt(1 + eps) per layer)."""
    model = copy.deepcopy(model)
    pairs = [(model.conv_stem, model.bn1), (model.conv_head, model.bn2)]
    pairs += [p for stage in model.blocks for block in stage for p in L.block_layers(block)]
    with torch.no_grad():
        for conv, bn in pairs:
            w, b = L.fold(conv, bn)
            conv.weight.copy_(w)
            conv.bias = nn.Parameter(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1 - bn.eps)
            bn.weight.fill_(1)
            bn.bias.zero_()
    return model


def test_fold_keeps_logits(effnet: nn.Module) -> None:
    x = image(224)
    with torch.no_grad():
        assert (folded_copy(effnet)(x) - effnet(x)).abs().max() < 1e-4


@pytest.mark.slow  # the checkpoint at 224 px, many passes
@pytest.mark.parametrize("composite", list(L.COMPOSITES))
def test_rewritten_forward_gives_the_logits(effnet: nn.Module, composite: str) -> None:
    x = image(224)
    with torch.no_grad():
        y = effnet(x)
    for layer in (None, L.DEFAULT_LAYER):
        r = L.cnn_relevance(effnet, x, composite=composite, layer=layer)
        assert (r.logits - y).abs().max() < 1e-4
    assert r.target == int(y.argmax())


def test_no_state_left_on_the_model(effnet: nn.Module) -> None:
    before = {k: v.clone() for k, v in effnet.state_dict().items()}
    L.cnn_relevance(effnet, image(224), composite="epsilon-gamma-box")
    assert all(p.grad is None for p in effnet.parameters())
    assert all(torch.equal(before[k], v) for k, v in effnet.state_dict().items())
    assert not any(m._forward_hooks or m._backward_hooks for m in effnet.modules())


def test_kept_folds_follow_the_weights() -> None:
    """`L.folded` keeps each layer's fold across calls; after an in-place change of the weights, the running
    statistics or a loaded state dict, the relevance is that of a fresh copy (whose layers have no kept fold)."""
    net, x = tiny_effnet(), image()
    first = L.cnn_relevance(net, x, composite="epsilon-gamma-box", layer=None).values
    assert L.folded(net.conv_head, net.bn2) is L.folded(net.conv_head, net.bn2)  # kept, not formed again
    with torch.no_grad():
        net.blocks[1][0].conv_pw.weight.mul_(-0.5)
        net.bn2.running_mean.add_(0.2)
    changed = L.cnn_relevance(net, x, composite="epsilon-gamma-box", layer=None).values
    assert not torch.allclose(changed, first)
    assert torch.allclose(changed, L.cnn_relevance(copy.deepcopy(net), x, composite="epsilon-gamma-box",
                                                   layer=None).values)
    L.cnn_relevance(net, x, layer=2)  # the plain forward below stage 2 keeps its folds too
    net.load_state_dict(tiny_effnet(seed=3).state_dict())
    reloaded, fresh = (L.cnn_relevance(m, x, layer=2).values for m in (net, tiny_effnet(seed=3)))
    assert torch.allclose(reloaded, fresh)


def test_prepare_forms_every_fold_before_the_first_map(monkeypatch) -> None:
    """After `L.prepare` (Predictor.warm calls it), no map forms a fold: every layer's is kept already."""
    net = tiny_effnet(seed=5)
    L.prepare(net)

    def no_fold(*args):
        raise AssertionError("a fold formed during a map")
    monkeypatch.setattr(L, "fold", no_fold)
    for layer in (None, 1, 3):
        L.cnn_relevance(net, image(), layer=layer)


@pytest.mark.slow  # the checkpoint at 224 px, many passes
# --- conservation ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("composite", ["epsilon", "epsilon-plus"])
def test_without_bias_absorption_the_top_conserves_the_logit(effnet: nn.Module, composite: str) -> None:
    """LRP-0 / z+ with no bias share (den leaves the bias out): conv_head (1 x 1, 320 inputs), the pool and the
    classifier pass on exactly what they receive, so the relevance entering conv_head sums to the logit."""
    r = L.cnn_relevance(effnet, image(224), composite=L.variant(composite, absorb=False, epsilon=1e-9), layer=7)
    assert abs(r.conservation_gap()) < 1e-4, r.conservation_gap()


@pytest.mark.slow  # the checkpoint at 224 px, many passes
def test_zplus_loses_the_units_it_cannot_explain(effnet: nn.Module) -> None:
    """Below conv_head, z+ without bias absorption conserves except at units with no positive contribution
    (den = 0): in our checkpoint 690 of the 8,960 depthwise channels have no positive folded weight (277 of
    1,152 in the last stage), and those units' relevance is dropped, never made: |total| <= |logit|, same sign."""
    x = image(224)
    for layer in (None, 2, 5):
        r = L.cnn_relevance(effnet, x, composite=L.variant("epsilon-plus", absorb=False), layer=layer)
        logit, total = float(r.logits[0, r.target]), float(r.values.sum())
        assert total * logit > 0 and abs(total) <= abs(logit) * (1 + 1e-4)


@pytest.mark.slow  # the checkpoint at 224 px, many passes
def test_biases_absorb_relevance(effnet: nn.Module) -> None:
    """With the biases as neurons (the default) the total keeps the logit's sign and falls short of it by
    their share."""
    r = L.cnn_relevance(effnet, image(224), composite="epsilon-plus", layer=None)
    logit, total = float(r.logits[0, r.target]), float(r.values.sum())
    assert total * logit > 0 and abs(total) < abs(logit)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon-gamma-box", L.Composite(first="flat", lower="gamma"),
                                       L.Composite(first="wsquare", lower="gamma", upper="epsilon", split=2)])
@pytest.mark.parametrize("layer", [None, 1, 3])
def test_bias_free_network_conserves_exactly(composite: str | L.Composite, layer: int | None) -> None:
    """No bias anywhere (after folding): LRP-eps (eps -> 0), gamma and the pixel rules conserve at every layer:
    the relevance sums to the logit (Montavon et al. 2019 Sec. 10.1). Gamma's den, z + gamma z^(own sign), has
    z's sign, so every unit with relevance passes all of it down."""
    model = tiny_effnet(bias_free=True)
    r = L.cnn_relevance(model, image(), composite=replace(L.composite_of(composite), epsilon=1e-9), layer=layer)
    assert abs(r.conservation_gap()) < 1e-5, r.conservation_gap()


@pytest.mark.parametrize("composite", ["epsilon-plus", "epsilon-plus-box", "epsilon-plus-flat"])
def test_zplus_drops_but_never_makes_relevance(composite: str) -> None:
    """z+ explains a unit by its positive contributions only: a unit with none (a linear bottleneck's unit
    with z < 0 from negative contributions alone, a depthwise kernel with no positive weight) cannot pass its
    relevance on. So even bias-free it keeps the logit's sign and loses some (here 0.6-5 %), never more."""
    model = tiny_effnet(bias_free=True)
    r = L.cnn_relevance(model, image(), composite=L.variant(composite, epsilon=1e-9), layer=None)
    logit, total = float(r.logits[0, r.target]), float(r.values.sum())
    assert total * logit > 0 and abs(total) <= abs(logit) * (1 + 1e-5)


def test_each_target_gets_its_own_relevance() -> None:
    """Bias-free, the relevance sums to the logit of the class asked for, whichever it is: a map that explained
    the top class whatever the target would sum to the top logit every time."""
    model = tiny_effnet(bias_free=True)
    x = image()
    c = L.variant(L.DEFAULT_COMPOSITE, epsilon=1e-9)
    with torch.no_grad():
        logits = model(x)[0]
    maps = []
    for t in range(3):
        r = L.cnn_relevance(model, x, t, composite=c, layer=None)
        assert r.target == t and float(r.values.sum()) == pytest.approx(float(logits[t]), rel=1e-4, abs=1e-5)
        maps.append(r.values)
    assert not torch.allclose(maps[0], maps[1])


def test_alpha_beta_is_not_conservative() -> None:
    """alpha2-beta1 (2 x positive share - 1 x negative share) conserves only where a unit has contributions of
    both signs; ReLU6 units after BN often have none of one sign, and relevance is made: noted, as zennit."""
    model = tiny_effnet(bias_free=True)
    r = L.cnn_relevance(model, image(), composite=L.variant("epsilon-alpha2beta1", epsilon=1e-9), layer=None)
    assert abs(r.conservation_gap()) > 0.1


def test_lrp0_is_gradient_times_input_for_relu() -> None:
    """With ReLU (no saturation) and eps -> 0, the epsilon composite is gradient x input of the network
    (Montavon et al. 2019 Sec. 10.1; Ancona et al. 2018); the biases take their share in both."""
    model = tiny_effnet(act=nn.ReLU)
    x = image().requires_grad_(True)
    y = model(x)
    c = int(y.argmax())
    (g,) = torch.autograd.grad(y[0, c], x)
    r = L.cnn_relevance(model, x.detach(), c, composite=L.variant("epsilon", epsilon=1e-12), layer=None)
    torch.testing.assert_close(r.values, (x * g).detach()[0], atol=1e-6, rtol=1e-4)


def test_relu6_saturation_passes_relevance() -> None:
    """ReLU6 under the identity rule: a saturated unit (h > 6, gradient 0) still passes its relevance, so
    the bias-free network conserves though its gradient x input does not."""
    model = tiny_effnet(bias_free=True)
    x = image() * 40  # large enough to saturate
    r = L.cnn_relevance(model, x, composite=L.variant("epsilon", epsilon=1e-9, first="epsilon"), layer=None)
    assert abs(r.conservation_gap()) < 1e-4
    xx = x.clone().requires_grad_(True)
    y = model(xx)
    (g,) = torch.autograd.grad(y[0, r.target], xx)
    logit = float(y.detach()[0, r.target])
    assert abs(float((xx * g).detach().sum()) - logit) > 1e-3 * abs(logit)


# --- against zennit --------------------------------------------------------------------------------------------

class ZennitReference(nn.Module):
    """A timm EfficientNet as zennit needs it: BatchNorm folded into each conv (which keeps its class, so
    Conv2dSame still pads itself), ReLU6 as leaf modules (zennit's Pass), each residual addition a zennit
    `Sum` module (Norm rule, as zennit's ResNet canonizer), the stem registered first (the first layer)."""

    def __init__(self, model: nn.Module) -> None:
        from zennit.layer import Sum

        super().__init__()
        self.stem = self._fold(model.conv_stem, model.bn1)
        self.plan: list[tuple[list[str], bool]] = []
        k = 0
        for block in (b for stage in model.blocks for b in stage):
            names = []
            pairs = L.block_layers(block)
            for conv, bn in pairs:
                self.add_module(f"c{k}", self._fold(conv, bn))
                names.append(f"c{k}")
                k += 1
            if block.has_skip:
                self.add_module(f"sum{k}", Sum())
                names.append(f"sum{k}")
            self.plan.append((names, block.has_skip))
        self.head = self._fold(model.conv_head, model.bn2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = copy.deepcopy(model.classifier)

    @staticmethod
    def _fold(conv: nn.Module, bn: nn.Module) -> nn.Sequential:
        conv = copy.deepcopy(conv)
        w, b = L.fold(conv, bn)
        conv.weight, conv.bias = nn.Parameter(w.clone()), nn.Parameter(b.clone())
        act = getattr(bn, "act", nn.Identity())
        return nn.Sequential(conv, type(act)()) if not isinstance(act, nn.Identity) else nn.Sequential(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for names, skip in self.plan:
            h = x
            for n in names[:-1] if skip else names:
                h = getattr(self, n)(h)
            x = getattr(self, names[-1])(torch.stack([h, x], dim=-1)) if skip else h
        return self.classifier(self.flatten(self.pool(self.head(x))))


def zennit_relevance(model: nn.Module, x: torch.Tensor, composite: str) -> tuple[torch.Tensor, int]:
    pytest.importorskip("zennit")
    import zennit
    import zennit.attribution
    import zennit.composites
    import zennit.rules
    import zennit.types

    ref = ZennitReference(model).eval()
    with torch.no_grad():
        y = ref(x)
    c = int(y.argmax())
    with zennit.attribution.Gradient(model=ref, composite=ZENNIT_NAMES[composite](zennit)) as attributor:
        _, rel = attributor(x, torch.eye(y.shape[-1])[[c]] * y[0, c])  # start from R = logit at the target
    return rel[0], c


@pytest.mark.parametrize("composite", list(ZENNIT_NAMES))
def test_agrees_with_zennit_on_a_small_effnet(composite: str) -> None:
    model = tiny_effnet()
    x = image()
    ref, c = zennit_relevance(model, x, composite)
    r = L.cnn_relevance(model, x, composite=composite, layer=None)
    assert r.target == c
    scale = float(ref.abs().max())
    torch.testing.assert_close(r.values, ref, atol=1e-4 * scale, rtol=1e-3)


@pytest.mark.slow  # the checkpoint at 224 px, many passes
@pytest.mark.parametrize("composite", ["epsilon-plus", "epsilon-gamma-box"])
def test_agrees_with_zennit_on_our_effnet(effnet: nn.Module, composite: str) -> None:
    x = image(224)
    ref, c = zennit_relevance(effnet, x, composite)
    r = L.cnn_relevance(effnet, x, c, composite=composite, layer=None)
    scale = float(ref.abs().max())
    torch.testing.assert_close(r.values, ref, atol=1e-3 * scale, rtol=1e-2)
    assert abs(float(r.values.sum()) - float(ref.sum())) <= 1e-3 * float(ref.abs().sum())


def test_zennit_alone_does_not_fit_timm(effnet: nn.Module) -> None:
    """Why the rules are written out: zennit's BatchNorm merge looks for a BatchNorm leaf right after a conv
    leaf, and timm's BatchNormAct2d (a BatchNorm2d with the activation as a child) is no leaf, so nothing is
    folded; its residual additions are no modules, so relevance is copied into both branches."""
    pytest.importorskip("zennit")
    from zennit.canonizers import SequentialMergeBatchNorm

    assert SequentialMergeBatchNorm().apply(copy.deepcopy(effnet)) == []


# --- the map --------------------------------------------------------------------------------------------------

def test_default_map(effnet: nn.Module) -> None:
    """The map: gamma 0.1 from stage 5 up, relevance of stage 5's input (14 x 14) summed into the 7 x 7 grid."""
    from vit.explain.maps import model_grid

    x = image(224)
    r = L.cnn_relevance(effnet, x)
    assert (r.layer, tuple(r.values.shape)) == (5, (112, 14, 14))
    heat = L.pool_to_grid(r.spatial, *model_grid(effnet, x))
    assert heat.shape == (7, 7) and heat.sum() == pytest.approx(float(r.values.sum()), rel=1e-4)
    assert r.target == int(r.logits.argmax())
    again = L.cnn_relevance(effnet, x)
    assert torch.equal(r.values, again.values)  # deterministic


def test_pool_to_grid_sums_cells() -> None:
    m = torch.arange(16.0).reshape(4, 4)
    g = L.pool_to_grid(m, 2, 2)
    assert g.tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    assert g.sum() == m.sum()


def test_unsupported_models_are_refused() -> None:
    se = EfficientNet(decode_arch_def([["ir_r1_k3_s1_e2_c8_se0.25"]]), num_classes=3, num_features=16,
                      stem_size=8, act_layer=nn.ReLU6).eval()
    with pytest.raises(TypeError, match="se"):
        L.cnn_relevance(se, image(), composite="epsilon-plus", layer=None)
    with pytest.raises(TypeError, match="no conv_stem"):
        L.cnn_relevance(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval(), image())
    with pytest.raises(ValueError, match="unknown LRP composite"):
        L.cnn_relevance(tiny_effnet(), image(), composite="nope")
