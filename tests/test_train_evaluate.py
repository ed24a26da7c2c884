"""One-epoch training runs on a tiny generated ImageFolder, read back by vit.train.evaluate and the Predictor."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import CLASSES, TINY_ARCH, make_image

from vit.models import checkpoint, factory
from vit.serve.predictor import Predictor
from vit.train import cli, config, distill, evaluate


def run_train(folder, out, family, *extra):
    argv = ["--model", family, "--arch", json.dumps(TINY_ARCH[family]), "--data-dir", str(folder),
            "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--workers", "0", "--out", str(out), *extra]
    assert cli.main(argv) == 0
    return out


@pytest.mark.parametrize("family, extra", [
    ("scratch_vit", ["--mixup", "0.8", "--cutmix", "1.0"]),
    ("timm_vit", ["--pretrained", "lite0-imagenet", "--freeze-epochs", "1"]),
    ("effnet", ["--pretrained", "none", "--augment", "light"]),
])
@pytest.mark.slow
def test_one_epoch_writes_a_complete_checkpoint(tmp_path, image_folder, family, extra):
    out = run_train(image_folder, tmp_path / f"{family}.safetensors", family, *extra)
    assert out.with_suffix(".png").stat().st_size > 0
    ckpt = factory.load(out)
    meta = ckpt.meta
    assert meta["family"] == family and meta["class_names"] == CLASSES
    assert meta["recipe"]["epochs"] == 1 and meta["recipe"]["n_train"] == 9 and meta["recipe"]["n_val"] == 3
    assert meta["command"].startswith("python -m vit.train --model " + family)
    assert set(meta["metrics"]) == {"val", "test"} and meta["metrics"]["test"]["n_images"] == 6
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"} <= set(meta["history"][0])
    assert meta["init"]["weights"] == ("imagenet (CNN stem only)" if family == "timm_vit" else "random")

    # vit.train.evaluate reproduces the test accuracy written in the metadata
    result = subprocess.run([sys.executable, "-m", "vit.train.evaluate", str(out), "--data-dir", str(image_folder), "--json"],
                            capture_output=True, text=True, check=True)
    metrics = json.loads(result.stdout)
    assert {"accuracy", "n_images", "per_class_accuracy", "confusion_matrix", "class_names"} <= set(metrics)
    assert metrics["n_images"] == 6 and metrics["class_names"] == CLASSES
    assert metrics["accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])
    assert sum(map(sum, metrics["confusion_matrix"])) == 6

    # and the Python API serves it
    probs = Predictor(ckpt).predict(make_image(99))
    assert list(probs) != [] and set(probs) == set(CLASSES) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_distillation_from_a_teacher_checkpoint(tmp_path, image_folder, tiny_checkpoints):
    out = run_train(image_folder, tmp_path / "student.safetensors", "scratch_vit",
                    "--teacher", str(tiny_checkpoints["effnet"]), "--distill", "soft", "--distill-temperature", "2")
    d = checkpoint.read_meta(out)["recipe"]["distillation"]
    assert d["teacher"] == str(tiny_checkpoints["effnet"]) and d["kind"] == "soft" and d["teacher_family"] == "effnet"


def test_distill_loss_kinds():
    s = torch.tensor([[2.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 3.0, 0.0]])
    assert distill.distill_loss(s, t, "hard", 1.0) == pytest.approx(torch.nn.functional.cross_entropy(s, torch.tensor([1])))
    assert distill.distill_loss(t, t, "soft", 2.0).abs() < 1e-6
    assert distill.distill_loss(s, t, "soft", 2.0) > 0


def test_schedule_warms_up_then_decays_to_the_floor_with_the_backbone_scale():
    from vit.train.loop import make_optimizer, make_scheduler
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    cfg = config.TrainConfig(model="scratch_vit", out="x", epochs=10, lr=1.0, min_lr=0.01, warmup_epochs=1,
                            backbone_lr_scale=0.5)
    opt = make_optimizer(model, cfg, lambda name: name.startswith("0."))
    sched = make_scheduler(opt, cfg, updates_per_epoch=10)
    lrs = []
    for update in range(101):
        sched.step_update(update)
        lrs.append({g["lr_scale"]: g["lr"] for g in opt.param_groups})
    assert lrs[0][1.0] == pytest.approx(0.01) and lrs[10][1.0] == pytest.approx(1.0) and lrs[10][0.5] == 0.5
    new = [lr[1.0] for lr in lrs]
    assert all(a <= b for a, b in zip(new[:10], new[1:11])) and all(a >= b for a, b in zip(new[10:], new[11:]))
    assert new[-1] == pytest.approx(0.01, abs=1e-6)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, cfg.weight_decay}  # biases: none


@pytest.mark.slow
def test_help_works():
    for module in ("vit.train", "vit.train.evaluate"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
        assert "usage: python -m " + module in out.stdout


def test_evaluate_reports_bad_inputs(tmp_path, image_folder, capsys):
    assert evaluate.main([str(tmp_path / "missing.safetensors"), "--data-dir", str(image_folder)]) == 2
    assert "missing.safetensors: no such checkpoint file" in capsys.readouterr().err


def test_teacher_sees_crops_at_the_size_asked(tmp_path, image_folder, tiny_checkpoints):
    teacher = distill.load_teacher(str(tiny_checkpoints["effnet"]), CLASSES, "cpu", size=48)
    assert teacher.normalize.size == 48
    assert teacher.logits(torch.rand(2, 3, 96, 96)).shape == (2, 3)
    out = run_train(image_folder, tmp_path / "s.safetensors", "scratch_vit",
                    "--teacher", str(tiny_checkpoints["effnet"]), "--teacher-size", "48")
    assert checkpoint.read_meta(out)["recipe"]["distillation"]["teacher_input_px"] == 48
