"""The model-family registry: everything that differs between families, registered once.

Callers ask `get(name)` for a `Family` and use its fields; no module outside this one tests a
family's name (as timm's `_registry.py` / `pretrained_cfg`). A new family, say a user's own timm
CNN, is one `register(Family(...))` call:

    register(Family(name="resnet", title="ResNet-18", build=zoo.build_timm_cnn,
                    default_arch={"model_name": "resnet18"}, attention=False))

Which explanation methods a family's models offer follows from its capabilities (`attention`,
`gradients`) in vit.explain.methods; a family names only its default method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from vit.models import zoo  # its builders import timm when called, not on import
from vit.models.scratch_vit import SCRATCH_PREPROCESSING
from vit.models.zoo import Built

Builder = Callable[[dict, int, "str | None"], Built]  # (arch with num_classes, num_classes, pretrained) -> Built


@dataclass(frozen=True)
class Family:
    name: str  # the id stored in checkpoints
    title: str  # what a person reads
    build: Builder  # see `Builder`
    default_arch: dict  # a new model's architecture unless told otherwise
    default_pretrained: str | None = None  # None: random initialisation
    attention: bool = True  # a ViT: per-layer (B, heads, N, N) attention maps and a token grid on request
    gradients: bool = True  # a float PyTorch model: methods with a backward pass apply
    default_method: str | None = None  # explanation shown first (rule: docs/explanations.md); None: the first that applies
    channels_last: bool = False  # NHWC pays on CPU (convolutions)
    int8: bool = False  # dynamic int8 of nn.Linear pays on CPU (transformer matmuls)
    lrp_rules: bool = False  # a CNN whose every layer has an LRP rule (vit/explain/lrp_cnn.py: timm EfficientNet)
    head: str = "head"  # parameter-name prefix of the classifier (new when fine-tuning)
    pretrained_prefix: str | None = None  # only these parameters came pretrained (None: all but `head`)
    preprocessing: Callable[[nn.Module], dict] | None = None  # model -> timm data config (None: timm's)
    description: str = ""  # one line for the model card

    def is_pretrained_param(self, name: str, init: dict) -> bool:
        """Did parameter `name` come from pretrained weights (for --backbone-lr-scale / --freeze-epochs)?"""
        while init.get("weights") == "checkpoint":  # --init (maybe of an --init): as the first weights
            init = init.get("checkpoint_init") or {}
        if init.get("weights", "random") == "random":
            return False
        if self.pretrained_prefix is not None:
            return name.startswith(self.pretrained_prefix)
        return not name.startswith(self.head)

    def preprocessing_for(self, model: nn.Module) -> dict:
        """The model's own eval preprocessing as a JSON-ready timm data config."""
        if self.preprocessing is not None:
            cfg = self.preprocessing(model)
        else:
            import timm.data  # lazy: timm takes seconds to import; the scratch ViT never needs it

            cfg = timm.data.resolve_model_data_config(model)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add (or replace) a family; returns it (vit.explain.methods.of(family) checks its default method)."""
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> Family:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose one of {names()}") from None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _scratch_preprocessing(model: nn.Module) -> dict:
    side = model.cfg.image_size
    return {"input_size": (3, side, side), **SCRATCH_PREPROCESSING}


register(Family(
    name="scratch_vit", title="Scratch ViT", build=zoo.build_scratch_vit,
    default_arch={"preset": "vit_foodvision_p8_96"}, attention=True,
    # LRP first: of the maps that clear both faithfulness margins, the best that answers a click within 1 s
    # (docs/explanations.md: RISE's pair of ratios is a little better, at 20x the time)
    default_method="lrp", int8=True,
    preprocessing=_scratch_preprocessing,
    description="our Vision Transformer (Dosovitskiy et al. 2021, Eq. 1-4), trained from random weights"))
register(Family(
    name="timm_vit", title="Hybrid ViT (timm)", build=zoo.build_timm_vit,
    default_arch={"model_name": "vit_hybrid_lite0_s16", "embed_dim": 192, "depth": 4, "num_heads": 3,
                  "drop_path_rate": 0.1},
    default_pretrained="lite0-imagenet", attention=True,
    # lrp first: the best pair of ratios on the 30 selection photos (0.63 / 1.26; chefer 0.82 / 1.24, RISE 0.71 / 1.20,
    # over the speed bar here) and on the 45 held out (0.70 / 1.24), in one forward + backward pass (README)
    default_method="lrp", channels_last=True, int8=True,
    pretrained_prefix="patch_embed.backbone.",
    description="timm's VisionTransformer over the ImageNet EfficientNet-Lite0 stem (Sec. 3.1, hybrid)"))
register(Family(
    name="effnet", title="EfficientNet-Lite0", build=zoo.build_timm_cnn,
    default_arch={"model_name": "tf_efficientnet_lite0", "drop_rate": 0.2, "drop_path_rate": 0.1},
    # LRP first: it clears both faithfulness margins on the 45 held-out photos (0.77 / 1.19; RISE 0.69 / 1.22)
    # in one forward + backward pass, where RISE needs 64 masked passes (docs/explanations.md)
    default_pretrained="lite0-imagenet", attention=False, default_method="lrp", lrp_rules=True,
    channels_last=True, head="classifier",
    description="a CNN baseline, fine-tuned from ImageNet"))
