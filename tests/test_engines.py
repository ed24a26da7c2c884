"""vit.runtime.engines and vit.runtime.choice: auto picks ONNX Runtime when it can and falls back to PyTorch when it cannot, the
environment chooses, a stale export is replaced, concurrent forwards stay independent."""
import logging
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import CLASSES
from PIL import Image

from vit.models import checkpoint, factory
from vit.models.factory import load
from vit.runtime import engines, export
from vit.runtime.choice import make_engine
from vit.runtime.engines import EngineError, OrtEngine, TorchEngine

pytest.importorskip("onnxruntime")


@pytest.fixture
def ckpt(tiny_checkpoints, tmp_path, monkeypatch):
    """A tiny scratch ViT checkpoint in a folder of its own (exports land beside it)."""
    monkeypatch.delenv(engines.ENV, raising=False)
    return load(shutil.copy(tiny_checkpoints["scratch_vit"], tmp_path / "scratch_vit.safetensors"))


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_auto_picks_onnxruntime_and_exports_beside_the_checkpoint(ckpt):
    engine = make_engine(ckpt)
    assert isinstance(engine, OrtEngine) and engine.name == "onnxruntime"
    assert engine.path == ckpt.path.with_suffix(".onnx") and export.is_current(engine.path, ckpt.path)
    x = images(5)
    with torch.inference_mode():
        ref_logits, ref_maps = ckpt.model.forward_with_attention(x)
    assert torch.allclose(engine.forward(x), ref_logits, atol=export.ATOL)
    logits, maps = engine.forward_attention(x)
    assert torch.allclose(logits, ref_logits, atol=export.ATOL)
    assert all(torch.allclose(m, r, atol=export.ATOL) for m, r in zip(maps, ref_maps))
    assert torch.allclose(engine.forward_batches(x, batch_size=2), ref_logits, atol=export.ATOL)
    mtime = engine.path.stat().st_mtime_ns
    assert make_engine(ckpt).path == engine.path and engine.path.stat().st_mtime_ns == mtime  # reused


def test_a_stale_export_is_replaced(ckpt):
    first = make_engine(ckpt, "onnxruntime")
    with torch.no_grad():
        ckpt.model.head.bias += 1  # retrained: new weights under the same file name
    checkpoint.save(ckpt.path, ckpt.model, ckpt.meta)
    ckpt = load(ckpt.path)
    assert not export.is_current(first.path, ckpt.path)
    engine = make_engine(ckpt, "onnxruntime")
    assert engine.source_sha256 == export.sha256(ckpt.path) != first.source_sha256
    x = images(2)
    with torch.inference_mode():
        assert torch.allclose(engine.forward(x), ckpt.model(x), atol=export.ATOL)


def test_falls_back_to_torch_without_onnxruntime(ckpt, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with caplog.at_level(logging.INFO, logger="vit.runtime.choice"):
        engine = make_engine(ckpt)
    assert isinstance(engine, TorchEngine) and engine.name == "torch"
    assert [r.message for r in caplog.records if "PyTorch eager" in r.message and "onnxruntime" in r.message]
    assert not ckpt.path.with_suffix(".onnx").exists()
    with pytest.raises(EngineError, match="onnxruntime is not installed"):
        make_engine(ckpt, "onnxruntime")
    logits, maps = engine.forward_attention(images(2))
    assert logits.shape == (2, len(CLASSES)) and len(maps) == len(ckpt.model.blocks)


def test_falls_back_to_torch_when_the_export_fails(ckpt, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")
    monkeypatch.setattr(export, "export", broken)
    with caplog.at_level(logging.INFO, logger="vit.runtime.choice"):
        assert make_engine(ckpt).name == "torch"
    assert any("exporter exploded" in r.message for r in caplog.records)
    with pytest.raises(EngineError, match="exporter exploded"):
        make_engine(ckpt, "onnxruntime")


def test_environment_chooses_when_the_caller_does_not(ckpt, monkeypatch):
    monkeypatch.setenv(engines.ENV, "torch")
    assert make_engine(ckpt).name == "torch"
    assert make_engine(ckpt, "onnxruntime").name == "onnxruntime"  # an explicit choice wins
    monkeypatch.setenv(engines.ENV, "onnxruntime")
    assert make_engine(ckpt).name == "onnxruntime"
    monkeypatch.setenv(engines.ENV, "tensorrt")
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        make_engine(ckpt)


def test_a_read_only_checkpoint_folder_exports_to_the_cache(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_access = engines.os.access
    monkeypatch.setattr(engines.os, "access", lambda p, mode: False if Path(p) == ckpt.path.parent
                        else real_access(p, mode))
    engine = make_engine(ckpt, "onnxruntime")
    assert engine.path.parent == tmp_path / "cache" / "foodvision" / "onnx"
    assert export.sha256(ckpt.path)[:16] in engine.path.name
    assert make_engine(ckpt, "onnxruntime").path == engine.path  # found there next time


def test_concurrent_forwards_equal_sequential(ckpt):
    engine = make_engine(ckpt, "onnxruntime")
    inputs = [images(1 + i % 3, seed=i) for i in range(16)]
    sequential = [engine.forward(x) for x in inputs]
    sequential_maps = [engine.forward_attention(x)[1] for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(engine.forward, inputs))
        concurrent_maps = list(pool.map(lambda x: engine.forward_attention(x)[1], inputs))
    assert all(torch.equal(a, b) for a, b in zip(sequential, concurrent))
    assert all(torch.equal(a, b) for s, c in zip(sequential_maps, concurrent_maps) for a, b in zip(s, c))


def test_cnn_engines_have_no_attention_maps(tiny_checkpoints):
    ckpt = load(tiny_checkpoints["effnet"])
    engine = make_engine(ckpt, "torch")
    assert not engine.attention  # the registry says so: callers pick Grad-CAM without trying
    with pytest.raises(TypeError, match="torch engine: this model has no attention maps"):
        engine.forward_attention(torch.randn(1, 3, 224, 224))


def test_a_current_export_serves_before_the_model_is_built(ckpt, monkeypatch):
    """With an export on disk, a Predictor answers on ONNX Runtime at once; the PyTorch model (what
    imports timm for the timm families) is built only when asked (`warm`, a gradient method)."""
    from vit.serve.predictor import Predictor

    make_engine(ckpt, "onnxruntime")  # the export, written beside the checkpoint
    calls, real_build = [], factory._model

    def counted_build(path, meta):
        calls.append(path)
        return real_build(path, meta)

    monkeypatch.setattr(factory, "_model", counted_build)
    p = Predictor(load(ckpt.path, lazy=True))
    assert p.engine.name == "onnxruntime" and p.wait_for_engine(0) == "onnxruntime"
    photo = Image.effect_mandelbrot((48, 40), (-2, -1.2, 1, 1.2), 40).convert("RGB")
    result = p.answer(photo)
    assert result.engine == "onnxruntime" and not p.ckpt.built and calls == []
    p.warm()
    assert p.model is p.ckpt.model and p.ckpt.built and calls == [ckpt.path]  # built once
    reference = Predictor(load(ckpt.path), engine="torch").answer(photo)
    assert result.probs == pytest.approx(reference.probs, abs=1e-5)


def test_without_a_current_export_the_predictor_starts_on_torch(ckpt):
    from vit.serve.predictor import Predictor

    p = Predictor(load(ckpt.path, lazy=True))
    assert p.ckpt.built  # the torch engine needed the model at once
    assert p.wait_for_engine(120) == "onnxruntime"  # then the export was written behind it
