"""vit.data.preprocess replicates timm's eval transform without importing timm: equal to the bit."""
import subprocess
import sys
from pathlib import Path

import pytest
import timm.data
import torch
from PIL import Image

from vit.data import preprocess
from vit.models.checkpoint import read_meta

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT.parent / "shared" / "data" / "pizza_steak_sushi" / "test").glob("*/*.jpg"))[::9]


def timm_transform(pp):
    return timm.data.create_transform(
        input_size=tuple(pp["input_size"]), interpolation=pp["interpolation"], mean=tuple(pp["mean"]),
        std=tuple(pp["std"]), crop_pct=pp["crop_pct"], crop_mode=pp["crop_mode"], is_training=False)


def preprocessings():
    pps = [read_meta(p)["preprocessing"] for p in sorted((ROOT / "checkpoints").glob("*.safetensors"))]
    squash = dict(pps[0], crop_mode="squash", input_size=[3, 72, 72], interpolation="bilinear", crop_pct=0.9)
    imagenet = dict(pps[0], mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], input_size=[3, 224, 224])
    return pps + [squash, imagenet, dict(pps[0], crop_pct=1.0, interpolation="nearest")]


def images():
    sizes = [(512, 384), (384, 512), (512, 512), (300, 97), (97, 300)]  # landscape, portrait, square, odd
    made = [Image.effect_mandelbrot(size, (-2, -1.2, 1, 1.2), 60).convert("RGB") for size in sizes]
    return made + [Image.open(p).convert("RGB") for p in PHOTOS]


@pytest.mark.parametrize("pp", preprocessings(), ids=lambda pp: f"{pp['input_size'][-1]}px-{pp['crop_mode']}"
                         f"-{pp['interpolation']}-{pp['crop_pct']}-std{pp['std'][0]}")
def test_equals_timms_eval_transform_to_the_bit(pp):
    ours, theirs = preprocess.eval_transform(pp), timm_transform(pp)
    view, _ = preprocess.split_eval_transform(pp)
    for image in images():
        x = ours(image)
        assert x.shape == (3, *pp["input_size"][1:])
        assert torch.equal(x, theirs(image)), image.size
        assert view(image).size == tuple(pp["input_size"][1:][::-1])


def test_falls_back_to_timm_for_other_crop_modes():
    pp = dict(read_meta(ROOT / "checkpoints" / "effnet.safetensors")["preprocessing"], crop_mode="border")
    image = images()[0]
    assert torch.equal(preprocess.eval_transform(pp)(image), timm_transform(pp)(image))


def test_the_request_path_imports_neither_timm_nor_torchvision():
    code = ("import sys; from vit.serve.predictor import Predictor; from vit.models.factory import load; "
            "load('checkpoints/scratch_vit.safetensors'); "
            "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
