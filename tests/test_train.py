"""The trainer's behaviour, each test able to fail (issue 9): overfitting, early stopping, freezing,
distillation, resume, the atomic state file, bad arguments, and DDP over two CPU processes."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import CLASSES, TINY_ARCH, make_image, tiny_checkpoint
from safetensors.torch import load_file

from vit.models import checkpoint, factory
from vit.models.scratch_vit import VisionTransformer, preset
from vit.train import cli, evaluate, loop, state
from vit.train.config import TrainConfig
from vit.train.distill import FeatureImitation, Normalize

TINY = json.dumps(TINY_ARCH["scratch_vit"])


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


def train_cli(folder, out, *extra, model="scratch_vit", arch=TINY):
    argv = ["--model", model, "--arch", arch, "--data-dir", str(folder), "--batch-size", "4",
            "--val-fraction", "0.25", "--workers", "0", "--fp32", "--out", str(out), *extra]
    if "--epochs" not in extra:
        argv += ["--epochs", "1"]
    assert cli.main(argv) == 0
    return out


def weights(path):
    """The model's tensors in a checkpoint file (not the OOD gate's trust.* state that vit.train adds)."""
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith(checkpoint.EXTRA_PREFIX)}


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = VisionTransformer(preset("vit_test_p8_32"))
    cfg = TrainConfig(model="scratch_vit", out="unused", epochs=60, lr=3e-3, warmup_epochs=0, label_smoothing=0.0,
                      weight_decay=0.0)
    opt = loop.make_optimizer(model, cfg, lambda name: False)
    pp = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
    run = loop.Run(cfg, model, opt, loop.make_scheduler(opt, cfg, 1), 3, Normalize(pp))
    run.scheduler.step_update(0)
    batch = [(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))]
    losses = [loop.train_one_epoch(run, batch)["train_loss"] for _ in range(cfg.epochs)]
    assert losses[-1] < losses[0] / 20, losses[::10]


def test_early_stopping_keeps_the_best_epoch(tmp_path, image_folder, monkeypatch):
    per_epoch = []  # the model's weights after each epoch, as the state file gets them
    save = loop.save_state
    monkeypatch.setattr(loop, "save_state", lambda run, *a, **k: (per_epoch.append(loop.snapshot(run.model)),
                                                                   save(run, *a, **k)))
    out = train_cli(image_folder, tmp_path / "s.safetensors", "--epochs", "8", "--patience", "2", "--lr", "0.05",
                    "--warmup-epochs", "0")
    meta = checkpoint.read_meta(out)
    r, history = meta["recipe"], meta["history"]
    best = min(history, key=lambda row: row["val_loss"])["epoch"]
    assert r["selected_epoch"] == best < r["epochs_run"] == best + 2  # stopped 2 epochs after the best
    assert same_weights(weights(out), per_epoch[best - 1])


def test_a_run_ends_with_the_bank_of_its_own_training_photos(tmp_path, image_folder):
    """vit.train's last step writes the nearest-photo bank (vit.explore) of the run's own split, from the weights
    the file holds: accepted by the served checkpoint (its gate written after it changes no weight)."""
    from vit.explore.bank import load_bank
    out = train_cli(image_folder, tmp_path / "b.safetensors")
    bank, why = load_bank(out, CLASSES)
    assert why is None, why
    assert len(bank.photos) == 9 and len(bank.meta["reference"]["nearest"]) == 3  # 12 photos, 1 per class held out
    assert all(p.startswith(f"{image_folder.name}/train/") for p in bank.photos) and bank.dim == 32


def test_freeze_epochs_leave_the_pretrained_stem_unchanged(tmp_path, image_folder):
    from vit.models.zoo import lite0_imagenet_state_dict
    out = train_cli(image_folder, tmp_path / "t.safetensors", "--pretrained", "lite0-imagenet",
                    "--freeze-epochs", "1", "--lr", "0.01", model="timm_vit", arch=json.dumps(TINY_ARCH["timm_vit"]))
    w, lite0 = weights(out), lite0_imagenet_state_dict()
    stem = {k: v for k, v in w.items() if k.startswith("patch_embed.backbone.") and not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked"))}
    assert stem and all(torch.equal(v, lite0[k.removeprefix("patch_embed.backbone.")]) for k, v in stem.items())
    assert not torch.equal(w["head.bias"], torch.zeros_like(w["head.bias"]))  # the new weights did train


def constant_teacher(path, label: int):
    """A checkpoint that predicts `label` for every image."""
    torch.manual_seed(0)
    tiny_checkpoint(path, "scratch_vit")
    ckpt = factory.load(path)
    with torch.no_grad():
        ckpt.model.head.weight.zero_()
        ckpt.model.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), 3) * 10.0)
    return checkpoint.save(path, ckpt.model, ckpt.meta)


def test_distillation_uses_the_teachers_logits(tmp_path, image_folder):
    teacher = constant_teacher(tmp_path / "sushi_teacher.safetensors", 2)
    common = ["--epochs", "2", "--repeats", "4", "--lr", "0.01", "--warmup-epochs", "0", "--label-smoothing", "0"]
    plain = train_cli(image_folder, tmp_path / "plain.safetensors", *common)
    taught = train_cli(image_folder, tmp_path / "taught.safetensors", *common, "--teacher", str(teacher),
                       "--distill-alpha", "1.0")
    assert not same_weights(weights(plain), weights(taught))
    # with only the teacher's term, the student learns to say "sushi" to everything
    confusion = checkpoint.read_meta(taught)["metrics"]["test"]["confusion_matrix"]
    assert [row[2] for row in confusion] == [sum(row) for row in confusion]


def test_feature_imitation_targets_follow_the_token_grid():
    """The teacher's map, resized to the grid and standardised, is what the patch tokens (after the prefix,
    row-major) regress: tokens equal to it through an identity map cost nothing, transposed ones do."""
    torch.manual_seed(0)
    head = FeatureImitation(dim=6, channels=6, grid=4, prefix=2, stage=0)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(6))
        head.proj.bias.zero_()
    feats = torch.randn(2, 6, 4, 4)
    target = torch.nn.functional.layer_norm(feats.flatten(2).transpose(1, 2), (6,))  # (B, 16, 6)
    tokens = torch.cat([torch.randn(2, 2, 6), target], dim=1)
    assert head.loss(tokens, feats).item() < 1e-6
    transposed = torch.nn.functional.layer_norm(feats.transpose(2, 3).flatten(2).transpose(1, 2), (6,))
    assert head.loss(torch.cat([tokens[:, :2], transposed], dim=1), feats).item() > 0.1


def test_feature_imitation_trains_resumes_and_leaves_a_plain_vit(tmp_path, image_folder, tiny_checkpoints):
    # warm-up over both epochs: the 1-epoch run's schedule then equals the 2-epoch run's first epoch
    common = ["--teacher", str(tiny_checkpoints["effnet"]), "--lr", "0.01", "--warmup-epochs", "2"]
    logits_only = train_cli(image_folder, tmp_path / "kd.safetensors", "--epochs", "2", *common)
    guided = train_cli(image_folder, tmp_path / "guided.safetensors", "--epochs", "2", *common,
                       "--feature-distill", "1.0")
    assert not same_weights(weights(logits_only), weights(guided))
    assert weights(guided).keys() == weights(logits_only).keys()  # the imitation head is not in the checkpoint
    assert checkpoint.read_meta(guided)["recipe"]["feature_distill"] == 1.0
    out = tmp_path / "resumed.safetensors"
    train_cli(image_folder, out, "--epochs", "1", *common, "--feature-distill", "1.0")
    train_cli(image_folder, out, "--epochs", "2", "--resume", *common, "--feature-distill", "1.0")
    assert same_weights(weights(guided), weights(out))
    a, b = state.load(str(guided) + ".state.pt"), state.load(str(out) + ".state.pt")
    assert same_weights(a["imitation"], b["imitation"])


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, image_folder):
    common = ["--warmup-epochs", "2", "--mixup", "0.8", "--cutmix", "1.0", "--ema", "--ema-decay", "0.5", "--lr", "0.01"]
    straight = train_cli(image_folder, tmp_path / "a.safetensors", "--epochs", "2", *common)
    out = tmp_path / "b.safetensors"
    train_cli(image_folder, out, "--epochs", "1", *common)
    assert state.load(str(out) + ".state.pt")["epoch"] == 1
    train_cli(image_folder, out, "--epochs", "2", "--resume", *common)
    assert same_weights(weights(straight), weights(out))
    a, b = state.load(str(straight) + ".state.pt"), state.load(str(out) + ".state.pt")
    assert same_weights(a["model"], b["model"]) and same_weights(a["ema"], b["ema"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert checkpoint.read_meta(out)["recipe"]["resume"] is True


def test_a_crash_while_writing_the_state_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "run.safetensors.state.pt"
    state.save({"epoch": 1, "w": torch.ones(3)}, path)

    def crash(obj, f):  # half a file, then the process dies
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        state.save({"epoch": 2, "w": torch.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the partial temp file is gone ...
    s = state.load(path)  # ... and the previous state is whole
    assert s["epoch"] == 1 and torch.equal(s["w"], torch.ones(3))
    partial = tmp_path / "partial.pt"
    partial.write_bytes(b"PK\x03\x04 partial")
    with pytest.raises(ValueError, match="unreadable training state"):
        state.load(partial)


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--epochs", "-3"], "--epochs must be at least 1"),
    (["--data-dir", "/nonexistent/folder"], "/nonexistent/folder: no such folder"),
    (["--arch", '{"preset": "vit_nope"}'], "unknown preset 'vit_nope'"),
    (["--resume"], "no training state"),
])
def test_bad_arguments_are_one_line_and_exit_code_2(tmp_path, image_folder, capsys, extra, message):
    argv = ["--model", "scratch_vit", "--data-dir", str(image_folder), "--out", str(tmp_path / "x.safetensors"),
            "--workers", "0", *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_teacher_with_other_classes_and_an_unknown_family_exit_2(tmp_path, image_folder, capsys):
    teacher = factory.load(tiny_checkpoint(tmp_path / "t.safetensors", "scratch_vit"))
    teacher.meta["class_names"] = ["cat", "dog", "fish"]
    path = checkpoint.save(tmp_path / "other.safetensors", teacher.model, teacher.meta)
    argv = ["--model", "scratch_vit", "--arch", TINY, "--data-dir", str(image_folder), "--workers", "0",
            "--out", str(tmp_path / "x.safetensors"), "--teacher", str(path)]
    assert cli.main(argv) == 2
    assert "predicts ['cat', 'dog', 'fish'], the data has ['pizza', 'steak', 'sushi']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse's own error: usage, then one error line, code 2
        cli.main(["--model", "resnet", "--data-dir", str(image_folder), "--out", "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'resnet'" in err and "Traceback" not in err


def test_evaluate_rejects_a_folder_with_other_classes(tmp_path, tiny_checkpoints, capsys):
    for c in ("cat", "dog", "fish"):
        (tmp_path / "test" / c).mkdir(parents=True)
        make_image(0).save(tmp_path / "test" / c / "a.jpg")
    assert evaluate.main([str(tiny_checkpoints["scratch_vit"]), "--data-dir", str(tmp_path)]) == 2
    assert "has classes ['cat', 'dog', 'fish'], the checkpoint ['pizza', 'steak', 'sushi']" in capsys.readouterr().err


@pytest.mark.slow
def test_help_lists_the_new_options():
    import re
    out = subprocess.run([sys.executable, "-m", "vit.train", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--dataset", "--data-cache", "--resume", "--amp", "--ema", "--ema-decay", "--accum-steps",
                   "--compile"):
        assert re.search(rf"^  {option}\b", out, re.M), option  # an option's own help entry, not the prose
    assert "torchrun --nnodes" in out  # the multi-node command line


@pytest.mark.slow
def test_two_cpu_processes_train_on_disjoint_halves(tmp_path, image_folder):
    """torchrun, 2 processes, gloo: each rank trains on its own half; rank 0 writes a normal checkpoint."""
    args = ["--model", "scratch_vit", "--arch", TINY, "--data-dir", str(image_folder), "--epochs", "2",
            "--batch-size", "3", "--val-fraction", "0", "--workers", "0", "--fp32"]
    logs = tmp_path / "samples"
    logs.mkdir()
    env = {**os.environ, loop.SAMPLE_LOG_ENV: str(logs), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp.safetensors"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "vit.train", *args, "--out", str(out)], env=env, check=True, timeout=300,
                   cwd=os.path.dirname(os.path.dirname(__file__)))
    seen = {r: [json.loads(line) for line in (logs / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    for e in range(2):
        a, b = set(seen[0][e]["keys"]), set(seen[1][e]["keys"])
        assert len(a) == len(b) == 6 and not a & b and len(a | b) == 12  # disjoint halves of the 12 photos
    assert seen[0][0]["keys"] != seen[0][1]["keys"]  # set_epoch: a new shuffle each epoch
    ckpt = factory.load(out)
    assert ckpt.meta["recipe"]["world_size"] == 2 and ckpt.meta["metrics"]["test"]["n_images"] == 6
    assert ckpt.meta["history"][0]["test_acc"] * 6 == pytest.approx(round(ckpt.meta["history"][0]["test_acc"] * 6))
    assert not (tmp_path / "ddp.safetensors.state.pt").exists() or state.load(str(out) + ".state.pt")["world_size"] == 2
    single = tmp_path / "one.safetensors"
    assert cli.main([*args, "--out", str(single)]) == 0
    assert checkpoint.read_meta(single)["recipe"]["world_size"] == 1
    assert not same_weights(weights(out), weights(single))


def sgd_run(cfg, model):
    """A Run with plain SGD: its step is proportional to the gradient (Adam's first step is ~sign(g))."""
    opt = torch.optim.SGD([{"params": list(model.parameters()), "lr_scale": 1.0}], lr=cfg.lr)
    pp = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
    run = loop.Run(cfg, model, opt, loop.make_scheduler(opt, cfg, 1), 3, Normalize(pp))
    run.scheduler.step_update(0)
    return run


def test_gradient_accumulation_equals_one_big_batch():
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    models = []
    for accum, batches in ((1, [(x, y)]), (2, [(x[:2], y[:2]), (x[2:], y[2:])])):
        torch.manual_seed(0)
        model = VisionTransformer(preset("vit_test_p8_32"))
        cfg = TrainConfig(model="scratch_vit", out="unused", epochs=1, lr=0.1, warmup_epochs=0, accum_steps=accum,
                          label_smoothing=0.0)
        run = sgd_run(cfg, model)
        loop.train_one_epoch(run, batches)
        assert run.updates == 1
        models.append(model.state_dict())
    assert all(torch.allclose(models[0][k], models[1][k], atol=1e-6) for k in models[0])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpu_options_are_harmless_on_cpu(tmp_path, image_folder, caplog, amp):
    import logging
    caplog.set_level(logging.INFO, logger="vit.train")
    out = train_cli(image_folder, tmp_path / "g.safetensors", "--amp", amp, "--compile", "--accum-steps", "2",
                    "--ema", "--data-cache", "stream")
    meta = checkpoint.read_meta(out)
    assert (meta["recipe"]["amp"], meta["recipe"]["accum_steps"], meta["recipe"]["data_cache"]) == (amp, 2, "stream")
    assert meta["history"][0]["images_per_s"] > 0 and "images/s" in caplog.text
    assert "--compile ignored on cpu" in caplog.text
    assert all(torch.isfinite(v).all() for v in weights(out).values())


def test_init_starts_from_a_checkpoints_weights_and_records_the_chain(tmp_path, image_folder, capsys):
    first = train_cli(image_folder, tmp_path / "first.safetensors", "--lr", "0.01", "--repeats", "2")
    # --lr 0 and no warm-up: the weights cannot move, so the new run ends where --init began it
    second = train_cli(image_folder, tmp_path / "second.safetensors", "--init", str(first), "--lr", "0",
                       "--min-lr", "0", "--warmup-epochs", "0", "--seed", "7")
    assert same_weights(weights(first), weights(second))
    init = checkpoint.read_meta(second)["init"]
    assert init["weights"] == "checkpoint" and str(first) in init["source"]
    assert init["checkpoint_init"]["weights"] == "random"  # the chain: first had started from random weights
    assert (init["checkpoint_epochs"], init["checkpoint_repeats"]) == (1, 2)  # ... for 1 epoch of 2 passes
    fresh = train_cli(image_folder, tmp_path / "fresh.safetensors", "--lr", "0", "--min-lr", "0",
                      "--warmup-epochs", "0", "--seed", "7")
    assert not same_weights(weights(first), weights(fresh))  # without --init: its own random start
    other = json.dumps({**TINY_ARCH["scratch_vit"], "depth": 3})  # the preset has 2 blocks
    argv = ["--model", "scratch_vit", "--arch", other, "--data-dir", str(image_folder), "--workers", "0",
            "--out", str(tmp_path / "x.safetensors"), "--init", str(first)]
    assert cli.main(argv) == 2
    assert "differs from the checkpoint's architecture" in capsys.readouterr().err
    assert cli.main(argv[:-1] + [str(tmp_path / "missing.safetensors")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err


def test_feature_imitation_probes_the_teacher_on_its_device(tiny_checkpoints):
    """The probe that picks the teacher's stage runs where the teacher is (the GPU run broke on a CPU
    probe of a CUDA teacher): here the 'meta' device stands in for a GPU the tests do not have."""
    from vit.train.distill import load_teacher, pick_stage

    classes = factory.load(tiny_checkpoints["effnet"]).class_names
    on_cpu = load_teacher(str(tiny_checkpoints["effnet"]), classes, "cpu", 64)
    elsewhere = load_teacher(str(tiny_checkpoints["effnet"]), classes, "meta", 64)
    assert pick_stage(elsewhere, grid=4) == pick_stage(on_cpu, grid=4)


def test_training_on_a_cpu_runs_the_explicit_attention(tmp_path, image_folder, monkeypatch):
    """On a CPU the trainer turns the fused attention kernel off (its backward was the slowest part of a
    step: vit.train.loop.explicit_attention); no forward pass that builds a graph goes through it."""
    fused = torch.nn.functional.scaled_dot_product_attention
    with_graph = []

    def spy(*args, **kwargs):
        with_graph.append(torch.is_grad_enabled())
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    train_cli(image_folder, tmp_path / "explicit.safetensors")
    assert not any(with_graph)
