"""Layer-wise relevance propagation (LRP) for timm's EfficientNet / MobileNet CNNs (our EfficientNet-Lite0:
ReLU6, BatchNorm, depthwise separable convolutions, no squeeze-excitation), in one forward and one backward pass.

As vit/explain/lrp.py does for the ViTs, relevance is gradient x input on a forward pass re-written with the
propagation rules built in: no hooks, no patched module, nothing stored on the model. The rules are those of
Montavon et al. 2019 ("Layer-Wise Relevance Propagation: An Overview", Sec. 10.2, Eqs. 1-5 and 8), in the
sign-aware forms of zennit (Anders et al. 2021) for layers whose input can be negative:

- BatchNorm is folded into the convolution before it (`fold`): conv + BN is one affine map, so a rule sees
  one layer with weights w and bias b (Montavon et al. 2019 Sec. 10.2's "canonization").
- Element-wise activations (ReLU6): the identity rule: relevance passes unchanged from act(h) to h, as in
  LRP, where a neuron's relevance is its activation's (Montavon et al. 2019 Eq. 2 reads R_k at a_k).
- A layer z_k = sum_j a_j w_jk + b_k with rule rho redistributes R_k to its inputs as
      R_j = sum_k a_j rho(w_jk) / (eps + sum_j a_j rho(w_jk) [+ rho(b_k)]) * R_k                 (Eq. 8)
  written here as out = z + (den - den.detach()) * (z / den).detach(), den = sum_j a_j rho(w_jk) [+ rho(b_k)]:
  the forward value is exactly z, and gradient x input at a is Eq. 8. Rules: "epsilon" (LRP-eps, Eq. 4;
  eps -> 0 is LRP-0, Eq. 1), "zplus" (z+, LRP-gamma with gamma -> inf; for signed inputs the positive
  contributions (a_j w_jk)^+, i.e. alpha1-beta0, Bach et al. 2015), "gamma" (LRP-gamma, Eq. 5, generalised
  to signed inputs and outputs as Andeol et al. 2021 / zennit: the favoured sign of contribution is that of
  z_k), "alpha2beta1" (Bach et al. 2015). First layer (pixels): "box" (z^B, Montavon et al. 2017; 2019
  Sec. 10.2: inputs bounded by [low, high], the normalised image's range), "flat" (Lapuschkin et al. 2019:
  uniform over the receptive field), "wsquare" (w^2, Montavon et al. 2017), or any of the rules above.
- Residual additions and the global average pool are linear: plain gradient x input splits relevance in
  proportion to each summand (zennit's Norm rule on its Sum / AvgPool modules).
- The map (DEFAULT_COMPOSITE at DEFAULT_LAYER): LRP-eps on the classifier, LRP-gamma (gamma = 0.1) on every
  convolution from stage 5 up, the relevance of the activations entering stage 5 (14 x 14) summed over
  channels and over each cell of the 7 x 7 grid. Chosen by deletion / insertion on the first 30 test photos
  and confirmed on the 45 held out: 0.77 / 1.19 x random (K = 16) there, against 0.78 / 1.18
  at the pixels (z^B first layer, 3.5 x the time) and 0.81 / 1.16 for zennit's EpsilonGammaBox (gamma 0.25); RISE
  0.69 / 1.22 (docs/explanations.md has the table).

What is conserved: every rule here passes on sum_j R_j = sum_k R_k x (den_k without rho(b_k)) / den_k. So
with no bias anywhere (or `absorb=False`) LRP-eps (eps -> 0) and gamma conserve exactly, and the relevance
summed over every input value equals the explained logit (tests: a bias-free net). In our checkpoint the
folded BatchNorm biases are large and, absorbed (the paper's and zennit's default: the bias is a neuron
a_0 = 1 that keeps its share), take most of it: the pixels keep ~1e-4 of the logit under z+, ~1e-2 under
gamma, ~0.3 at stage 5 under gamma 0.1. z+ also drops the relevance of units with no positive contribution
(690 of the 8,960 depthwise channels have no positive folded weight), and alpha2-beta1 can make relevance
where a unit has contributions of one sign only. Only the map's order of cells is used (the score and the
overlay), so none of this changes the map; the totals are what the tests pin down.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vit.explain.perturb import cell_ids

FIRST_RULES = ("box", "flat", "wsquare", "epsilon", "zplus", "gamma", "alpha2beta1")
LAYER_RULES = ("epsilon", "zplus", "gamma", "alpha2beta1")
BOX = (-1.0, 1.0)  # the normalised image's range for mean = std = 0.5 (our EfficientNet's preprocessing)

Op = Callable[..., torch.Tensor]  # (input, weight[, bias]) -> pre-activation (the rules pass no bias)


@dataclass(frozen=True)
class Composite:
    """Which rule each part of the network gets (Montavon et al. 2019 Sec. 10.3: LRP-0 / eps at the top,
    gamma or z+ lower down, z^B or flat on the pixels)."""
    first: str = "box"  # the stem convolution (pixels in): one of FIRST_RULES
    lower: str = "gamma"  # every other convolution below stage `split`: one of LAYER_RULES
    upper: str = "epsilon"  # stages >= `split` and conv_head
    head: str = "epsilon"  # the classifier (Linear)
    split: int | None = None  # first stage of the upper rule (None: none, lower everywhere up to conv_head)
    gamma: float = 0.25
    epsilon: float = 1e-6  # the stabiliser of every rule, and LRP-eps's eps
    epsilon_std: float = 0.0  # eps += this x RMS of the layer's output (Montavon et al. 2019: 0.25 std)
    absorb: bool = True  # biases keep their share of relevance (the paper's and zennit's default)
    box: tuple[float, float] = BOX  # (low, high) of the pixels for the box rule


COMPOSITES: dict[str, Composite] = {  # zennit's names where zennit has the composite
    "epsilon": Composite(first="epsilon", lower="epsilon"),  # ~ gradient x input (BN folded, ReLU6 identity)
    "epsilon-plus": Composite(first="zplus", lower="zplus"),  # zennit EpsilonPlus (= epsilon-alpha1beta0)
    "epsilon-plus-flat": Composite(first="flat", lower="zplus"),  # zennit EpsilonPlusFlat
    "epsilon-plus-box": Composite(first="box", lower="zplus"),
    "epsilon-gamma-box": Composite(first="box", lower="gamma"),  # zennit EpsilonGammaBox (gamma 0.25)
    "epsilon-gamma0.1-box": Composite(first="box", lower="gamma", gamma=0.1),  # the map's (DEFAULT_COMPOSITE)
    "epsilon-alpha2beta1": Composite(first="alpha2beta1", lower="alpha2beta1"),  # zennit EpsilonAlpha2Beta1
    "epsilon-alpha2beta1-flat": Composite(first="flat", lower="alpha2beta1"),  # zennit EpsilonAlpha2Beta1Flat
}

DEFAULT_COMPOSITE, DEFAULT_LAYER = "epsilon-gamma0.1-box", 5  # the map's: see the module docstring


@dataclass
class CnnRelevance:
    """Relevance of one image for one class, at the pixels or at one layer's activations."""
    values: torch.Tensor  # (C, h, w) relevance of every input value (pixels: (3, H, W)) or activation
    logits: torch.Tensor  # (1, classes) of the pass
    target: int  # the explained class index
    layer: int | None = None  # None: the pixels; k: the activations entering blocks[k]
    explained: float | None = None  # the value explained (the target's logit): what conservation sums to

    @property
    def spatial(self) -> torch.Tensor:
        """(h, w) relevance of each position, summed over its channels."""
        return self.values.sum(0)

    def conservation_gap(self) -> float:
        """(explained - total relevance) / |explained| (explained: the logit unless told): the biases' share
        with absorb=True, plus what z+ cannot pass on; 0 where the rules conserve (see the module docstring)."""
        logit = float(self.logits[0, self.target]) if self.explained is None else self.explained
        return (logit - float(self.values.sum())) / max(abs(logit), 1e-12)


def composite_of(spec: str | Composite) -> Composite:
    """A Composite by name (COMPOSITES), or itself; checks its rules."""
    c = COMPOSITES.get(spec) if isinstance(spec, str) else spec
    if c is None:
        raise ValueError(f"unknown LRP composite {spec!r}; choose one of {tuple(COMPOSITES)}")
    if c.first not in FIRST_RULES or {c.lower, c.upper, c.head} - set(LAYER_RULES):
        raise ValueError(f"unknown rule in {c}; first: {FIRST_RULES}, others: {LAYER_RULES}")
    return c


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The (weight, bias) of conv followed by BatchNorm in eval mode, as one convolution:
    w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta (per output channel).
    The activation of timm's BatchNormAct2d is not part of it."""
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = -bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        return conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))), bias


@dataclass(frozen=True)
class Folded:
    """A layer's weight and bias (a convolution's with its BatchNorm folded in) and the signed parts the rules
    read, formed once per layer (see `folded`)."""
    w: torch.Tensor
    b: torch.Tensor | None
    w_pos: torch.Tensor  # w^+
    w_neg: torch.Tensor  # w^-
    b_pos: torch.Tensor | None  # b^+
    b_neg: torch.Tensor | None  # b^-


_FOLDED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Folded]]" = weakref.WeakKeyDictionary()
_FOLDED_LOCK = threading.Lock()


def folded(layer: nn.Module, bn: nn.BatchNorm2d | None = None) -> Folded:
    """`fold(layer, bn)` (the layer's own weight and bias without a BatchNorm) and its signed parts, kept per
    layer for as long as it lives: a map reads the same ~20 layers each time, weights of up to 1152 x 192,
    and these are not formed for each map again (NHWC, the layout oneDNN's CPU convolutions run fastest in:
    on our EfficientNet's map, 112 -> 94 ms with the other changes of issue 31). Formed again when a tensor
    of either module has changed (its version counter, bumped by every in-place write, and its storage), so a
    trained or reloaded model never gets stale weights."""
    parts = (layer,) if bn is None else (layer, bn)
    stamp = tuple((t._version, t.data_ptr(), t.device) for m in parts for t in (*m.parameters(), *m.buffers()))
    hit = _FOLDED.get(layer)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with torch.no_grad():
        w, b = fold(layer, bn) if bn is not None else (layer.weight.detach(), _bias(layer))
        if w.dim() == 4:  # NHWC: oneDNN's fastest CPU convolutions (cnn_relevance keeps activations NHWC too)
            w = w.contiguous(memory_format=torch.channels_last)
        f = Folded(w, b, w.clamp(min=0), w.clamp(max=0), None if b is None else b.clamp(min=0),
                   None if b is None else b.clamp(max=0))
    with _FOLDED_LOCK:
        _FOLDED[layer] = (stamp, f)
    return f


def prepare(model: nn.Module) -> None:
    """Form every layer's fold now (`folded`), as the model is built (Predictor.warm), so that its first map
    does not: forming them took 17-26 ms of our EfficientNet's first LRP map (6 December 2026, one thread)."""
    model = getattr(model, "_orig_mod", model)
    _check_cnn(model)
    folded(model.conv_stem, model.bn1)
    for block in (b for stage in model.blocks for b in stage):
        for conv, bn in block_layers(block):
            folded(conv, bn)
    folded(model.conv_head, model.bn2)
    folded(model.classifier)


def cnn_relevance(model: nn.Module, x: torch.Tensor, target: int | None = None, *,
                  composite: str | Composite = DEFAULT_COMPOSITE, layer: int | None = DEFAULT_LAYER) -> CnnRelevance:
    """LRP of class `target` (default: the top one) for one normalised image x (1, 3, H, W), under `composite`,
    at the activations entering `model.blocks[layer]` (len(blocks): entering conv_head; the layers below run
    without a graph, as lrp.py's ViT embedding) or at the pixels (`layer` None; the stem gets `first`). One forward pass
    of the rules-built-in network and one `torch.autograd.grad`; relevance starts from the target's logit."""
    c = composite_of(composite)
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: the module itself
    _check_cnn(model)
    stages = len(model.blocks)
    if layer is not None and not 0 <= layer <= stages:
        raise ValueError(f"layer {layer} is not a stage index (0 .. {stages}) or None (pixels)")
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone(memory_format=torch.channels_last)  # NHWC, as the folded weights (see `folded`)
        if layer is None:
            h, leaves = _first(model.conv_stem, model.bn1, x, c)
            h, nonneg = _act(model.bn1, h)
        else:
            with torch.no_grad():  # the network as it is, its BatchNorms folded (`folded`: cached, NHWC)
                h = _folded_forward(model.conv_stem, model.bn1, x)
                for block in (b for stage in model.blocks[:layer] for b in stage):
                    h = _block_forward(block, h)
            h = h.requires_grad_(True)
            leaves, nonneg = [h], bool((h >= 0).all())
        for s in range(layer or 0, stages):
            rule = c.upper if c.split is not None and s >= c.split else c.lower
            for block in model.blocks[s]:
                h, nonneg = _block(block, h, nonneg, rule, c)
        upper = c.upper if c.split is not None else c.lower
        h, _ = _act(model.bn2, _rule(_conv_op(model.conv_head), h, folded(model.conv_head, model.bn2), upper, c,
                                     nonneg))
        pooled = h.mean((2, 3))  # global average pool: linear
        logits = _rule(lambda a, wt: F.linear(a, wt), pooled, folded(model.classifier), c.head, c, True)
        t = int(logits[0].argmax()) if target is None else int(target)
        if not 0 <= t < logits.shape[-1]:
            raise ValueError(f"target {t} is not a class index (0 .. {logits.shape[-1] - 1})")
        out = logits[0, t]
        grads = torch.autograd.grad(out, leaves)
    r = sum(leaf.detach() * g for leaf, g in zip(leaves, grads, strict=True))  # gradient x input (box: 3 terms)
    return CnnRelevance(r[0], logits.detach(), t, layer, float(out.detach()))


def pool_to_grid(spatial: torch.Tensor | np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows, cols): relevance summed over the positions of each cell (the cells the faithfulness score blurs);
    a layer's (h, w) map is laid on the image as the pixels are (`cell_ids`: position i of h -> row i rows // h)."""
    r = np.asarray(spatial.detach().cpu() if isinstance(spatial, torch.Tensor) else spatial, np.float64)
    cells = cell_ids(r.shape[0], r.shape[1], rows, cols)
    return np.bincount(cells.ravel(), weights=r.ravel(), minlength=rows * cols).reshape(rows, cols)


# --- the network, re-written ---------------------------------------------------------------------------------

def _check_cnn(model: nn.Module) -> None:
    """timm EfficientNet-style models only: stem, blocks, conv_head, average pool, one Linear."""
    for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "classifier"):
        if not hasattr(model, name):
            raise TypeError(f"{type(model).__name__} has no {name}: this LRP is for timm EfficientNet / MobileNet CNNs")
    pool = getattr(model, "global_pool", None)
    if pool is not None and getattr(pool, "pool_type", "avg") != "avg":
        raise TypeError(f"LRP: global pool {pool.pool_type!r} is not supported; only average pooling")
    if not isinstance(model.classifier, nn.Linear):
        raise TypeError(f"LRP: classifier {type(model.classifier).__name__} is not supported; only nn.Linear")
    if model.training:
        raise ValueError("LRP folds BatchNorm's running statistics: put the model in eval mode")


def _block(block: nn.Module, x: torch.Tensor, nonneg: bool, rule: str, c: Composite) -> tuple[torch.Tensor, bool]:
    """timm's DepthwiseSeparableConv (dw -> pw) or InvertedResidual (pw -> dw -> pwl), each conv with its
    BatchNorm folded in; the skip is a plain (linear) addition. Squeeze-excitation is not supported."""
    h, h_nonneg = x, nonneg
    for conv, bn in block_layers(block):
        h, h_nonneg = _act(bn, _rule(_conv_op(conv), h, folded(conv, bn), rule, c, h_nonneg))
    if block.has_skip:  # drop_path is the identity in eval mode
        return h + x, h_nonneg and nonneg
    return h, h_nonneg


def _folded_forward(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """act(bn(conv(x))) as one convolution with the BatchNorm folded in, then the activation (no rule)."""
    f = folded(conv, bn)
    h = _conv_op(conv)(x, f.w, f.b)
    act = getattr(bn, "act", None)
    return h if act is None or isinstance(act, nn.Identity) else act(h)


def _block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A block's plain forward (no rule) on its folded layers: the same value as block(x) in eval mode."""
    h = x
    for conv, bn in block_layers(block):
        h = _folded_forward(conv, bn, h)
    return h + x if block.has_skip else h


def block_layers(block: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, its BatchNorm) in forward order for timm's DepthwiseSeparableConv and InvertedResidual;
    TypeError for anything else or a part this LRP does not handle (squeeze-excitation, anti-aliasing)."""
    name = type(block).__name__
    for part in ("aa", "se", "conv_s2d"):
        m = getattr(block, part, None)
        if m is not None and not isinstance(m, nn.Identity):
            raise TypeError(f"LRP: {name}.{part} ({type(m).__name__}) is not supported")
    if name == "DepthwiseSeparableConv":
        return [(block.conv_dw, block.bn1), (block.conv_pw, block.bn2)]
    if name == "InvertedResidual":
        return [(block.conv_pw, block.bn1), (block.conv_dw, block.bn2), (block.conv_pwl, block.bn3)]
    raise TypeError(f"LRP: block {name} is not supported (DepthwiseSeparableConv, InvertedResidual)")


def _first(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor,
           c: Composite) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The stem convolution (BN folded) under the first-layer rule, and the leaves whose gradient x value,
    summed, is the pixel relevance: x itself, (x, low, high) for the box rule, ones for flat / w^2."""
    f = folded(conv, bn)
    op = _conv_op(conv)
    if c.first in LAYER_RULES:
        x.requires_grad_(True)
        return _rule(op, x, f, c.first, c, False), [x]
    with torch.no_grad():
        z = _add_bias(op(x, f.w), f.b)  # the true pre-activation
    if c.first == "box":  # z^B: den = sum_i x_i w_ij - l_i w_ij^+ - h_i w_ij^- (the bias cancels)
        low, high = (torch.full_like(x, v).requires_grad_(True) for v in c.box)
        x.requires_grad_(True)
        den = op(x, f.w) - op(low, f.w_pos) - op(high, f.w_neg)
        return _ratio(den, z, c.epsilon), [x, low, high]
    ones = torch.ones_like(x).requires_grad_(True)  # flat / w^2: relevance by the weights alone
    return _ratio(op(ones, torch.ones_like(f.w) if c.first == "flat" else f.w * f.w), z, c.epsilon), [ones]


def _rule(op: Op, a: torch.Tensor, f: Folded, rule: str, c: Composite, nonneg: bool) -> torch.Tensor:
    """op(a, f.w) + f.b with its gradient such that a * grad is `rule`'s redistribution (Eq. 8). `nonneg`: a >= 0
    is known (it comes out of a ReLU6), so the terms in a^- are left out. The bias is a constant of den: it
    changes den's value (absorbed: the bias's share) but not its gradient, so it is added to the value alone."""
    eps, b = c.epsilon, f.b
    if rule == "epsilon":  # den = z (with the bias when absorbed): LRP-eps, Eq. 4
        zb = op(a, f.w)
        out = _add_bias(zb.detach(), b)
        if c.epsilon_std:
            eps += c.epsilon_std * float(out.pow(2).mean().sqrt())
        return _ratio(zb, out, eps, out if c.absorb else None)
    zb = op(a, f.w)  # sum_j a_j w_jk
    pos = _positive(op, a, f.w_pos, f.w_neg, nonneg)  # sum_j (a_j w_jk)^+; the negative contributions: zb - pos
    with torch.no_grad():
        z = _add_bias(zb, b)  # the true pre-activation
    if rule == "zplus":
        return _ratio(pos, z, eps, _add_bias(pos.detach(), f.b_pos) if c.absorb else None)
    if rule == "alpha2beta1":  # 2 x positive share - 1 x negative share (forward: 2z - z)
        neg = _positive(op, a, -f.w_neg, -f.w_pos, nonneg).neg()  # not zb - pos: where it is ~0 its gradient
        return 2 * _ratio(pos, z, eps, _add_bias(pos.detach(), f.b_pos) if c.absorb else None) - _ratio(
            neg, z, eps, _add_bias(neg.detach(), f.b_neg) if c.absorb else None)  # would cancel
    # gamma (Eq. 5, sign-aware): den = z_k + gamma * (the contributions of z_k's own sign); at z_k = 0 the
    # ratio z / den is 0, so no relevance (zennit's masks z > 0, z < 0). |den| >= |z| (bias absorbed), so
    # |z / den| <= 1 and the negative part may be zb - pos: one convolution fewer on a signed input.
    # With m = [z > 0]: den = zb + gamma (m pos + (1 - m)(zb - pos)) = zb (1 + gamma (1 - m)) + pos gamma (2m - 1).
    with torch.no_grad():
        up = (z > 0).to(zb.dtype)
        k_zb, k_pos = 1 + c.gamma * (1 - up), c.gamma * (2 * up - 1)
    den = zb * k_zb + pos * k_pos
    value = None
    if c.absorb and b is not None:
        with torch.no_grad():  # den + b + gamma (m b^+ + (1 - m) b^-), the biases per channel
            channel = (1, -1, *([1] * (z.dim() - 2)))
            value = _add_bias(den, b) + c.gamma * (up * f.b_pos.view(channel) + (1 - up) * f.b_neg.view(channel))
    return _ratio(den, z, eps, value)


def _positive(op: Op, a: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor, nonneg: bool) -> torch.Tensor:
    """op's positive contributions, sum_j (a_j w_jk)^+ = a^+ w^+ + a^- w^- (differentiable)."""
    if nonneg:
        return op(a, w_pos)
    return op(a.clamp(min=0), w_pos) + op(a.clamp(max=0), w_neg)


def _ratio(den: torch.Tensor, z: torch.Tensor, eps: float, value: torch.Tensor | None = None) -> torch.Tensor:
    """The value z, the gradient den's scaled by the constant z / value (Eq. 8), `value` den's value with what
    carries no gradient (an absorbed bias) added; den's own value when None. It is stabilised by eps with its
    own sign (+eps at 0), as zennit's Stabilizer; the forward value is z itself even where it bites (a
    den of 0 with z != 0, e.g. z+ on an all-zero input window with a bias), so later layers see the true
    activations."""
    d = den.detach()
    v = d if value is None else value
    r = z.detach() / (v + torch.where(v >= 0, eps, -eps))
    return z.detach() + (den - d) * r


def _act(bn: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """timm BatchNormAct2d's activation (its BN is folded into the conv) under the identity rule:
    act(h) = h * (act(h) / h), the ratio a constant. Returns it and whether it is >= 0 (ReLU / ReLU6)."""
    act = getattr(bn, "act", nn.Identity())
    drop = getattr(bn, "drop", nn.Identity())
    if not isinstance(drop, nn.Identity):
        raise TypeError(f"LRP: BatchNormAct2d.drop ({type(drop).__name__}) is not supported")
    if isinstance(act, nn.Identity):
        return h, False
    if not isinstance(act, (nn.ReLU, nn.ReLU6)):
        raise TypeError(f"LRP: activation {type(act).__name__} is not supported (ReLU, ReLU6)")
    hd = h.detach()
    y = F.relu(hd) if isinstance(act, nn.ReLU) else F.hardtanh(hd, 0.0, 6.0)  # not in place: hd is h's storage
    return y + (h - hd) * torch.where(hd > 0, y / hd, 0.0), True  # act(h) / h, 0 where h <= 0


def _conv_op(conv: nn.Conv2d) -> Op:
    """The convolution as conv(input, weight), its padding included (timm's Conv2dSame pads with zeros
    to TF's 'SAME' first, as its forward does)."""
    if conv.padding_mode != "zeros":
        raise TypeError(f"LRP: padding mode {conv.padding_mode!r} is not supported; only zeros")
    if type(conv).__name__ == "Conv2dSame":
        from timm.layers.padding import pad_same  # lazy: timm takes seconds to import; only TF-ported convs need it

        def op(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
            a = pad_same(a, w.shape[-2:], conv.stride, conv.dilation)
            return F.conv2d(a, w, b, conv.stride, (0, 0), conv.dilation, conv.groups)
        return op
    if not isinstance(conv, nn.Conv2d) or isinstance(conv.padding, str):
        raise TypeError(f"LRP: convolution {type(conv).__name__} (padding {conv.padding!r}) is not supported")
    return lambda a, w, b=None: F.conv2d(a, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def _add_bias(t: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return t if b is None else t + b.view(1, -1, *([1] * (t.dim() - 2)))


def _bias(layer: nn.Module) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach()


def variant(name: str, **changes) -> Composite:
    """A named composite with some fields changed (e.g. variant("epsilon-gamma-box", gamma=0.5))."""
    return replace(composite_of(name), **changes)
