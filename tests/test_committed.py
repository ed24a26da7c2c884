"""The committed checkpoints reproduce the test accuracy recorded in their own metadata."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA, markdown_rows
from torch.utils.data import DataLoader

from vit.app import examples
from vit.data.datasets import ImageDataset, eval_transform, list_images
from vit.models import factory
from vit.runtime import export
from vit.train.evaluate import run_eval

TEST_DIR = SHARED_DATA / "pizza_steak_sushi" / "test"
COMMITTED = sorted((ROOT / "checkpoints").glob("*.safetensors"))


@pytest.mark.slow
@pytest.mark.skipif(not TEST_DIR.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_checkpoint_reproduces_its_recorded_test_accuracy(path: Path):
    ckpt = factory.load(path)
    recorded = ckpt.meta["metrics"]["test"]
    assert Path(ckpt.meta["recipe"]["test_dir"]).parts[-2:] == TEST_DIR.parts[-2:]
    samples, classes = list_images(TEST_DIR)
    assert classes == ckpt.class_names
    loader = DataLoader(ImageDataset(samples, eval_transform(ckpt.preprocessing.to_dict())), batch_size=32)
    m = run_eval(ckpt.model, loader, ckpt.class_names)
    assert m["n_images"] == recorded["n_images"]
    assert m["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.5 / m["n_images"])
    assert m["confusion_matrix"] == recorded["confusion_matrix"]


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_checkpoints_ship_current_onnx_exports(path: Path):
    """A fresh clone (a Space's every start) answers on ONNX Runtime at once, without exporting first:
    each checkpoint's export, written from this very file, is committed beside it (after a retrain:
    `python -m vit.runtime.export checkpoints/NAME.safetensors`)."""
    onnx_path = export.default_path(path)
    assert onnx_path.is_file(), f"{onnx_path} is missing: run python -m vit.runtime.export {path}"
    assert export.is_current(onnx_path, path), f"{onnx_path} is stale: run python -m vit.runtime.export {path}"


@pytest.mark.slow
def test_examples_readme_shows_what_the_committed_checkpoints_predict():
    """examples/README.md tells a visitor what each model answers for each photo; after a retrain
    `python -m vit.app.examples --check` prints the new answers, and this fails until the table has them."""
    documented = markdown_rows((ROOT / "examples" / "README.md").read_text().splitlines())
    measured = markdown_rows(examples.check([ROOT / "checkpoints" / f"{n}.safetensors" for n in examples.ORDER]))
    assert measured.keys() == documented.keys()
    for name, (truth, *predicted) in measured.items():
        source, documented_truth, *rest = documented[name]
        assert documented_truth == truth, name
        for said, got in zip(rest, predicted):  # "sushi 0.47 ✗": the class and mark exactly, the probability to 0.01
            (said_class, said_p, *said_mark), (got_class, got_p, *got_mark) = said.split(), got.split()
            assert (said_class, said_mark) == (got_class, got_mark), f"{name}: README {said!r}, measured {got!r}"
            assert float(said_p) == pytest.approx(float(got_p), abs=0.011), f"{name}: README {said!r}, measured {got!r}"
