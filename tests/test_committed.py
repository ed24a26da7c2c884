"""The committed checkpoints reproduce the test accuracy recorded in their own metadata."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from conftest import ROOT, SHARED_DATA
from vit import checkpoint
from vit.data import ImageDataset, eval_transform, list_images
from vit.evaluate import run_eval

TEST_DIR = SHARED_DATA / "pizza_steak_sushi" / "test"
COMMITTED = sorted((ROOT / "checkpoints").glob("*.safetensors"))


@pytest.mark.skipif(not TEST_DIR.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_checkpoint_reproduces_its_recorded_test_accuracy(path: Path):
    ckpt = checkpoint.load(path)
    recorded = ckpt.meta["metrics"]["test"]
    assert Path(ckpt.meta["recipe"]["test_dir"]).parts[-2:] == TEST_DIR.parts[-2:]
    samples, classes = list_images(TEST_DIR)
    assert classes == ckpt.class_names
    loader = DataLoader(ImageDataset(samples, eval_transform(ckpt.preprocessing.to_dict())), batch_size=32)
    m = run_eval(ckpt.model, loader, ckpt.class_names)
    assert m["n_images"] == recorded["n_images"]
    assert m["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.5 / m["n_images"])
    assert m["confusion_matrix"] == recorded["confusion_matrix"]
