import json

import pytest
import torch
from conftest import CLASSES, tiny_checkpoint

from vit.models import checkpoint, factory
from vit.models.checkpoint import CheckpointError


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit", "effnet"])
def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path, family):
    path = tiny_checkpoint(tmp_path / "m.safetensors", family)
    ckpt = factory.load(path)
    assert ckpt.family == family and ckpt.class_names == CLASSES
    assert all(t.dtype == torch.float32 for t in ckpt.model.state_dict().values() if t.is_floating_point())
    assert ckpt.meta["weights_dtype"] == "float16"
    assert ckpt.meta["num_params"] == checkpoint.num_params(ckpt.model)
    assert not ckpt.model.training
    size = ckpt.meta["preprocessing"]["input_size"][-1]
    assert ckpt.model(torch.randn(1, 3, size, size)).shape == (1, 3)


def test_fp16_storage_keeps_logits_close(tmp_path):
    from conftest import TINY_ARCH

    from vit.models.factory import build
    torch.manual_seed(0)
    built = build("scratch_vit", TINY_ARCH["scratch_vit"], num_classes=3)
    model = built.model.eval()
    meta = {"family": "scratch_vit", "arch": built.arch, "class_names": CLASSES, "init": built.init,
            "preprocessing": checkpoint.Preprocessing((3, 32, 32), (0.5,) * 3, (0.5,) * 3).to_dict()}
    x = torch.randn(2, 3, 32, 32)
    loaded = factory.load(checkpoint.save(tmp_path / "a.safetensors", model, meta)).model
    exact = factory.load(checkpoint.save(tmp_path / "b.safetensors", model, meta, half=False)).model
    assert torch.allclose(loaded(x), model(x), atol=1e-2)
    assert torch.equal(exact(x), model(x))


def test_missing_required_metadata_is_refused(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        checkpoint.save(tmp_path / "x.safetensors", torch.nn.Linear(2, 2), {"family": "effnet"})


@pytest.mark.parametrize("field, value, message", [
    ("preprocessing.mean", None, r"preprocessing\.mean is missing"),
    ("preprocessing.std", [0.5, 0.0, 0.5], r"preprocessing\.std = .*positive"),
    ("preprocessing.input_size", [3, 32], r"preprocessing\.input_size = .*\[channels, height, width\]"),
    ("preprocessing.interpolation", "lanczos9", r"preprocessing\.interpolation = .*expected one of"),
    ("preprocessing.crop_pct", 1.5, r"preprocessing\.crop_pct = .*\(0, 1\]"),
    ("class_names", ["pizza", "pizza", "sushi"], r"class_names = .*distinct"),
    ("family", "resnet", r"family = 'resnet': unknown"),
    ("arch", [], r"arch = \[\]: expected an object"),
])
def test_a_bad_record_is_refused_at_load_naming_the_file_and_the_field(tmp_path, tiny_checkpoints, field, value,
                                                                       message):
    from safetensors.torch import load_file, save_file
    meta = checkpoint.read_meta(tiny_checkpoints["scratch_vit"])
    where, _, key = field.rpartition(".")
    target = meta[where] if where else meta
    if value is None:
        del target[key]
    else:
        target[key] = value
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(tiny_checkpoints["scratch_vit"])), str(bad), metadata={"foodvision": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="bad.safetensors: bad metadata: " + message):
        factory.load(bad)


def test_preprocessing_is_one_typed_accessor(tiny_checkpoints):
    ckpt = factory.load(tiny_checkpoints["timm_vit"])
    pp = ckpt.preprocessing
    assert pp.image_size == 64 and pp.input_size == (3, 64, 64)
    assert pp.to_dict() == checkpoint.Preprocessing.from_dict(ckpt.meta["preprocessing"]).to_dict()
    assert checkpoint.Preprocessing.from_dict(pp.to_dict()) == pp


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: no such checkpoint file"):
        factory.load(tmp_path / "nope.safetensors")


def test_truncated_file_names_the_file_and_the_problem(tmp_path, tiny_checkpoints):
    data = tiny_checkpoints["effnet"].read_bytes()
    for cut in (4, 200, len(data) // 2):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.safetensors: .*(truncated|not a safetensors)"):
            factory.load(bad)


def test_wrong_files_are_refused_with_a_reason(tmp_path):
    jpeg = tmp_path / "photo.safetensors"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="photo.safetensors: not a safetensors file"):
        factory.load(jpeg)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="without FoodVision metadata"):
        factory.load(foreign)


def test_wrong_family_and_mismatched_weights(tmp_path, tiny_checkpoints):
    with pytest.raises(CheckpointError, match="holds a effnet model, expected scratch_vit"):
        factory.load(tiny_checkpoints["effnet"], expect_family="scratch_vit")
    # metadata that claims another architecture than the weights have
    meta = checkpoint.read_meta(tiny_checkpoints["scratch_vit"])
    meta["arch"]["depth"] = 3
    from safetensors.torch import load_file, save_file
    bad = tmp_path / "liar.safetensors"
    save_file(load_file(str(tiny_checkpoints["scratch_vit"])), str(bad), metadata={"foodvision": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="liar.safetensors: weights do not fit"):
        factory.load(bad)


def test_describe_init_names_the_chain_of_a_continued_run():
    from vit.models.checkpoint import describe_init

    first = {"weights": "random", "source": "trunc_normal(0.02)"}
    assert describe_init(first) == "random (trunc_normal(0.02))" and describe_init(first, short=True) == "random"
    continued = {"weights": "checkpoint", "source": "checkpoints/scratch_vit.safetensors (sha256 0123456789ab)",
                 "checkpoint_init": first, "checkpoint_epochs": 188}
    assert describe_init(continued) == ("random (trunc_normal(0.02)), trained 188 epochs, then continued from "
                                        "scratch_vit.safetensors (sha256 0123456789ab)")
    twice = {"weights": "checkpoint", "source": "runs/e.safetensors", "checkpoint_init": continued, "checkpoint_epochs": 450}
    assert describe_init(twice, short=True) == "random, trained 188 epochs, then continued, trained 450 epochs, then continued"
    assert describe_init({}) == "unknown"
    # a run of 20-pass epochs (vit.train --repeats 20): recorded, or read off the command of older files
    repeated = dict(continued, checkpoint_repeats=20)
    assert describe_init(repeated, short=True) == "random, trained 188 epochs of 20 passes, then continued"
    older = dict(continued, checkpoint_command="python -m vit.train --model scratch_vit --repeats 20 --epochs 48")
    assert describe_init(older, short=True) == "random, trained 188 epochs of 20 passes, then continued"


def test_a_chain_of_continued_runs_is_as_pretrained_as_its_first_weights():
    from vit.models import families

    family = families.get("scratch_vit")
    random_first = {"weights": "checkpoint", "checkpoint_init": {"weights": "checkpoint",
                                                                 "checkpoint_init": {"weights": "random"}}}
    assert not family.is_pretrained_param("blocks.0.attn.qkv.weight", random_first)
    imagenet_first = {"weights": "checkpoint", "checkpoint_init": {"weights": "checkpoint",
                                                                   "checkpoint_init": {"weights": "imagenet"}}}
    assert family.is_pretrained_param("blocks.0.attn.qkv.weight", imagenet_first)
