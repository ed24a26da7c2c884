"""The explanation-method registry: every method registered once, as timm registers its models.

Each `Method` says its id (the API's), its title (the page's menu), what it needs (attention maps,
a ViT's token grid, a backward pass, batched perturbed passes), which of the page's controls apply
(layer, head, discard), whether its map is of the class it is asked for (`targeted`) and its
function. Which models a method applies to follows from what it needs and what a model family can
give (`vit.models.families.Family.attention` / `.gradients`); no module outside this one compares or
lists method ids. A new method is one `register(Method(...))` call:

    register(Method("saliency", "Saliency", my_fn, needs=frozenset({BACKWARD})))

and it appears in every applicable model's `/methods` list and menu.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from vit.explain import maps
from vit.explain.maps import ForwardBatch, Heat, Inputs

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vit.models.families import Family

__all__ = ["ATTENTION", "BACKWARD", "CONTROLS", "DISCARD", "HEAD", "Inputs", "LAYER", "Method", "PERTURBED", "RULES",
           "compute", "first_using", "get", "ids", "of", "register", "title", "unregister", "uses",
           "weights"]

# What a method needs (Method.needs)
ATTENTION = "attention maps"  # per-layer (heads, N, N) attention: a ViT
RULES = "LRP rules for every layer"  # a ViT's blocks, or a CNN whose family says it has them (Family.lrp_rules)
BACKWARD = "a backward pass"  # gradients: a float PyTorch model
PERTURBED = "batched perturbed passes"  # tens of forward passes on blurred copies
# The page's map controls (Method.controls)
LAYER, HEAD, DISCARD = "layer", "head", "discard"
CONTROLS = (LAYER, HEAD, DISCARD)


@dataclass(frozen=True)
class Method:
    id: str  # the API's and the menu's value
    title: str  # what the menu says
    fn: Callable[[Inputs], Heat]  # the map
    needs: frozenset[str] = field(default_factory=frozenset)  # of ATTENTION, RULES, BACKWARD, PERTURBED
    controls: tuple[str, ...] = ()  # of CONTROLS: the page shows these for this method
    cite: str = ""  # the paper
    targeted: bool = True  # the map is of the class `compute` is given (False: one map whatever the class)
    weights: bool = False  # its map is attention weights over the patch keys: drawn on the fixed x-uniform scale

    def applies_to(self, family: "Family") -> bool:
        """Can a model of `family` give what this method needs?"""
        if ATTENTION in self.needs and not family.attention:
            return False
        if RULES in self.needs and not (family.attention or family.lrp_rules):
            return False
        return not (BACKWARD in self.needs and not family.gradients)

    @property
    def redraws(self) -> bool:
        """The map comes from the pass's attention maps alone: no model run at a new layer / head / discard."""
        return self.needs <= {ATTENTION}


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add (or replace) a method; returns it."""
    if set(method.controls) - set(CONTROLS):
        raise ValueError(f"{method.id}: unknown controls {sorted(set(method.controls) - set(CONTROLS))}")
    _REGISTRY[method.id] = method
    return method


def unregister(method_id: str) -> None:
    _REGISTRY.pop(method_id, None)


def get(method_id: str) -> Method:
    try:
        return _REGISTRY[method_id]
    except KeyError:
        raise ValueError(f"unknown explanation method {method_id!r}; choose one of {ids()}") from None


def ids() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def title(method_id: str) -> str:
    """The menu's title of a method (the id itself for an unknown one)."""
    return _REGISTRY[method_id].title if method_id in _REGISTRY else method_id


def uses(method_id: str, control: str) -> bool:
    """Does the page show `control` (LAYER, HEAD, DISCARD) for this method?"""
    return method_id in _REGISTRY and control in _REGISTRY[method_id].controls


def weights(method_id: str) -> bool:
    """Is the method's map attention weights over the patch keys (class-token attention, rollout), drawn on
    the fixed scale where uniform attention is flat (vit.explain.render), rather than stretched to its range?"""
    return method_id in _REGISTRY and _REGISTRY[method_id].weights


def first_using(control: str) -> str:
    """The first registered method that uses `control` (the /attention endpoint's default view: LAYER)."""
    return next(m.id for m in _REGISTRY.values() if control in m.controls)


def of(family: "Family") -> tuple[str, ...]:
    """The methods a family's models offer, in registry order after its default (its `default_method`,
    chosen by the rule in docs/explanations.md; else the first that applies)."""
    offered = tuple(m.id for m in _REGISTRY.values() if m.applies_to(family))
    default = family.default_method
    if default is None:
        return offered
    if default not in offered:
        raise ValueError(f"{family.name}: default method {default!r} does not apply "
                         f"(needs {sorted(get(default).needs)}); choose one of {offered}")
    return (default, *(m for m in offered if m != default))


def compute(model: "nn.Module", x: "torch.Tensor", method: str, *, target: int | None = None, layer: int = -1,
            head: int | str = "mean", discard: float = 0.9, forward_batch: ForwardBatch | None = None,
            maps: list | None = None, logits: "torch.Tensor | None" = None) -> Heat:
    """The `method` map for one normalised image x (1, 3, H, W) and class `target` (default: the top one).

    layer / head: which block (index, -1 = last) and head (index, "mean" or "max"); discard: rollout's
    discard ratio; forward_batch: the batched forward of the perturbation methods (default `model`);
    maps / logits: per-layer (heads, N, N) attention and logits of a pass already made, so attention
    maps need no new one. Methods that need a backward pass need a float model."""
    m = get(method)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image of shape (1, 3, H, W), got {tuple(x.shape)}")
    heat = m.fn(Inputs(model, x, target, layer, head, discard, forward_batch, maps, logits))
    return dataclasses.replace(heat, method=m.id)


def _register_builtin() -> None:
    """The methods we ship, in the menu's order after a model's default."""
    for method in (
        Method("attention", "Attention: one layer", maps.attention_heat, frozenset({ATTENTION}), (LAYER, HEAD),
               "Dosovitskiy et al. 2021, Fig. 6", targeted=False, weights=True),
        Method("rollout", "Attention rollout", maps.rollout_heat, frozenset({ATTENTION}), (HEAD, DISCARD),
               "Abnar & Zuidema 2020", targeted=False, weights=True),
        Method("chefer", "Chefer relevance", lambda i: maps.chefer(i.model, i.x, i.target),
               frozenset({ATTENTION, BACKWARD}), cite="Chefer, Gur & Wolf 2021"),
        Method("lrp", "LRP (conservative relevance)", lambda i: maps.lrp(i.model, i.x, i.target),
               frozenset({RULES, BACKWARD}), cite="Ali et al. 2022; Achtibat et al. 2024 (ViTs); Montavon et al. 2019 (CNNs)"),
        Method("occlusion", "Occlusion", lambda i: maps.occlusion(i.model, i.x, i.target, forward_batch=i.forward_batch),
               frozenset({PERTURBED}), cite="Zeiler & Fergus 2014"),
        Method("rise", "RISE", lambda i: maps.rise(i.model, i.x, i.target, forward_batch=i.forward_batch),
               frozenset({PERTURBED}), cite="Petsiuk et al. 2018"),
        Method("grad-cam", "Grad-CAM", lambda i: maps.grad_cam_heat(i.model, i.x, i.target),
               frozenset({BACKWARD}), cite="Selvaraju et al. 2017"),
    ):
        register(method)


_register_builtin()
