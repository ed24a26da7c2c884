"""Predictor: one request path, the Result carries its own geometry, concurrent requests stay apart."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import make_image

from vit import explain
from vit.explain import lrp_cnn
from vit.serve.predictor import Predictor


@pytest.fixture(scope="module")
def predictors(tiny_checkpoints) -> dict[str, Predictor]:
    return {f: Predictor.from_checkpoint(p) for f, p in tiny_checkpoints.items()}


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit", "effnet"])
def test_classify_and_every_method_give_the_same_probabilities(predictors, family):
    p, image = predictors[family], make_image(3, (150, 120))
    plain = p.answer(image)
    assert list(plain.probs) == sorted(plain.probs, key=lambda c: -plain.probs[c])
    for method in p.methods:
        r = p.explain(image, method)
        assert r.method == method and r.probs == pytest.approx(plain.probs, abs=1e-5)
        assert r.heat.shape == tuple(r.grid) and np.isfinite(r.heat).all()
        assert r.view.size == (p.image_size, p.image_size)
        assert r.cell_px == pytest.approx(p.image_size / r.grid[1])


def test_a_vit_result_carries_its_attention_geometry(predictors):
    p = predictors["scratch_vit"]
    r = p.explain(make_image(4), "attention", layer=0, head=1)
    assert r.grid == (4, 4) and r.prefix == 1 and len(r.maps) == p.num_layers
    assert r.maps[0].shape == (p.num_heads, 17, 17)
    assert np.allclose(r.heat, explain.cls_attention(r.maps[0], r.grid, r.prefix, 1))
    assert "attention" in r.timed


def test_warm_builds_the_cnns_lrp_layers_with_its_model(tiny_checkpoints, monkeypatch):
    """Predictor.warm (the app calls it as a model loads) also forms the CNN's folded LRP layers: its first map
    forms none (vit.explain.lrp_cnn.prepare)."""
    p = Predictor.from_checkpoint(tiny_checkpoints["effnet"])
    p.warm()

    def no_fold(*args):
        raise AssertionError("a fold formed during a map")
    monkeypatch.setattr(lrp_cnn, "fold", no_fold)
    assert p.explain(make_image(6), "lrp").method == "lrp"


def test_an_unknown_method_names_the_valid_ones(predictors):
    with pytest.raises(ValueError, match=r"choose one of \['lrp', 'occlusion', 'rise', 'grad-cam'\]"):
        predictors["effnet"].explain(make_image(1), "chefer")


def reference_score(model, x, heat: np.ndarray, target: int, steps: int, seeds: tuple[int, ...]) -> dict:
    """Deletion and insertion written out from their definition (Petsiuk et al. 2018, Sec. 4.1; the
    steps of vit.explain.faithfulness.score's docstring), with the model itself and no cache: after step
    k of K, the round(k n / K) cells of `order` first are blurred (deletion), or all but them
    (insertion); each point is the target's softmax probability; AUC by the trapezoid rule on [0, 1].
    Random: the orders numpy.random.default_rng(seed).permutation(n), one per seed, averaged; a request's
    random insertion curve blurs an order's first n - round(k n / K) cells (a uniformly random set of that
    many, as the order's last ones would be: explain.random_curves(shared=True))."""
    rows, cols = heat.shape
    n, (h, w) = rows * cols, x.shape[-2:]
    cell = torch.from_numpy((np.arange(h)[:, None] * rows // h) * cols + np.arange(w)[None, :] * cols // w)  # (H, W)
    blurred = explain.blur(x)

    def aucs(order: np.ndarray, shared: bool = False) -> tuple[float, float]:
        rank = torch.empty(n, dtype=torch.long)
        rank[torch.from_numpy(order)] = torch.arange(n)
        removed = [round(k * n / steps) for k in range(steps + 1)]
        revealed = [rank[cell] < n - r for r in removed] if shared else [rank[cell] >= r for r in removed]
        masks = torch.stack([rank[cell] < r for r in removed] + revealed)  # True: blurred
        with torch.inference_mode():
            p = model(torch.where(masks[:, None], blurred, x)).softmax(-1)[:, target].tolist()  # (2 (K + 1),)
        deletion, insertion = p[:steps + 1], p[steps + 1:]
        return float(np.trapezoid(deletion, dx=1 / steps)), float(np.trapezoid(insertion, dx=1 / steps))

    deletion, insertion = aucs(np.argsort(-heat.ravel(), kind="stable"))
    rand = np.mean([aucs(np.random.default_rng(s).permutation(n), shared=True) for s in seeds], axis=0)
    return {"deletion_auc": deletion, "insertion_auc": insertion, "random_deletion_auc": float(rand[0]),
            "random_insertion_auc": float(rand[1])}


def scores(f) -> dict:
    return {k: getattr(f, k) for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")}


@pytest.mark.parametrize("family", ["scratch_vit", "timm_vit", "effnet"])
def test_the_served_score_is_its_definition_recomputed_without_caches(tiny_checkpoints, one_thread, family):
    """Every method's served deletion / insertion AUCs, and the random bar beside them (shared by the
    photo's methods), equal `reference_score` computed from scratch with the request's K and seeds
    (README: K = 10, seeds 0, 1). Scores or a random bar that are wrong, noisy or another photo's fail."""
    from vit.serve.predictor import SCORE_SEEDS, SCORE_STEPS

    p, image = Predictor.from_checkpoint(tiny_checkpoints[family], engine="torch"), make_image(5)
    x = p.prepare(image)[1]
    for method in p.methods:
        r = p.explain(image, method, score=True)
        f = r.faithfulness
        assert (f.steps, f.random_seeds) == (SCORE_STEPS, SCORE_SEEDS) == (10, (0, 1))
        expected = reference_score(p.ckpt.model, x, r.heat, p.class_names.index(r.top), f.steps, f.random_seeds)
        assert scores(f) == pytest.approx(expected, abs=1e-5), method


def test_the_score_is_deterministic_and_against_random(tiny_checkpoints, one_thread):
    """The same photo scored twice by one predictor (the second from its cache), and again by two fresh
    ones (nothing cached), gives the same figures, against the same random bar."""
    fresh = [Predictor.from_checkpoint(tiny_checkpoints["scratch_vit"], engine="torch") for _ in range(3)]
    p, image = fresh[0], make_image(5)
    a, b = (p.explain(image, "occlusion", score=True).faithfulness for _ in range(2))
    assert a.deletion_auc == b.deletion_auc and a.random_insertion_auc == b.random_insertion_auc
    assert 0 <= a.deletion_auc <= 1 and len(a.deletion_curve) == a.steps + 1
    again = [q.explain(image, "occlusion", score=True).faithfulness for q in fresh[1:]]
    assert scores(again[0]) == scores(again[1]) == pytest.approx(scores(a), abs=1e-6)


def test_concurrent_requests_equal_sequential_ones(tiny_checkpoints, one_thread):
    """Two predictors, neither reading the other's caches: one answers the jobs one by one, the other
    four at a time (maps, scores and random bars computed in the threads)."""
    p, fresh = (Predictor.from_checkpoint(tiny_checkpoints["timm_vit"], engine="torch") for _ in range(2))
    jobs = [(make_image(s), m) for s in range(3) for m in p.methods]
    sequential = [p.explain(img, m, score=True) for img, m in jobs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda job: fresh.explain(*job, score=True), jobs))
    for a, b in zip(sequential, concurrent):
        assert np.allclose(a.heat, b.heat, atol=1e-5)
        assert scores(a.faithfulness) == pytest.approx(scores(b.faithfulness), abs=1e-5)
