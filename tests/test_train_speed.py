"""The faster trainer (issue 23) learns the same function: eval splits transformed once give the slow
path's tensors, the ONNX Runtime teacher gives PyTorch's logits and feature maps, --eval-every keeps the
last epoch evaluated and selects among evaluated epochs only, and the run reports its images/s."""
import json
import logging

import pytest
import torch
from conftest import CLASSES, TINY_ARCH

from vit.data.datasets import ImageDataset, eval_transform, list_images
from vit.models import checkpoint, factory
from vit.train import cli
from vit.train.distill import load_teacher
from vit.train.ort_teacher import pick_engine
from vit.train.prepare import transformed_once

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


def test_eval_splits_transformed_once_give_the_slow_paths_tensors(image_folder, tiny_checkpoints):
    samples, _ = list_images(image_folder / "test")
    pp = factory.load(tiny_checkpoints["scratch_vit"]).meta["preprocessing"]
    slow = ImageDataset(samples, eval_transform(pp))
    fast = transformed_once(slow)
    assert len(fast) == len(slow) == 6
    for i in range(len(slow)):
        (x, y), (xf, yf) = slow[i], fast[i]
        assert torch.equal(x, xf) and y == int(yf)


def test_the_onnxruntime_teacher_gives_pytorchs_logits_and_features(tiny_checkpoints):
    torch.manual_seed(0)
    teacher = load_teacher(str(tiny_checkpoints["effnet"]), CLASSES, "cpu", 64)
    x = torch.rand(3, 3, 64, 64)  # an unnormalised [0, 1] batch, as the student sees it
    logits, feats = teacher.logits_and_features(x, 3)
    teacher.use_onnxruntime(3, threads=1)
    ort_logits, ort_feats = teacher.logits_and_features(x, 3)
    assert teacher.engine == "onnxruntime" and ort_feats.shape == feats.shape
    assert torch.allclose(ort_logits, logits, atol=1e-4) and torch.allclose(ort_feats, feats, atol=1e-4)
    assert torch.allclose(teacher.logits(x), logits, atol=1e-4)


def test_pick_engine():
    assert pick_engine("auto", "cpu") == "onnxruntime" and pick_engine("auto", "cuda:0") == "torch"
    assert pick_engine("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="unknown teacher engine"):
        pick_engine("tensorrt", "cpu")


def test_eval_every_evaluates_the_last_epoch_and_selects_among_evaluated_ones(tmp_path, image_folder, caplog):
    caplog.set_level(logging.INFO, logger="vit.train")
    out = tmp_path / "e.safetensors"
    argv = ["--model", "scratch_vit", "--arch", json.dumps(TINY_ARCH["scratch_vit"]), "--data-dir", str(image_folder),
            "--batch-size", "4", "--val-fraction", "0.25", "--workers", "0", "--fp32", "--epochs", "5",
            "--eval-every", "2", "--ema", "--out", str(out)]
    assert cli.main(argv) == 0
    meta = checkpoint.read_meta(out)
    evaluated = [row["epoch"] for row in meta["history"] if "val_loss" in row]
    assert evaluated == [row["epoch"] for row in meta["history"] if "ema_test_acc" in row] == [2, 4, 5]
    assert meta["recipe"]["selected_epoch"] in evaluated and meta["recipe"]["eval_every"] == 2
    assert all(row["images_per_s"] > 0 for row in meta["history"])
    assert "5 epochs, 40 images in" in caplog.text and "images/s overall" in caplog.text  # 2 full batches of 4 an epoch


def test_an_onnxruntime_teacher_without_onnxruntime_is_one_line_and_exit_code_2(tmp_path, image_folder, tiny_checkpoints,
                                                                                monkeypatch, capsys):
    from vit.train import config
    monkeypatch.setattr(config, "onnxruntime_available", lambda: False)
    argv = ["--model", "scratch_vit", "--data-dir", str(image_folder), "--out", str(tmp_path / "x.safetensors"),
            "--teacher", str(tiny_checkpoints["effnet"]), "--teacher-engine", "onnxruntime"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "onnxruntime is not installed" in err and len(err.splitlines()) == 1
