"""Predictor: one request path, the Result carries its own geometry, concurrent requests stay apart."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import make_image

from vit import explain
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


def test_an_unknown_method_names_the_valid_ones(predictors):
    with pytest.raises(ValueError, match=r"choose one of \['rise', 'occlusion', 'grad-cam'\]"):
        predictors["effnet"].explain(make_image(1), "chefer")


def test_the_score_is_deterministic_and_against_random(predictors):
    p, image = predictors["scratch_vit"], make_image(5)
    a, b = (p.explain(image, "occlusion", score=True).faithfulness for _ in range(2))
    assert a.deletion_auc == b.deletion_auc and a.random_insertion_auc == b.random_insertion_auc
    assert 0 <= a.deletion_auc <= 1 and len(a.deletion_curve) == a.steps + 1


def test_concurrent_requests_equal_sequential_ones(predictors):
    p = predictors["timm_vit"]
    jobs = [(make_image(s), m) for s in range(3) for m in p.methods]
    sequential = [p.explain(img, m).heat for img, m in jobs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda job: p.explain(*job).heat, jobs))
    for a, b in zip(sequential, concurrent):
        assert np.allclose(a, b, atol=1e-5)
