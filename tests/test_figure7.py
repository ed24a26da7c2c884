"""vit.explore.figure7: Figure 7's numbers on synthetic attention and weights with known answers."""
import math

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH

from vit.explore import figure7 as f7
from vit.models.attention import normalised_entropy, peak_ratio
from vit.models.factory import build
from vit.models.scratch_vit import VisionTransformer, preset


def self_attention(batch: int, heads: int, prefix: int, patches: int) -> torch.Tensor:
    """(B, heads, N, N): every token attends to itself alone."""
    n = prefix + patches
    return torch.eye(n).expand(batch, heads, n, n).clone()


def uniform_attention(batch: int, heads: int, n: int) -> torch.Tensor:
    return torch.full((batch, heads, n, n), 1.0 / n)


def test_attention_to_itself_alone_is_at_distance_zero():
    maps = [self_attention(2, 3, prefix=2, patches=16) for _ in range(3)]
    d = f7.attention_distance(maps, (4, 4), patch_px=8, prefix=2)
    assert d.shape == (3, 3) and torch.all(d == 0)
    assert torch.allclose(f7.attention_entropy(maps, prefix=2), torch.zeros(3, 3), atol=1e-6)
    assert torch.allclose(f7.attention_peak(maps, prefix=2), torch.full((3, 3), 16.0))


def test_uniform_attention_on_a_2x2_grid_by_hand():
    # 10 px patches: centres (5, 5) (5, 15) (15, 5) (15, 15); from any patch 0, 10, 10 and 10 sqrt 2 px away
    expected = (0 + 10 + 10 + 10 * math.sqrt(2)) / 4
    maps = [uniform_attention(1, 2, 1 + 4)]  # a class token and 4 patches: renormalised, still uniform
    assert torch.allclose(f7.attention_distance(maps, (2, 2), patch_px=10, prefix=1), torch.full((1, 2), expected))
    assert f7.uniform_distance((2, 2), 10) == pytest.approx(expected)


def test_the_class_token_is_left_out_and_the_rows_renormalised():
    a = 0.5 * torch.eye(5).expand(1, 1, 5, 5).clone()  # half of each row on itself ...
    a[..., 0] += 0.5  # ... half on the class token
    a[..., 0, 0] = 1.0
    assert torch.all(f7.attention_distance([a], (2, 2), 10, prefix=1) == 0)
    assert torch.allclose(f7.prefix_mass([a], prefix=1), torch.tensor([[0.5]]))


def test_one_patch_to_the_side_is_one_patch_side_away():
    a = torch.zeros(1, 1, 3, 3)  # a 1 x 3 grid: each patch attends to its right neighbour (the last to its left)
    a[0, 0, 0, 1] = a[0, 0, 1, 2] = a[0, 0, 2, 1] = 1.0
    assert f7.attention_distance([a], (1, 3), patch_px=16, prefix=0).item() == pytest.approx(16.0)


def test_photos_average_equally_and_batches_combine_exactly():
    torch.manual_seed(0)
    maps = [torch.rand(5, 2, 10, 10).softmax(-1) for _ in range(2)]  # 5 photos, prefix 1, a 3 x 3 grid
    whole = f7.Sums((3, 3), 4.0, 1)
    whole.add(maps)
    parts = f7.Sums((3, 3), 4.0, 1)
    parts.add([m[:2] for m in maps])
    parts.add([m[2:] for m in maps])
    for name, value in whole.means().items():
        assert np.allclose(value, parts.means()[name], atol=1e-9), name
    one_by_one = torch.stack([f7.attention_distance([m[b] for m in maps], (3, 3), 4.0, 1) for b in range(5)]).mean(0)
    assert np.allclose(whole.means()["attention_distance_px"], one_by_one, atol=1e-5)
    assert parts.photos == 5 and parts.rows()["count"] == 2 * 5 * 2 * (9 + 1)


def test_entropy_and_peak_are_one_for_uniform_and_the_extremes_for_one_key():
    """vit.models.attention defines both once, for these figures and for the overlays' scale line."""
    assert normalised_entropy(torch.full((7, 196), 1 / 196)).allclose(torch.ones(7, dtype=torch.float64))
    assert peak_ratio(torch.full((7, 196), 1 / 196)).allclose(torch.ones(7))
    one = torch.zeros(196)
    one[3] = 1
    assert normalised_entropy(one).item() == 0 and peak_ratio(one).item() == 196
    maps = [uniform_attention(2, 3, 1 + 196)]
    for fn in (f7.attention_entropy, f7.cls_attention_entropy, f7.cls_attention_peak):
        assert torch.allclose(fn(maps, 1), torch.ones(1, 3)), fn.__name__
    half = torch.zeros(144)
    half[:72] = 1 / 72  # an even spread over half the keys: 1 - log 2 / log 144
    assert normalised_entropy(half).item() == pytest.approx(1 - math.log(2) / math.log(144))


def test_class_rows_are_the_first_tokens_row_over_the_patches():
    a = torch.rand(2, 3, 6, 6).softmax(-1)
    r = f7.cls_rows(a, prefix=2)
    assert r.shape == (2, 3, 4) and torch.allclose(r, (a[..., 0, 2:] / a[..., 0, 2:].sum(-1, keepdim=True)).double())


def test_position_similarity_has_a_unit_diagonal_ours_and_timms():
    torch.manual_seed(0)
    ours = VisionTransformer(preset("vit_test_p8_32", distilled=True))  # 2 prefix positions, 4 x 4 patches
    sim = f7.position_similarity(ours)
    assert sim.shape == (16, 16) and torch.allclose(sim.diagonal(), torch.ones(16), atol=1e-6)
    assert torch.allclose(sim, sim.T)
    pos = ours.pos_embed[0, 2:]
    assert sim[1, 5].item() == pytest.approx(torch.cosine_similarity(pos[1], pos[5], dim=0).item(), abs=1e-6)
    hybrid = build("timm_vit", TINY_ARCH["timm_vit"], num_classes=3).model  # 64 px, 4 x 4 cells, a class token
    sim = f7.position_similarity(hybrid)
    assert sim.shape == (16, 16) and torch.allclose(sim.diagonal(), torch.ones(16), atol=1e-6)
    assert sim[0, 1].item() == pytest.approx(
        torch.cosine_similarity(hybrid.pos_embed[0, 1], hybrid.pos_embed[0, 2], dim=0).item(), abs=1e-6)


def test_timm_without_class_position_has_only_patch_positions():
    import timm

    m = timm.create_model("vit_tiny_patch16_224", depth=1, no_embed_class=True, pretrained=False)
    assert m.pos_embed.shape[1] == 196 and f7.position_embedding(m).shape == (196, 192)


def test_similarity_facts_of_a_planted_layout():
    # embeddings that encode the column only: same column = 1, and left-right mirror columns made equal
    rows, cols = 3, 4
    emb = torch.zeros(rows * cols, cols // 2)
    for i in range(rows * cols):
        emb[i, min(i % cols, cols - 1 - i % cols)] = 1.0  # columns 0 and 3 alike, 1 and 2 alike
    sim = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).T
    facts = f7.similarity_facts(sim, (rows, cols))
    assert facts["left_right_mirror"] == pytest.approx(1.0)
    # neighbours: 9 horizontal pairs (one of three alike: columns 1-2) and 8 vertical pairs (all alike)
    assert facts["neighbours"] == pytest.approx((3 * 1 + 8) / (9 + 8))


def test_patch_filter_pcs_are_rgb_tiles_and_a_hybrid_is_refused():
    torch.manual_seed(0)
    ours = VisionTransformer(preset("vit_test_p8_32"))
    tiles, var = f7.patch_filter_pcs(ours, n=28)
    assert tiles.shape == (28, 8, 8, 3) and tiles.min() >= 0 and tiles.max() <= 1
    assert np.all(np.diff(var) <= 1e-12) and var.sum() <= 1 + 1e-9
    hybrid = build("timm_vit", TINY_ARCH["timm_vit"], num_classes=3).model
    assert f7.reads_pixels(ours) and not f7.reads_pixels(hybrid)
    with pytest.raises(ValueError, match="not RGB"):
        f7.patch_filter_pcs(hybrid)
    assert f7.weight_facts(hybrid, (4, 4))["filters_explained_variance"] is None


def test_patch_filter_pcs_recover_a_planted_pattern():
    torch.manual_seed(0)
    ours = VisionTransformer(preset("vit_test_p8_32"))
    pattern = torch.zeros(3, 8, 8)
    pattern[0, :, :4] = 1.0  # red on the left half
    with torch.no_grad():
        coef = torch.randn(ours.cfg.embed_dim, 1, 1, 1)
        ours.patch_embed.proj.weight.copy_(coef * pattern + 1e-4 * torch.randn_like(ours.patch_embed.proj.weight))
    tiles, var = f7.patch_filter_pcs(ours, n=3)
    assert var[0] > 0.99
    assert np.allclose(tiles[0][..., 0][:, :4], 1.0, atol=1e-2) and np.allclose(tiles[0][..., 1], 0.5, atol=1e-2)
