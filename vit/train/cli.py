"""`python -m vit.train`: parse and validate the config, set up torchrun's process group, fit,
and (rank 0) write the checkpoint, its curves and the training state."""
from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset

from vit.explore.bank import write_after_training
from vit.models import checkpoint
from vit.models.checkpoint import CheckpointError
from vit.train import distributed, loop
from vit.train.config import ConfigError, TrainConfig, build_parser, from_args, validate
from vit.train.curves import plot_history
from vit.train.distill import WithTokens, make_imitation, teacher_record
from vit.train.evaluate import run_eval
from vit.train.ort_teacher import pick_engine
from vit.train.prepare import Prepared, pick_device, prepare
from vit.trust.fit import fit_after_training

log = logging.getLogger("vit.train")


def wrap(run: loop.Run, frozen: bool) -> None:
    """Freeze or unfreeze the pretrained weights; under DDP re-wrap, since DDP fixes at construction
    which parameters it reduces."""
    for name, p in run.model.named_parameters():
        p.requires_grad_(not (frozen and run.is_pretrained(name)))
    net = run.model if run.imitation is None else WithTokens(run.model, run.imitation)
    if run.dist.enabled:
        net = DDP(net, device_ids=[run.dist.local_rank] if run.device.startswith("cuda") else None)
    if run.cfg.compile:
        net = torch.compile(net)
    run.net = net


def fit(cfg: TrainConfig, d: distributed.Dist, device: str, prep: Prepared) -> tuple[dict, list[dict]]:
    """Train for cfg.epochs (or until early stopping); returns the best epoch's record and the history."""
    model = prep.built.model.to(device)
    if prep.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not device.startswith("cuda") and (n := loop.explicit_attention(model)):
        log.info("%d attention layers use the explicit softmax (faster to train than the fused kernel on %s)",
                 n, device)
    loop.seed_rank(cfg.seed, d)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = loop.train_loader(prep, cfg, d, generator)
    updates_per_epoch = -(-len(loader) // cfg.accum_steps)
    optimizer = loop.make_optimizer(model, cfg, prep.is_pretrained)
    imitation = None
    if cfg.feature_distill:
        imitation = make_imitation(model, prep.teacher).to(device)
        optimizer.add_param_group({"params": list(imitation.parameters()), "weight_decay": cfg.weight_decay,
                                   "lr_scale": 1.0})
        log.info("feature imitation: teacher stage %d (%d channels) -> the %dx%d token grid, weight %g",
                 imitation.stage, imitation.proj.out_features, imitation.grid, imitation.grid, cfg.feature_distill)
    if prep.teacher is not None and pick_engine(cfg.teacher_engine, device) == "onnxruntime":
        prep.teacher.use_onnxruntime(imitation.stage if imitation is not None else None, torch.get_num_threads())
        log.info("teacher on ONNX Runtime (%d threads)", torch.get_num_threads())
    scheduler = loop.make_scheduler(optimizer, cfg, updates_per_epoch)
    ema = None
    if cfg.ema:
        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    run = loop.Run(cfg, model, optimizer, scheduler, len(prep.class_names), prep.student_norm, device, d,
                   prep.teacher, ema, prep.channels_last, is_pretrained=prep.is_pretrained, imitation=imitation)
    scheduler.step_update(0)
    eval_loaders = {name: DataLoader(loop.shard(ds, d), batch_size=64,  # cached tensors: nothing for workers to do
                                     num_workers=0 if isinstance(ds, TensorDataset) else min(cfg.workers, 2))
                    for name, ds in prep.eval_data.items()}
    history: list[dict] = []
    best = {"val_loss": float("inf"), "epoch": -1, "state": None, "source": "model"}
    start_epoch, stopped = 0, False
    if cfg.resume:
        s = loop.load_state(run, cfg.state_path, generator)
        start_epoch, best, history, stopped = s["epoch"], s["best"], s["history"], s["stopped"]
        log.info("resumed from %s after epoch %d", cfg.state_path, start_epoch)
    if cfg.compile and not device.startswith("cuda"):
        log.warning("--compile ignored on %s", device)
        cfg = run.cfg = _replace(cfg, compile=False)
    frozen, clock = None, loop.Throughput()
    for epoch in range(start_epoch, cfg.epochs if not stopped else start_epoch):
        if frozen != (epoch < cfg.freeze_epochs):
            frozen = epoch < cfg.freeze_epochs
            wrap(run, frozen)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        row = {"epoch": epoch + 1, **loop.train_one_epoch(run, loader)}
        row["lr"] = run.lr
        loop.log_samples(loader, prep, d, epoch + 1)
        models = {"": model} | ({"ema_": ema.module} if ema is not None else {})
        evaluated = loop.evaluates(epoch + 1, cfg)
        if evaluated:
            row |= loop.eval_metrics(run, models, eval_loaders, prep.class_names)
        history.append(row)
        if d.is_main:
            log.info("epoch %3d/%d  lr %.2e  train loss %.4f acc %.3f  val loss %s acc %s  test acc %s%s  "
                     "%.0fs, %.1f images/s%s", epoch + 1, cfg.epochs, row["lr"], row["train_loss"], row["train_acc"],
                     _fmt(row.get("val_loss")), _fmt(row.get("val_acc")), _fmt(row.get("test_acc")),
                     f"  EMA val loss {_fmt(row.get('ema_val_loss'))}" if ema is not None else "",
                     row["seconds"], row["images_per_s"], "  (frozen backbone)" if frozen else "")
        for source, m in models.items() if evaluated else ():  # without a val split: the last epoch's model
            value = row.get(f"{source}val_loss", -epoch)
            if loop.is_better(value, best):
                best = {"val_loss": value, "epoch": epoch + 1, "state": loop.snapshot(m), "source": source or "model"}
        stopped = evaluated and bool(cfg.patience) and epoch + 1 - best["epoch"] >= cfg.patience
        if d.is_main:
            loop.save_state(run, cfg.state_path, epoch + 1, best, history, generator, stopped)
        clock.add(row)
        if stopped:
            log.info("early stop: val loss has not improved for %d epochs (best: epoch %d)", cfg.patience,
                     best["epoch"])
            break
    if d.is_main and clock.epochs:
        log.info("%s", clock.summary())
    return best, history


def finish(cfg: TrainConfig, d: distributed.Dist, device: str, prep: Prepared, best: dict, history: list[dict],
           argv: list[str] | None) -> Path:
    """Rank 0: the selected weights, exactly as the file will hold them, measured and written."""
    model = prep.built.model
    stored = {k: v.half().float() if v.is_floating_point() and not cfg.fp32 else v for k, v in best["state"].items()}
    model.load_state_dict(stored)
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    metrics = {name: run_eval(model, DataLoader(ds, batch_size=64), prep.class_names)
               for name, ds in prep.eval_data.items()}
    recipe = {**cfg.to_dict(), "resume": cfg.resume,
              "optimizer": f"AdamW (timm param_groups_weight_decay: no decay on biases, norms, tokens, position "
                           f"embedding), grad-norm clip {loop.GRAD_CLIP}",
              "schedule": "timm CosineLRScheduler: linear warm-up from min_lr, then cosine to min_lr, per update",
              "augmentation": f"RandomResizedCrop(scale 0.25-1), horizontal flip, {cfg.augment}"
                              + (f", MixUp {cfg.mixup}" if cfg.mixup else "") + (f", CutMix {cfg.cutmix}" if cfg.cutmix else "")
                              + f", label smoothing {cfg.label_smoothing} (timm Mixup / SoftTargetCrossEntropy)",
              "pretrained": prep.pretrained or "none", "data_dirs": [str(x) for x in cfg.data_dir],
              "n_train": len(prep.train_set), "n_val": len(prep.val_set), "test_dir": prep.test_source,
              "selection": ("epoch with the lowest validation loss" + (" (model or EMA)" if cfg.ema else "")
                            + (f" among the evaluated ones (every {cfg.eval_every} and the last)" if cfg.eval_every > 1
                               else "")) if prep.val_set else "last epoch",
              "selected_epoch": best["epoch"], "selected_weights": best["source"], "epochs_run": len(history),
              "world_size": d.world_size, "global_batch_size": cfg.batch_size * cfg.accum_steps * d.world_size}
    if prep.teacher is not None:
        recipe["distillation"] = teacher_record(prep.teacher, cfg.distill, cfg.distill_alpha, cfg.distill_temperature)
    args = sys.argv[1:] if argv is None else argv
    meta = {"family": cfg.model, "arch": prep.built.arch, "class_names": prep.class_names, "preprocessing": prep.pp,
            "init": prep.built.init, "recipe": recipe,
            "metrics": {name: {k: v for k, v in m.items() if k != "images_per_s"} for name, m in metrics.items()},
            "history": history, "command": "python -m vit.train " + shlex.join(args),
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": device}
    out = checkpoint.save(cfg.out, model, meta, half=not cfg.fp32)
    evaluated = [row for row in history if loop.evaluates(row["epoch"], cfg)]  # the epochs with val/test points
    plot_history(evaluated, title=f"{Path(cfg.out).stem}: {cfg.model}").savefig(out.with_suffix(".png"), dpi=100)
    log.info("wrote %s (%.1f MB) and %s; selected epoch %d (%s); %s", out, out.stat().st_size / 1e6,
             out.with_suffix(".png"), best["epoch"], best["source"],
             "  ".join(f"{name} acc {m['accuracy']:.4f}" for name, m in metrics.items()))
    fit_after_training(out, prep.train_set, prep.val_set,
                       {"data_dirs": [str(x) for x in cfg.data_dir], "val_fraction": cfg.val_fraction})
    if prep.val_set:  # the nearest training photos of every answer (vit.explore), the validation ones its scale
        write_after_training(out, model, prep.train_set, prep.val_set, [str(x) for x in cfg.data_dir], cfg.val_fraction)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = build_parser(sys.modules[__package__].__doc__)  # the package's docstring (read, not imported back)
    cfg = from_args(parser.parse_args(argv))
    d, device = distributed.setup(pick_device(cfg.device))
    try:
        try:
            validate(cfg)
            prep = prepare(cfg, d, device)
        except (ConfigError, ValueError, FileNotFoundError, CheckpointError, RuntimeError) as e:
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
            return 2
        best, history = fit(cfg, d, device, prep)
        if d.is_main:
            finish(cfg, d, device, prep, best, history, argv)
        return 0
    finally:
        distributed.cleanup(d)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _replace(cfg: TrainConfig, **kw) -> TrainConfig:
    return dataclasses.replace(cfg, **kw)
