"""The gate as a request meets it: the committed checkpoints flag non-food and accept food on both
engines, a model without a gate (or with a damaged one) is served and says so, and `vit.train`
writes a gate and a temperature into a new checkpoint of any classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ROOT, make_image
from PIL import Image

from vit.models import checkpoint, factory
from vit.serve.predictor import Predictor
from vit.train import cli
from vit.trust import load_gate

COMMITTED = sorted((ROOT / "checkpoints").glob("*.safetensors"))
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
GATED = [p for p in COMMITTED if "trust" in checkpoint.read_meta(p)]


def astronaut() -> Image.Image:
    skimage = pytest.importorskip("skimage.data", reason="the non-food photos are test requirements")
    return Image.fromarray(skimage.astronaut())


def stripes() -> Image.Image:
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    a = (0.5 + 0.5 * np.sin(2 * np.pi * 12 * (xx + 0.3 * yy)))[..., None] * np.array([0.9, 0.3, 0.6])
    return Image.fromarray((a * 255).astype(np.uint8))


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def engine(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def predictors(engine) -> dict[str, Predictor]:
    return {p.stem: Predictor.from_checkpoint(p, engine=engine) for p in GATED}


def test_every_committed_checkpoint_carries_a_gate():
    assert [p.stem for p in GATED] == [p.stem for p in COMMITTED]
    for p in COMMITTED:
        gate = load_gate(factory.load(p, lazy=True))
        assert gate.temperature > 0 and 0 < gate.conformal.qhat <= 1 and gate.fitted_on["val"] == 71


@pytest.mark.parametrize("name", [p.stem for p in GATED])
def test_non_food_is_flagged_and_every_example_accepted(predictors, engine, name):
    p = predictors[name]
    assert p.engine.name == engine
    for image in (astronaut(), stripes()):
        t = p.answer(image).trust
        assert t.in_distribution is False and t.ood_score > t.ood_threshold, (name, engine, t)
    for photo in EXAMPLES:
        r = p.answer(photo)
        assert r.trust.in_distribution is True, (name, engine, photo.name, r.trust)
        assert r.trust.prediction_set[0] == r.top and set(r.trust.prediction_set) <= set(p.class_names)


@pytest.mark.parametrize("name", [p.stem for p in GATED])
def test_the_verdict_is_the_same_on_both_engines(name):
    photos = [EXAMPLES[0], astronaut(), stripes()]
    results = {kind: [Predictor.from_checkpoint(ROOT / "checkpoints" / f"{name}.safetensors", engine=kind)
                      .answer(photo).trust for photo in photos] for kind in ("torch", "onnxruntime")}
    for a, b in zip(results["torch"], results["onnxruntime"]):
        assert a.in_distribution == b.in_distribution and a.prediction_set == b.prediction_set
        assert a.ood_score == pytest.approx(b.ood_score, abs=1e-3)


def test_calibrated_probabilities_are_the_tempered_softmax():
    p = Predictor.from_checkpoint(ROOT / "checkpoints" / "effnet.safetensors", engine="torch")
    r = p.answer(EXAMPLES[0])
    logits = torch.tensor([np.log(r.raw_probs[c]) for c in p.class_names])
    expected = (logits / r.trust.temperature).softmax(-1).tolist()
    assert [r.probs[c] for c in p.class_names] == pytest.approx(expected, abs=1e-5)
    assert r.trust.temperature == p.gate.temperature != 1.0


def test_a_model_without_a_gate_is_served_and_says_so(tiny_checkpoints):
    r = Predictor.from_checkpoint(tiny_checkpoints["scratch_vit"], engine="torch").answer(make_image(1))
    assert r.trust.in_distribution is None and r.trust.ood_score is None and r.trust.prediction_set == []
    assert "no out-of-distribution gate" in r.trust.note
    assert r.probs == r.raw_probs


def test_a_damaged_gate_is_logged_and_the_model_served_without_it(tmp_path, caplog):
    path = tmp_path / "effnet.safetensors"
    path.write_bytes((ROOT / "checkpoints" / "effnet.safetensors").read_bytes())
    meta = checkpoint.read_meta(path)
    meta["trust"]["threshold"] = "high"
    checkpoint.rewrite(path, meta, checkpoint.read_extra(path))
    p = Predictor.from_checkpoint(path, engine="torch")
    r = p.answer(EXAMPLES[0])
    assert r.trust.in_distribution is None and "damaged" in r.trust.note and "threshold = 'high'" in r.trust.note
    assert str(path) in caplog.text and r.top in p.class_names


def test_vit_train_gives_a_two_class_checkpoint_its_own_gate_and_temperature(tmp_path):
    root = tmp_path / "data"
    for c, seeds in (("cats", range(0, 8)), ("dogs", range(8, 16))):
        (root / "train" / c).mkdir(parents=True)
        for s in seeds:
            make_image(s).save(root / "train" / c / f"{c}_{s}.jpg")
    out = tmp_path / "two.safetensors"
    argv = ["--model", "scratch_vit", "--arch", json.dumps({"preset": "vit_test_p8_32"}), "--data-dir", str(root),
            "--batch-size", "4", "--val-fraction", "0.25", "--workers", "0", "--epochs", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    gate = load_gate(factory.load(out, lazy=True))
    assert gate is not None and gate.fitted_on == {"train": 12, "val": 4, "data_dirs": [str(root)], "val_fraction": 0.25}
    assert gate.temperature > 0 and gate.temperature != 1.0
    r = Predictor.from_checkpoint(out, engine="torch").answer(make_image(3))
    assert r.trust.in_distribution is not None and set(r.trust.prediction_set) <= {"cats", "dogs"}


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit", "effnet"])
def test_both_engines_give_the_same_penultimate_features(tiny_checkpoints, family):
    from vit.runtime import choice

    ckpt = factory.load(tiny_checkpoints[family])
    side = ckpt.preprocessing.image_size
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    (la, fa), (lb, fb) = (choice.make_engine(ckpt, kind).forward_features(x) for kind in ("torch", "onnxruntime"))
    assert fa.shape == fb.shape and fa.shape[0] == 2 and torch.allclose(fa, fb, atol=1e-4)
    assert torch.allclose(la, lb, atol=1e-4) and torch.allclose(la, ckpt.model(x), atol=1e-5)


def test_calibrate_cli_fits_an_own_feature_gate_that_both_engines_agree_on(tmp_path, tiny_checkpoints, image_folder):
    from vit.trust import fit

    path = tmp_path / "effnet.safetensors"
    path.write_bytes(tiny_checkpoints["effnet"].read_bytes())
    assert fit.main([str(path), "--data-dir", str(image_folder), "--features", "own", "--k", "2"]) == 0
    gate = load_gate(factory.load(path, lazy=True))
    assert gate.features == "own" and gate.detector.k == 2 and gate.fitted_on["val"] == 3
    photos = [make_image(s, (120, 100)) for s in range(4)]
    verdicts = {kind: [Predictor.from_checkpoint(path, engine=kind).answer(im).trust for im in photos]
                for kind in ("torch", "onnxruntime")}
    for a, b in zip(verdicts["torch"], verdicts["onnxruntime"]):
        assert a.in_distribution == b.in_distribution and a.ood_score == pytest.approx(b.ood_score, abs=1e-4)


def test_calibrate_cli_names_a_bad_folder(tmp_path, tiny_checkpoints, capsys):
    from vit.trust import fit

    path = tmp_path / "effnet.safetensors"
    path.write_bytes(tiny_checkpoints["effnet"].read_bytes())
    assert fit.main([str(path), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert "trust" not in checkpoint.read_meta(path)  # the file is untouched
