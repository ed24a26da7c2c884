"""The served model set (vit/serve/model_set.py): metadata at once, models built behind the page, clear errors."""
import shutil

import pytest
from conftest import FAMILIES, make_image

from vit.app import ui
from vit.serve import model_set


def test_unloadable_checkpoints_are_reported_not_fatal(tmp_path, tiny_checkpoints):
    truncated = tmp_path / "timm_vit.safetensors"
    truncated.write_bytes(tiny_checkpoints["timm_vit"].read_bytes()[:300])
    (tmp_path / "notes.safetensors").write_text("not a checkpoint")
    shutil.copy(tiny_checkpoints["scratch_vit"], tmp_path / "scratch_vit.safetensors")
    models = model_set.ModelSet(model_set.checkpoint_paths(tmp_path)).start()
    assert models.ids == ["scratch_vit", "notes", "timm_vit"]  # registry order, then unreadable ones by name
    assert models.wait(120) and set(models.models) == {"scratch_vit"}
    assert "timm_vit.safetensors" in models.errors["timm_vit"] and "not a safetensors file" in models.errors["notes"]
    with pytest.raises(model_set.ModelError, match="notes is unavailable: .*notes.safetensors"):
        models.get("notes")
    with pytest.raises(model_set.ModelError, match=r"unknown model 'effnet'; choose one of \['scratch_vit', 'notes', "):
        models.get("effnet")
    rows = ui.comparison_rows(models)
    assert rows[2][1].startswith("unavailable") and rows[0][4] == "50.0%"
    # the ONNX export behind the served model finishes here, not during the next test (whose warning
    # capture it would write into)
    assert all(p.wait_for_engine(120) for p in models.models.values())


def test_metadata_is_read_at_once_and_models_load_behind(tiny_checkpoints, monkeypatch):
    """Titles, classes and the table come from the headers before any model is built; get() waits."""
    from vit.serve import predictor

    built = []
    monkeypatch.setattr(predictor.Predictor, "__init__", lambda self, *a, **k: built.append(self) or
                        setattr(self, "ok", True))
    monkeypatch.setattr(predictor.Predictor, "warm", lambda self: None)  # nothing to warm in these stubs
    models = model_set.ModelSet(tiny_checkpoints)
    assert not built and models.titles == {"scratch_vit": "Scratch ViT", "timm_vit": "Hybrid ViT (timm)",
                                           "effnet": "EfficientNet-Lite0"}
    assert [models.status(i) for i in models.ids] == ["loading"] * 3 and models.class_names() == ["pizza", "steak", "sushi"]
    with pytest.raises(model_set.ModelError, match="Scratch ViT is still loading"):
        models.get("scratch_vit", timeout=0)
    assert len(ui.comparison_rows(models)) == 3
    models.start()
    assert models.get("effnet").ok and models.wait(60) and len(built) == 3


def test_titles_are_unique(tmp_path, tiny_checkpoints):
    for name in ("a", "b"):
        shutil.copy(tiny_checkpoints["effnet"], tmp_path / f"{name}.safetensors")
    assert model_set.ModelSet(model_set.checkpoint_paths(tmp_path)).titles == {"a": "EfficientNet-Lite0 (a)",
                                                                "b": "EfficientNet-Lite0 (b)"}


def test_checkpoint_dir_comes_from_the_environment(monkeypatch, tmp_path, tiny_checkpoints):
    for f in FAMILIES:
        shutil.copy(tiny_checkpoints[f], tmp_path / f"{f}.safetensors")
    (tmp_path / "readme.txt").write_text("not a checkpoint")
    monkeypatch.setenv("FOODVISION_CHECKPOINTS", str(tmp_path))
    assert model_set.checkpoint_paths() == {f: tmp_path / f"{f}.safetensors" for f in sorted(FAMILIES)}


def test_optimisations_come_from_a_spec_or_the_environment(monkeypatch, tiny_checkpoints):
    assert model_set.optimisations("scratch_vit=int8, effnet=channels_last") == {"scratch_vit": "int8",
                                                                         "effnet": "channels_last"}
    monkeypatch.setenv("FOODVISION_OPTIMISE", "timm_vit=channels_last")
    assert model_set.optimisations() == {"timm_vit": "channels_last"}
    monkeypatch.delenv("FOODVISION_OPTIMISE")
    assert model_set.optimisations() == {}
    for bad in ("resnet=int8", "effnet=fast", "effnet"):
        with pytest.raises(ValueError, match="bad optimisation"):
            model_set.optimisations(bad, ids=FAMILIES)
    models = model_set.ModelSet({"scratch_vit": tiny_checkpoints["scratch_vit"]}, {"scratch_vit": "int8"}).load()
    p = models.get("scratch_vit")
    assert p.optimisation == "int8" and sum(p.predict(make_image(3)).values()) == pytest.approx(1.0, abs=1e-5)
    assert p.explain(make_image(3), "attention").maps  # attention maps still come out of the quantised model


def test_a_model_asked_for_is_built_next(tiny_checkpoints, monkeypatch):
    """The first request should not wait for every model: the one it asks for is built first."""
    from vit.serve import predictor

    order = []
    monkeypatch.setattr(predictor.Predictor, "__init__", lambda self, ckpt, *a: order.append(ckpt.path.stem))
    monkeypatch.setattr(predictor.Predictor, "warm", lambda self: None)  # nothing to warm in these stubs
    models = model_set.ModelSet(tiny_checkpoints)
    with pytest.raises(model_set.ModelError, match="still loading"):
        models.get("effnet", timeout=0)  # asked for before loading starts
    models.start(first="timm_vit")
    assert models.wait(120) and order == ["effnet", "timm_vit", "scratch_vit"]
