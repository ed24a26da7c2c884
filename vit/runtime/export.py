"""Export a checkpoint to ONNX for ONNX Runtime, and check the export against PyTorch.

    python -m vit.runtime.export CHECKPOINT [--out FILE.onnx] [--data-dir DIR] [--int8]

Writes FILE.onnx (default: beside the checkpoint), the plain forward: input `image` (B, 3, H, W) ->
outputs `logits` (B, classes) and `features` (B, D), the penultimate vector the OOD gate (vit.trust)
scores, with a dynamic batch axis. For a ViT (`families.get(..).attention`) it
also writes FILE.attn.onnx: `image` -> `logits`, `features` (the same vector, from the same pass, so an
explanation's nearest training photos need no second pass) and `attn.0` ... `attn.{L-1}`, each
(B, heads, N, N).
A second file, not a second output set, so the plain graph keeps SDPA's shape and the fast path
never computes maps it does not return.

The weights travel at the checkpoint's precision: every float32 initializer whose values fp16 holds
exactly (all of them, for a checkpoint saved in fp16, as `checkpoint.save` does) is stored in fp16 and
cast back to float32 by a Cast node at the head of the graph, which ONNX Runtime folds when the
session opens: the graph it runs, and its numbers, are the float32 ones, from a file half the size
(7 MB for EfficientNet-Lite0, small enough to ship beside the checkpoint: see `checkpoints/`).
BatchNorm is exported as its own node (ONNX Runtime fuses it into the convolution at session start)
because a fusion at export would leave float32 weights fp16 cannot hold.

Each file carries in its `metadata_props`: the checkpoint's metadata JSON (`foodvision`: class names,
preprocessing, ...), `class_names` and `preprocessing` on their own, and `source_sha256`, the
sha256 of the .safetensors it came from, so a stale export is detected (`is_current`).

The export checks itself: the largest |logit difference| to PyTorch on real photos (bar: 1e-4; int8
changes the numerics and is held to top-1 instead) and top-1 agreement with PyTorch on a test split.
The exit code is non-zero when the check fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from torch import nn

from vit.files import atomic_path
from vit.models import families
from vit.models.attention import attention_features, attention_maps
from vit.models.checkpoint import Checkpoint
from vit.models.factory import load
from vit.models.features import WithFeatures
from vit.runtime.engines import (  # noqa: F401 (the files' names and freshness)
    EXPORT_LOCK,
    FORMAT,
    OrtEngine,
    attention_path,
    default_path,
    is_current,
    read_metadata,
    sha256,
)

log = logging.getLogger(__name__)

OPSET = 17
INPUT, LOGITS, FEATURES = "image", "logits", "features"
ATOL = 1e-4  # max |logit difference| to PyTorch for an fp32 export
INT8_AGREEMENT = 0.97  # an int8 export must agree with PyTorch's top-1 on this share of the test split
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "pizza_steak_sushi" / "test"
CHECK_PHOTOS = 8  # real photos for the logit comparison
CALIBRATION_PHOTOS = 64  # train photos for static int8 calibration (CNNs)


class ExportCheckError(RuntimeError):
    """An export whose outputs do not match PyTorch's."""


def input_px(ckpt: Checkpoint) -> int:
    return ckpt.preprocessing.image_size


class _WithAttention(nn.Module):
    """model -> (logits, features, map_0, ..., map_{L-1}): the explicit-softmax path as one traceable module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, features, maps = attention_features(self.model, x)
        return (logits, features, *maps)


def metadata(ckpt: Checkpoint, graph: str, *, int8: bool = False, source_sha256: str | None = None) -> dict[str, str]:
    """What travels inside the .onnx file (all values strings, as metadata_props wants)."""
    return {"foodvision_format": FORMAT, "foodvision": json.dumps(ckpt.meta),
            "class_names": json.dumps(ckpt.class_names), "preprocessing": json.dumps(ckpt.meta["preprocessing"]),
            "family": ckpt.family, "graph": graph, "int8": str(int(int8)),
            "source_sha256": source_sha256 or sha256(ckpt.path), "source_name": ckpt.path.name}


def _write_metadata(path: Path, props: dict[str, str], *, half: bool = False) -> None:
    """Set the file's metadata_props to `props` and, with `half`, store its weights in fp16
    (`half_initializers`): one load, one atomic save."""
    import onnx  # lazy: optional: only exports read or write ONNX files

    proto = onnx.load(str(path))
    if half:
        half_initializers(proto)
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    _save_atomic(proto, path)


def _save_atomic(proto, path: Path) -> None:
    """Write beside `path`, then rename: a reader never sees half a file, two writers never mix."""
    import onnx  # lazy: optional: only exports read or write ONNX files

    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def _torch_export(module: nn.Module, x: torch.Tensor, path: Path, outputs: list[str], *, fuse: bool = True) -> None:
    """TorchScript-traced export of an eval-mode `module` (the exporter restores each module's mode
    afterwards: a wrapper left in training mode would put the model it wraps into training mode).
    `fuse`: fold BatchNorm into the convolutions (the exporter's eval mode); otherwise BatchNorm
    stays a node in inference form, with the checkpoint's own weights and statistics."""
    if module.training:
        raise ValueError("export an eval-mode module: the exporter restores the training mode afterwards")
    dynamic = {name: {0: "batch"} for name in [INPUT, *outputs]}
    with EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter's deprecation and tracer notices
        mode = torch.onnx.TrainingMode.EVAL if fuse else torch.onnx.TrainingMode.PRESERVE
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=[INPUT], output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, training=mode)


def own_generator(seed: int = 0) -> torch.Generator:
    """A generator of the exporter's own: exports run in the app's background threads, where a draw from
    torch's global generator would shift a user's seeded sequence (a seeded test saw other data)."""
    return torch.Generator().manual_seed(seed)


def half_initializers(proto) -> int:
    """Store every float32 initializer of the ONNX ModelProto `proto` that fp16 holds exactly in fp16,
    cast back to float32 by a Cast node at the graph's head (ONNX Runtime folds it at session start;
    the values are unchanged bit for bit). Changes `proto` in place; returns the parameters now in fp16."""
    graph, kept, casts, halved = proto.graph, [], [], 0
    for t in graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size > 1 and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            h = numpy_helper.from_array(a.astype(np.float16), f"{t.name}.fp16")
            kept.append(h)
            casts.append(helper.make_node("Cast", [h.name], [t.name], to=TensorProto.FLOAT, name=f"{t.name}.cast"))
            halved += a.size
        else:
            kept.append(t)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return halved


def export(ckpt: Checkpoint, out: str | os.PathLike | None = None, *, int8: bool = False,
           calibration_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write the plain graph to `out` (default: `default_path`) and, for a ViT, the attention graph
    beside it; returns the paths written. `int8`: quantise the plain graph (see `quantise`)."""
    out = Path(out) if out is not None else default_path(ckpt.path, int8=int8)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, size, digest = ckpt.model.eval(), input_px(ckpt), sha256(ckpt.path)
    x = torch.randn(2, 3, size, size, generator=own_generator())
    written = []
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        raw = Path(tmp) / "plain.onnx"
        # the quantiser wants BatchNorm folded; `features`: the penultimate vector the OOD gate reads
        _torch_export(WithFeatures(model).eval(), x, raw, [LOGITS, FEATURES], fuse=int8)
        if int8:
            quantise(ckpt, raw, raw, calibration_dir)
        _write_metadata(raw, metadata(ckpt, "logits", int8=int8, source_sha256=digest), half=not int8)
        os.replace(raw, out)
        written.append(out)
        if families.get(ckpt.family).attention:
            depth = len(model.blocks)
            attn = attention_path(out)
            raw = Path(tmp) / "attn.onnx"
            _torch_export(_WithAttention(model).eval(), x, raw,
                          [LOGITS, FEATURES] + [f"attn.{i}" for i in range(depth)], fuse=False)
            _write_metadata(raw, metadata(ckpt, "logits+attention", source_sha256=digest), half=True)
            os.replace(raw, attn)
            written.append(attn)
    return written

# ---------------------------------------------------------------- int8


def quantise(ckpt: Checkpoint, src: Path, dst: Path, calibration_dir: str | os.PathLike | None = None) -> None:
    """int8 in ONNX Runtime: ViTs get dynamic quantisation of their MatMuls (weights int8 ahead of
    time, activations per call); CNNs get static QDQ, activations calibrated on training photos."""
    from onnxruntime.quantization import (  # lazy: optional: without onnxruntime the app serves on PyTorch
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _quant_pre_process(src, prepared)
        if families.get(ckpt.family).attention:
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            return
        photos = _photos(Path(calibration_dir) if calibration_dir else DEFAULT_DATA_DIR.parent / "train",
                         ckpt, CALIBRATION_PHOTOS)
        if photos is None:
            raise FileNotFoundError(f"static int8 needs calibration photos; none found in {calibration_dir}")
        quantize_static(str(prepared), str(dst), _Calibration(photos), quant_format=_qdq(),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)


def _qdq():
    from onnxruntime.quantization import QuantFormat  # lazy: optional: without onnxruntime the app serves on PyTorch

    return QuantFormat.QDQ


def _quant_pre_process(src: Path, dst: Path) -> None:
    """Symbolic shape inference and graph clean-up, which the quantiser recommends first."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazy: optional (onnxruntime)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader over a (N, 3, H, W) batch, one photo a call."""

    def __init__(self, photos: torch.Tensor) -> None:
        self._items = iter([{INPUT: p[None].numpy()} for p in photos])

    def get_next(self) -> dict | None:
        return next(self._items, None)

# ---------------------------------------------------------------- the check


def _photos(data_dir: Path, ckpt: Checkpoint, limit: int | None = None) -> torch.Tensor | None:
    """Up to `limit` photos of an ImageFolder split (spread over its classes) as the model's input
    batch; None when the folder is missing or empty."""
    from vit.data.datasets import eval_transform, list_images  # lazy: imports timm and torchvision (seconds)

    if not data_dir.is_dir():
        return None
    samples, _ = list_images(data_dir)
    if not samples:
        return None
    if limit is not None:
        samples = samples[:: max(1, len(samples) // limit)][:limit]
    transform = eval_transform(ckpt.meta["preprocessing"])
    return torch.stack([transform(Image.open(s.path).convert("RGB")) for s in samples])


def check(ckpt: Checkpoint, onnx_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
          engine=None) -> dict:
    """The export against PyTorch: max |logit diff| on real photos (random ones without a data dir),
    top-1 agreement on the whole split, and for a ViT the attention graph's maps too. `ok` says
    whether it passes (fp32: diff <= ATOL and full agreement; int8: agreement >= INT8_AGREEMENT)."""
    onnx_path = Path(onnx_path)
    engine = engine or OrtEngine(onnx_path)
    data = Path(data_dir) if data_dir else None
    split = _photos(data, ckpt) if data else None
    size = input_px(ckpt)
    photos = split[:: max(1, len(split) // CHECK_PHOTOS)][:CHECK_PHOTOS] if split is not None \
        else torch.randn(CHECK_PHOTOS, 3, size, size, generator=own_generator())
    with torch.inference_mode():
        ref = ckpt.model(photos)
    result = {"onnx": str(onnx_path), "int8": engine.int8, "photos": "real" if split is not None else "random",
              "n_photos": len(photos), "max_abs_logit_diff": float((engine.forward(photos) - ref).abs().max())}
    if split is not None:
        agree = []
        for chunk in split.split(16):
            with torch.inference_mode():
                agree.append(engine.forward(chunk).argmax(1) == ckpt.model(chunk).argmax(1))
        result |= {"test_dir": str(data), "n_test": len(split), "top1_agreement": torch.cat(agree).float().mean().item()}
    with torch.inference_mode():
        ref_features = WithFeatures(ckpt.model)(photos)[1]
    result["max_abs_feature_diff"] = float((engine.forward_features(photos)[1] - ref_features).abs().max())
    if engine.attention:

        with torch.inference_mode():
            _, ref_maps = attention_maps(ckpt.model, photos[:2])
        _, features, maps = engine.forward_attention_features(photos[:2])
        result["max_abs_attention_diff"] = max(float((a - b).abs().max()) for a, b in zip(maps, ref_maps))
        result["max_abs_feature_diff"] = max(result["max_abs_feature_diff"],
                                             float((features - ref_features[:2]).abs().max()))
    agreement = result.get("top1_agreement", 1.0)
    if engine.int8:
        result["ok"] = agreement >= INT8_AGREEMENT
    else:
        result["ok"] = result["max_abs_logit_diff"] <= ATOL and agreement == 1.0 \
            and result.get("max_abs_attention_diff", 0.0) <= ATOL and result["max_abs_feature_diff"] <= ATOL
    return result


def check_text(r: dict) -> str:
    lines = [f"{r['onnx']}: {'OK' if r['ok'] else 'FAILED'}",
             f"  max |logit diff| vs PyTorch on {r['n_photos']} {r['photos']} photos: {r['max_abs_logit_diff']:.2e}"
             + ("" if r["int8"] else f" (bar {ATOL:g})")]
    if "max_abs_feature_diff" in r:
        lines.append(f"  max |feature diff| (the gate's input, `features`): {r['max_abs_feature_diff']:.2e}")
    if "max_abs_attention_diff" in r:
        lines.append(f"  max |attention diff| (attention graph): {r['max_abs_attention_diff']:.2e}")
    if "top1_agreement" in r:
        bar = f">= {INT8_AGREEMENT:.0%}" if r["int8"] else "100%"
        lines.append(f"  top-1 agreement with PyTorch on {r['n_test']} photos of {r['test_dir']}: "
                     f"{r['top1_agreement']:.1%} (bar {bar})")
    else:
        lines.append("  top-1 agreement: not checked (no test split)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.runtime.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors checkpoint of any family")
    p.add_argument("--out", help="the .onnx file (default: beside the checkpoint)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR) if DEFAULT_DATA_DIR.is_dir() else None,
                   help="ImageFolder test split for the self-check (default: %(default)s)")
    p.add_argument("--int8", action="store_true", help="quantise: dynamic MatMul int8 (ViTs), static QDQ (CNNs)")
    p.add_argument("--calibration-dir", help="photos for static int8 (default: the data dir's sibling train/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("vit").setLevel(logging.INFO)  # ours; the quantiser's INFO notices stay quiet
    ckpt = load(args.checkpoint)
    calibration = args.calibration_dir or (str(Path(args.data_dir).parent / "train") if args.data_dir else None)
    paths = export(ckpt, args.out, int8=args.int8, calibration_dir=calibration)
    print("wrote " + ", ".join(str(p) for p in paths))
    result = check(ckpt, paths[0], args.data_dir)
    print(check_text(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
