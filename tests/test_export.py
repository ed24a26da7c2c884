"""vit.runtime.export on tiny models of a ViT, the hybrid ViT and a CNN: ONNX Runtime's logits and attention maps
equal PyTorch's, the metadata travels inside the file, a stale export is detected, the check can fail."""
import json
import shutil

import pytest
import torch

pytest.importorskip("onnxruntime")

from conftest import CLASSES  # noqa: E402

from vit.models import checkpoint, families, zoo  # noqa: E402
from vit.models.factory import (
    build,  # noqa: E402
    load,  # noqa: E402
    preprocessing,  # noqa: E402
)
from vit.runtime import export
from vit.runtime.engines import OrtEngine  # noqa: E402

TINY_CNN = families.Family(name="test_cnn", title="tiny ResNet (test)", build=zoo.build_timm_cnn,
                           default_arch={"model_name": "resnet10t"}, attention=False,
                           default_method="grad-cam", head="fc")


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    """A random 32 px resnet10t checkpoint of a family registered for this module only."""
    families.register(TINY_CNN)
    torch.manual_seed(0)
    built = build(TINY_CNN.name, num_classes=len(CLASSES))
    pp = {**preprocessing(built.model, TINY_CNN.name), "input_size": [3, 32, 32], "crop_pct": 1.0}
    meta = {"family": TINY_CNN.name, "arch": built.arch, "class_names": CLASSES, "init": built.init,
            "preprocessing": pp}
    yield checkpoint.save(tmp_path_factory.mktemp("cnn") / "test_cnn.safetensors", built.model, meta)
    families.unregister(TINY_CNN.name)


@pytest.fixture(scope="module")
def exported(tiny_checkpoints, tiny_cnn, tmp_path_factory):
    """family -> (checkpoint, its export): the scratch ViT, the hybrid ViT and the CNN."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for family, src in [("scratch_vit", tiny_checkpoints["scratch_vit"]),
                        ("timm_vit", tiny_checkpoints["timm_vit"]), (TINY_CNN.name, tiny_cnn)]:
        ckpt = load(shutil.copy(src, root / src.name))
        paths = export.export(ckpt)
        out[family] = ckpt, paths
    return out


def batch(ckpt, n: int) -> torch.Tensor:
    size = ckpt.meta["preprocessing"]["input_size"][-1]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit", "test_cnn"])
def test_onnx_logits_equal_torch_at_any_batch_size(exported, family):
    ckpt, paths = exported[family]
    assert paths[0] == ckpt.path.with_suffix(".onnx")
    assert len(paths) == (2 if family != "test_cnn" else 1)  # the attention graph for ViTs only
    engine = OrtEngine(paths[0])
    for n in (1, 3):  # the batch axis is dynamic: the export traced batch size 2
        x = batch(ckpt, n)
        with torch.inference_mode():
            ref = ckpt.model(x)
        assert engine.forward(x).shape == (n, len(CLASSES))
        assert torch.allclose(engine.forward(x), ref, atol=export.ATOL)
    assert not ckpt.model.training  # exporting left the model in eval mode


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit"])
def test_onnx_attention_maps_equal_torch(exported, family):
    from vit.models.attention import attention_maps

    ckpt, paths = exported[family]
    engine = OrtEngine(paths[0])
    assert engine.attention
    x = batch(ckpt, 3)
    with torch.inference_mode():
        ref_logits, ref_maps = attention_maps(ckpt.model, x)
    logits, maps = engine.forward_attention(x)
    assert torch.allclose(logits, ref_logits, atol=export.ATOL)
    assert len(maps) == len(ckpt.model.blocks)
    heads = ckpt.model.blocks[0].attn.num_heads
    for m, r in zip(maps, ref_maps):
        assert m.shape == r.shape and m.shape[:2] == (3, heads) and m.shape[2] == m.shape[3]
        assert torch.allclose(m, r, atol=export.ATOL)
        assert torch.allclose(m.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit"])
def test_the_attention_graph_gives_the_features_of_its_own_pass(exported, family):
    """An explanation's nearest training photos read the attention graph's `features` (no second pass): they are
    the plain graph's and PyTorch's penultimate features, row for row."""
    from vit.models.features import logits_and_features

    ckpt, paths = exported[family]
    engine, x = OrtEngine(paths[0]), batch(ckpt, 3)
    logits, features, maps = engine.forward_attention_features(x)
    with torch.inference_mode():
        _, ref = logits_and_features(ckpt.model, x)
    assert features.shape == ref.shape and torch.allclose(features, ref, atol=export.ATOL)
    assert torch.allclose(features, engine.forward_features(x)[1], atol=export.ATOL)
    assert torch.allclose(logits, engine.forward(x), atol=export.ATOL) and len(maps) == len(ckpt.model.blocks)


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit", "test_cnn"])
def test_exports_keep_the_checkpoints_fp16_weights(exported, family):
    """The checkpoints are saved in fp16: every weight travels in fp16 (half the file), BatchNorm
    included (folded at export it would need float32), and the values are the checkpoint's own."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    ckpt, paths = exported[family]
    stored = {k: v.float() for k, v in ckpt.model.state_dict().items() if v.is_floating_point()}
    for path in paths:
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
        fp32 = sum(a.size for a in inits.values() if a.dtype == np.float32 and a.size > 1)
        fp16 = sum(a.size for a in inits.values() if a.dtype == np.float16)
        assert fp16 >= 0.9 * sum(v.numel() for v in stored.values()) and fp32 <= 0.01 * fp16, (path.name, fp32, fp16)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(paths[0])).graph.initializer}
    name, tensor = next((k, v) for k, v in stored.items() if v.dim() >= 2)
    # the plain graph is WithFeatures(model) (logits and features), so its names carry the wrapper's `model.`
    assert np.array_equal(inits[f"model.{name}.fp16"].astype(np.float32), tensor.numpy())


def test_cnn_engine_has_no_attention_maps(exported):
    ckpt, paths = exported["test_cnn"]
    engine = OrtEngine(paths[0])
    assert not engine.attention
    with pytest.raises(TypeError, match="no attention maps"):
        engine.forward_attention(batch(ckpt, 1))


def test_metadata_round_trip(exported):
    ckpt, paths = exported["scratch_vit"]
    for path in paths:
        props = export.read_metadata(path)
        assert json.loads(props["foodvision"]) == ckpt.meta
        assert json.loads(props["class_names"]) == CLASSES
        assert json.loads(props["preprocessing"]) == ckpt.meta["preprocessing"]
        assert props["source_sha256"] == export.sha256(ckpt.path) and props["family"] == "scratch_vit"
    engine = OrtEngine(paths[0])
    assert engine.meta == ckpt.meta and engine.class_names == CLASSES and not engine.int8
    assert export.is_current(paths[0], ckpt.path)


def test_a_changed_checkpoint_makes_the_export_stale(tiny_checkpoints, tmp_path):
    path = shutil.copy(tiny_checkpoints["scratch_vit"], tmp_path / "scratch_vit.safetensors")
    ckpt = load(path)
    onnx_path, attn_path = export.export(ckpt)
    assert export.is_current(onnx_path, path)
    with torch.no_grad():
        ckpt.model.head.bias += 1
    checkpoint.save(path, ckpt.model, ckpt.meta)  # same name, new weights
    assert not export.is_current(onnx_path, path)
    shutil.copy(tiny_checkpoints["scratch_vit"], path)
    assert export.is_current(onnx_path, path)
    attn_path.unlink()  # a ViT export without its attention graph is incomplete
    assert not export.is_current(onnx_path, path)
    onnx_path.write_bytes(b"not onnx")
    assert not export.is_current(onnx_path, path)


def test_check_passes_and_fails(exported, image_folder, capsys, monkeypatch):
    ckpt, paths = exported["scratch_vit"]
    r = export.check(ckpt, paths[0], image_folder / "test")
    assert r["ok"] and r["photos"] == "real" and r["n_test"] == len(CLASSES) * 2 and r["top1_agreement"] == 1.0
    assert r["max_abs_logit_diff"] <= export.ATOL and r["max_abs_attention_diff"] <= export.ATOL
    other = load(ckpt.path)  # the export is not of this model's weights
    with torch.no_grad():
        other.model.head.weight.mul_(2)
    assert not export.check(other, paths[0])["ok"]
    # the command line: exit code 0, then non-zero once the bar cannot be met
    argv = [str(ckpt.path), "--out", str(paths[0]), "--data-dir", str(image_folder / "test")]
    assert export.main(argv) == 0
    assert "OK" in capsys.readouterr().out
    monkeypatch.setattr(export, "ATOL", -1.0)
    assert export.main(argv) == 1
    assert "FAILED" in capsys.readouterr().out


def test_int8_exports(exported, image_folder, tmp_path):
    """Dynamic MatMul int8 for a ViT, static QDQ (calibrated on the train photos) for a CNN."""
    for family in ("scratch_vit", "test_cnn"):
        ckpt, _ = exported[family]
        paths = export.export(ckpt, tmp_path / f"{family}.int8.onnx", int8=True,
                              calibration_dir=image_folder / "train")
        props = export.read_metadata(paths[0])
        assert props["int8"] == "1"
        ops = {n.op_type for n in __import__("onnx").load(str(paths[0])).graph.node}
        assert ("DynamicQuantizeLinear" in ops or "MatMulInteger" in ops) if family == "scratch_vit" \
            else "QuantizeLinear" in ops, ops
        r = export.check(ckpt, paths[0], image_folder / "test")
        assert r["int8"] and 0 < r["max_abs_logit_diff"] < 1.0
