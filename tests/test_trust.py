"""vit.trust on synthetic data where the answer is known: temperature, conformal coverage, detectors,
and the gate's record in a checkpoint (a corrupt one is a clear message, never a crash)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import CLASSES, tiny_checkpoint
from PIL import Image
from probes import probe_vit

from vit.data.datasets import split_train_val, train_samples
from vit.models import checkpoint, factory
from vit.models.features import extract
from vit.trust import GateError, calibration, conformal, fit, load_gate
from vit.trust.detectors import KNN, Energy, Mahalanobis, auroc, fpr_at_tpr, threshold_at_tpr
from vit.trust.gate import OWN, Gate


def synthetic(n: int, classes: int = 3, temperature: float = 1.0, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits): calibrated at T = 1, so logits * t need T = t."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 2
    labels = torch.multinomial(logits.softmax(-1), 1, generator=g)[:, 0]
    return logits * temperature, labels


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    logits, labels = synthetic(20000, temperature=true_t)
    t = calibration.fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    assert calibration.nll(logits, labels, t) < calibration.nll(logits, labels)
    assert calibration.ece((logits / t).softmax(-1), labels) < 0.02


def test_temperature_scaling_takes_tensors_made_under_inference_mode():
    with torch.inference_mode():  # as vit.models.features.extract returns them
        logits, labels = synthetic(500, temperature=2.0)
    assert calibration.fit_temperature(logits, labels) > 1


def test_ece_of_a_model_always_sure_and_half_right():
    probs = torch.tensor([[1.0, 0.0]] * 10)
    labels = torch.tensor([0, 1] * 5)
    assert calibration.ece(probs, labels) == pytest.approx(0.5)


def test_the_ece_a_calibrated_model_shows_by_chance_shrinks_with_more_photos():
    small, _ = synthetic(75)
    large, _ = synthetic(7500)
    few, many = calibration.ece_by_chance(small.softmax(-1), draws=400), calibration.ece_by_chance(large.softmax(-1), draws=50)
    assert few["p95"] > few["median"] > 4 * many["median"] > 0  # ~1/sqrt(N): 75 photos cannot show an ECE near 0
    draws = calibration.chance_draws(small.softmax(-1), draws=400)  # the same draws (scripts/calibration_on_test.py)
    assert draws.shape == (400,) and float(draws.quantile(0.95)) == pytest.approx(few["p95"])
    assert calibration.ece_by_chance(torch.tensor([[1.0, 0.0]] * 20)) == {"median": 0.0, "p95": 0.0, "draws": 2000}
    logits, labels = synthetic(75)  # labels drawn from the probabilities: calibrated, yet ECE > 0 on 75 photos
    assert 0 < calibration.ece(logits.softmax(-1), labels) < few["p95"]


def test_the_ece_interval_brackets_the_ece():
    logits, labels = synthetic(75, temperature=3.0)  # over-confident
    value = calibration.ece(logits.softmax(-1), labels)
    lo, hi = calibration.ece_interval(logits.softmax(-1), labels, draws=500)
    assert lo < value < hi and hi - lo > 0.05
    assert calibration.ece_interval(torch.tensor([[1.0, 0.0]] * 10), torch.zeros(10, dtype=torch.long)) == (0.0, 0.0)


def test_equal_mass_bins_group_photos_by_confidence_not_by_arrival():
    # sorted: 0.6 (wrong), 0.6 (right) | 0.9, 0.9 (right): gaps 0.1 * 2 and 0.1 * 2 over 4 photos
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.9, 0.1], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 0, 0])
    assert calibration.ece_equal_mass(probs, labels, bins=2) == pytest.approx(0.1)
    assert calibration.ece_equal_mass(probs, labels, bins=1) == pytest.approx(abs(0.75 - 0.75))
    # a model always sure and half right: 0.5 under any binning
    by = calibration.ece_by_binning(torch.tensor([[1.0, 0.0]] * 10), torch.tensor([0, 1] * 5))
    assert by == pytest.approx({"10 bins": 0.5, "20 bins": 0.5, f"{calibration.ECE_BINS} equal-mass": 0.5})


def test_the_finite_sample_quantile():
    scores = torch.arange(1, 10, dtype=torch.float64)  # n = 9: ceil(10 * 0.9) = 9th smallest
    assert conformal.quantile(scores, 0.1) == 9
    assert conformal.quantile(scores, 0.2) == 8  # ceil(10 * 0.8) = 8
    assert conformal.quantile(scores[:5], 0.1) == float("inf")  # ceil(6 * 0.9) = 6 > 5


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_conformal_sets_cover_at_the_stated_rate_on_synthetic_data(method):
    """Calibrated (softmax) probabilities: over 200 calibration draws of 71 photos, the mean coverage
    on fresh photos is 1 - alpha or a little more, as the guarantee says."""
    logits, labels = synthetic(200 * 71 + 5000, classes=5, seed=1)
    probs = logits.softmax(-1)
    test_p, test_y = probs[-5000:], labels[-5000:]
    cover = []
    for i in range(200):
        cal = slice(i * 71, (i + 1) * 71)
        cp = conformal.SplitConformal.calibrate(probs[cal], labels[cal], alpha=0.1, method=method)
        cover.append(cp.sets(test_p)[torch.arange(5000), test_y].float().mean().item())
    mean = sum(cover) / len(cover)
    assert 0.895 <= mean <= 0.93, mean


def test_conformal_set_names_are_most_probable_first_and_never_empty():
    cp = conformal.SplitConformal(qhat=0.0)  # only classes with p = 1 pass; the top class is always in
    probs = torch.tensor([[0.2, 0.5, 0.3]])
    assert cp.names(probs, ["a", "b", "c"]) == [["b"]]
    assert conformal.SplitConformal(qhat=0.85).names(probs, ["a", "b", "c"]) == [["b", "c", "a"]]


def blobs(n: int, centre: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g) * 0.3 + centre


@pytest.mark.parametrize("det", [KNN(k=3), Mahalanobis()])
def test_feature_detectors_separate_far_features(det):
    train = torch.cat([blobs(50, 1.0, 0), blobs(50, -1.0, 1)])
    labels = torch.tensor([0] * 50 + [1] * 50)
    det.fit(train, labels)
    near = torch.cat([blobs(20, 1.0, 2), blobs(20, -1.0, 3)])
    far = torch.randn(40, 16, generator=torch.Generator().manual_seed(4)) * 0.3 + torch.tensor([1.0, -1.0] * 8)
    s_in, s_out = det.score(near, None), det.score(far, None)
    assert auroc(s_in, s_out) > 0.99 and fpr_at_tpr(s_in, s_out) < 0.05


def test_knn_scores_the_distance_to_the_kth_neighbour():
    bank = torch.eye(4)
    det = KNN(k=2).fit(bank)
    # (1, 1, 0, 0)/sqrt2 has cosine 1/sqrt2 to e0 and e1: the 2nd nearest is at sqrt(2 - sqrt2)
    assert det.score(torch.tensor([[1.0, 1.0, 0, 0]]))[0] == pytest.approx((2 - 2 ** 0.5) ** 0.5, abs=1e-5)


def test_energy_is_lower_for_confident_logits():
    assert Energy().score(None, torch.tensor([[10.0, 0, 0]]))[0] < Energy().score(None, torch.tensor([[0.0, 0, 0]]))[0]


def test_threshold_accepts_the_stated_share():
    scores = torch.arange(100, dtype=torch.float32)
    assert (scores <= threshold_at_tpr(scores, 0.975)).float().mean() >= 0.975
    assert (scores <= threshold_at_tpr(scores, 0.95)).float().mean() == pytest.approx(0.95)


# ---------------------------------------------------------------- the gate in a checkpoint

def toy_gate(dim: int) -> Gate:
    det = KNN(k=2).fit(torch.randn(30, dim), None)
    return Gate(det, 0.9, 0.975, 1.5, conformal.SplitConformal(0.6, 0.1, "lac", 30), dim,
                {"train": 30, "val": 10})


def gated_copy(tmp_path, tiny_checkpoints, family: str = "effnet", dim: int = 1280):
    from vit.trust.fit import write_gate

    path = tmp_path / f"{family}.safetensors"
    path.write_bytes(tiny_checkpoints[family].read_bytes())
    write_gate(path, toy_gate(dim))
    return path


def test_a_gate_survives_the_checkpoint_round_trip_and_the_weights_are_kept(tmp_path, tiny_checkpoints):
    from safetensors.torch import load_file

    path = gated_copy(tmp_path, tiny_checkpoints)
    before = load_file(str(tiny_checkpoints["effnet"]))
    after = load_file(str(path))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(after) - set(before) == {"trust.bank"}
    ckpt = factory.load(path)  # the model builds: trust.* tensors are not weights
    gate = load_gate(ckpt)
    assert gate.temperature == 1.5 and gate.detector.k == 2 and gate.detector.bank.shape == (30, 1280)
    assert ckpt.meta["trust"]["paper"].startswith("Sun et al. 2022")


def test_a_checkpoint_without_a_gate_has_none(tiny_checkpoints):
    assert load_gate(factory.load(tiny_checkpoints["effnet"], lazy=True)) is None


def rewrite_record(path, change) -> None:
    meta = checkpoint.read_meta(path)
    change(meta["trust"])
    checkpoint.rewrite(path, meta, {k: v for k, v in checkpoint.read_extra(path).items()})


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(detector="magic"), "detector = 'magic': unknown"),
    (lambda r: r.update(temperature=-1), "temperature = -1: expected a finite positive number"),
    (lambda r: r.pop("threshold"), r"fields \['threshold'\] are missing"),
    (lambda r: r.update(feature_dim=7), "not 7-dimensional"),
    (lambda r: r["params"].update(k=999), "k = 999 but the feature bank holds 30"),
])
def test_a_corrupt_gate_is_a_clear_error_and_the_model_still_loads(tmp_path, tiny_checkpoints, change, message):
    path = gated_copy(tmp_path, tiny_checkpoints)
    rewrite_record(path, change)
    ckpt = factory.load(path)  # the model itself is fine
    with pytest.raises(GateError, match=message) as e:
        load_gate(ckpt)
    assert str(path) in str(e.value)


def test_a_missing_or_poisoned_bank_is_named(tmp_path, tiny_checkpoints):
    path = gated_copy(tmp_path, tiny_checkpoints)
    meta = checkpoint.read_meta(path)
    checkpoint.rewrite(path, meta, {})
    with pytest.raises(GateError, match=r"trust\.bank is missing"):
        load_gate(factory.load(path, lazy=True))
    checkpoint.rewrite(path, meta, {"bank": torch.full((30, 1280), float("nan")).half()})
    with pytest.raises(GateError, match="NaN or infinite"):
        load_gate(factory.load(path, lazy=True))
    assert json.loads(json.dumps(meta["trust"]))["conformal"]["qhat"] == 0.6


# ---------------------------------------------------------------- fitting a gate on the split it claims

@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    """A checkpoint whose logits read one patch's colour (probes.probe_vit's weights in the tiny ViT's
    first block, its second block zero: an identity), and a train/ folder of 90 photos showing their
    class's colour there, one in five filed under another class: a model that is right 70-80 % of
    the time and sure of itself, so its temperature is far from 1."""
    root = tmp_path_factory.mktemp("gatefit")
    tiny = factory.load(tiny_checkpoint(root / "tiny.safetensors", "scratch_vit"))
    probe = probe_vit(gain=20.0).state_dict()
    tiny.model.load_state_dict({k: probe.get(k, torch.zeros_like(v)) for k, v in tiny.model.state_dict().items()})
    path = checkpoint.save(root / "probe.safetensors", tiny.model, tiny.meta)
    rng = np.random.default_rng(0)
    for i in range(90):
        shown = i % 3
        a = rng.integers(0, 120, (36, 36, 3), dtype=np.uint8)
        a[8:20, 16:28, shown] = rng.integers(130, 255)  # the patch the probe reads, after resize and crop
        label = shown if i % 5 else (shown + 1) % 3
        (root / "data" / "train" / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / "data" / "train" / CLASSES[label] / f"p{i}.png")
    return path, root / "data"


def validation_pass(ckpt, data_dir, fraction: float):
    """The trainer's validation photos of `data_dir` (its hash split, recomputed here) through the model:
    logits, the model's own penultimate features, labels."""
    _, val = split_train_val(train_samples([data_dir])[0], fraction)
    return extract(ckpt.model, val, ckpt.meta["preprocessing"])


@pytest.mark.parametrize("tpr", [0.8, fit.TPR])
def test_the_gate_is_fitted_on_the_validation_photos(probe_data, tpr):
    """vit.trust.fit's contract, checked on the photos themselves: the threshold is the smallest that
    accepts `tpr` of the VALIDATION photos (one fitted on the training photos, or scaled, is not), T
    minimises their NLL, and q-hat is the ceil((n + 1)(1 - alpha))-th smallest of their scores under the
    CALIBRATED probabilities softmax(logits / T) (not the raw ones)."""
    path, data_dir = probe_data
    ckpt = factory.load(path)
    gate = fit.fit_gate(ckpt, [data_dir], features=OWN, k=3, tpr=tpr, val_fraction=0.3)
    logits, features, labels = validation_pass(ckpt, data_dir, 0.3)
    n = len(labels)
    assert gate.fitted_on == {"train": 90 - n, "val": n, "val_fraction": 0.3, "data_dirs": [str(data_dir)]}

    scores = gate.detector.score(features, logits)
    accepted = float((scores <= gate.threshold).float().mean())
    assert accepted == pytest.approx(math.ceil(tpr * n) / n) and accepted == pytest.approx(gate.measured["val_accepted"])
    assert float((scores < gate.threshold).float().mean()) < tpr  # no smaller threshold accepts as many

    t = gate.temperature
    assert abs(math.log(t)) > 0.5, t  # far from 1: raw and calibrated probabilities differ
    at = [calibration.nll(logits, labels, t * f) for f in (1 / 1.05, 1.0, 1.05)]
    assert at[1] < min(at[0], at[2])

    cal = 1 - (logits.double() / t).softmax(-1)[torch.arange(n), labels]  # LAC scores of the true classes
    rank = math.ceil((n + 1) * (1 - gate.conformal.alpha))
    assert gate.conformal.n_calibration == n and rank <= n
    assert gate.conformal.qhat == pytest.approx(float(cal.sort().values[rank - 1]), abs=1e-6)
    covered = gate.conformal.sets((logits / t).softmax(-1))[torch.arange(n), labels].float().mean()
    assert covered >= 1 - gate.conformal.alpha
