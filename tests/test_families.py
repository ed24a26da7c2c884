"""The family registry: every family-specific rule is asked of vit.models.families, so a new family is one
`register` call; here a throw-away timm CNN goes through build, checkpoint, predict and explain."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from conftest import CLASSES, make_image

from vit.app import ui
from vit.explain import methods
from vit.models import checkpoint, families
from vit.models.factory import build, preprocessing
from vit.models.zoo import build_timm_cnn
from vit.serve.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def resnet_family():
    spec = families.register(families.Family(
        name="toy_resnet", title="Toy ResNet", build=build_timm_cnn,
        default_arch={"model_name": "resnet10t"}, attention=False, default_method="grad-cam",
        channels_last=True, head="fc"))
    yield spec
    families.unregister("toy_resnet")


def test_a_fourth_family_needs_only_the_registry(tmp_path, resnet_family):
    torch.manual_seed(0)
    built = build("toy_resnet", num_classes=len(CLASSES))
    assert built.family == "toy_resnet" and built.arch["model_name"] == "resnet10t"
    pp = preprocessing(built.model, "toy_resnet")
    meta = {"family": "toy_resnet", "arch": built.arch, "class_names": CLASSES, "init": built.init,
            "preprocessing": pp}
    path = checkpoint.save(tmp_path / "toy.safetensors", built.model, meta)
    p = Predictor.from_checkpoint(path)
    assert p.id == "toy" and p.methods == ("grad-cam", "occlusion", "rise")  # what a CNN can give, its default first
    r = p.answer(make_image(1, (120, 100)))
    assert set(r.probs) == set(CLASSES) and abs(sum(r.probs.values()) - 1) < 1e-5
    e = p.explain(make_image(1, (120, 100)))
    assert e.method == "grad-cam" and e.heat.ndim == 2 and e.heat.shape == e.grid
    assert e.probs == pytest.approx(r.probs, abs=1e-5)
    with pytest.raises(ValueError, match="choose one of \\['grad-cam', 'occlusion', 'rise'\\]"):
        p.explain(make_image(1), "attention")
    card = ui.model_card(checkpoint.read_meta(path), resnet_family.title, path)
    assert card.startswith("**Toy ResNet**") and "resnet10t" in card


def test_unknown_family_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown model family 'resnet'; choose one of .*scratch_vit"):
        families.get("resnet")


def test_a_cnn_cannot_claim_attention_methods():
    bad = families.Family(name="bad", title="Bad", build=build_timm_cnn, default_arch={}, attention=False,
                          default_method="rollout")
    with pytest.raises(ValueError, match="default method 'rollout' does not apply .*attention maps"):
        methods.of(bad)
    assert "rollout" not in methods.of(families.get("effnet")) and "rollout" in methods.of(families.get("timm_vit"))


def test_pretrained_parameters_come_from_the_spec():
    hybrid, effnet = families.get("timm_vit"), families.get("effnet")
    imagenet = {"weights": "imagenet"}
    assert hybrid.is_pretrained_param("patch_embed.backbone.conv_stem.weight", imagenet)
    assert not hybrid.is_pretrained_param("blocks.0.attn.qkv.weight", imagenet)
    assert effnet.is_pretrained_param("blocks.0.0.conv_dw.weight", imagenet)
    assert not effnet.is_pretrained_param("classifier.weight", imagenet)
    assert not effnet.is_pretrained_param("blocks.0.0.conv_dw.weight", {"weights": "random"})


def _family_name_literals(source: str, name: str = "<source>") -> list[str]:
    """Every string literal that is a family id: `x == "effnet"`, `x in ("scratch_vit", ...)`,
    `{"timm_vit": ...}`, `titles["effnet"]`, `get("effnet")`, a default argument... (a family id inside a
    longer text, a docstring or a file name, is not one)."""
    names = set(families.names())
    return [f"{name}:{node.lineno}: {node.value!r}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]


def test_the_guard_sees_comparisons_keys_lookups_and_arguments():
    source = """
if x == "effnet" or y in ("scratch_vit",): pass
rows = {"timm_vit": 1}
title = titles["effnet"]
spec = get("scratch_vit")
def f(model="timm_vit"): pass
ok = "the effnet model", f"{x}.safetensors", "effnet.onnx"
"""
    assert sorted(int(hit.split(":")[1]) for hit in _family_name_literals(source)) == [2, 2, 3, 4, 5, 6]


def test_no_module_outside_the_registry_compares_with_a_family_name():
    """Family ids are written in vit/models/families.py alone: the app, the package and the scripts ask the registry."""
    files = [ROOT / "app.py", *sorted((ROOT / "vit").rglob("*.py")), *sorted((ROOT / "scripts").rglob("*.py"))]
    found = [hit for f in files if f != ROOT / "vit" / "models" / "families.py"
             for hit in _family_name_literals(f.read_text(), str(f.relative_to(ROOT)))]
    assert not found, found


def _method_id_literals(source: str, name: str = "<source>", allowed_keyword: str | None = None) -> list[str]:
    """Every string literal that is an explanation method id (as `_family_name_literals`), except the names
    listed in an `__all__` (functions such as `chefer`) and, with `allowed_keyword`, that keyword's values."""
    ids, tree = set(methods.ids()), ast.parse(source)
    skip = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets) for c in ast.walk(node.value)}
    skip |= {id(node.value) for node in ast.walk(tree)  # an endpoint's name ("/attention") is not a method
             if isinstance(node, ast.keyword) and node.arg in (allowed_keyword, "api_name")}
    return [f"{name}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in ids and id(node) not in skip]


def test_the_method_guard_sees_literals_but_not_export_lists_or_a_familys_default():
    source = """
__all__ = ["chefer", "occlusion"]
if method == "rollout": pass
Family(name="x", default_method="rise")
"""
    assert [int(h.split(":")[1]) for h in _method_id_literals(source)] == [3, 4]
    assert [int(h.split(":")[1]) for h in _method_id_literals(source, allowed_keyword="default_method")] == [3]


def test_method_ids_are_written_in_the_method_registry_alone():
    """The app, the package and the scripts ask vit.explain.methods; a family names its default only."""
    files = [ROOT / "app.py", *sorted((ROOT / "vit").rglob("*.py")), *sorted((ROOT / "scripts").rglob("*.py"))]
    registry = ROOT / "vit" / "explain" / "methods.py"
    found = [hit for f in files if f != registry for hit in _method_id_literals(
        f.read_text(), str(f.relative_to(ROOT)), "default_method" if f.name == "families.py" else None)]
    assert not found, found
