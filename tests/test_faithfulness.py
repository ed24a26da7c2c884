import json

import re

import numpy as np
import pytest
import torch
from PIL import Image
from probes import COL, ROW, probe_image, probe_vit

from vit import explain
from vit.explain import cli
from vit.explain import faithfulness as faith
from vit.explain.perturb import blur, cell_ids
from vit.models import scratch_vit as vit_model


def counting_forward(model, sizes):
    def forward(x):
        sizes.append(len(x))
        with torch.inference_mode():
            return model(x)
    return forward


def true_map() -> np.ndarray:
    heat = np.zeros((4, 4))
    heat[ROW, COL] = 1.0
    return heat


def test_auc_is_the_trapezoid_rule_over_0_1():
    assert faith.auc([1.0, 0.0]) == pytest.approx(0.5)
    assert faith.auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert faith.auc([0.0, 1.0, 1.0]) == pytest.approx(0.75)


def test_the_true_map_beats_random_orders():
    model, x = probe_vit(), probe_image(0, 1)
    f = explain.score(counting_forward(model, []), x, true_map(), 1)
    assert f.deletion_auc < f.random_deletion_auc and f.insertion_auc > f.random_insertion_auc
    assert f.random_deletion_auc - f.deletion_auc > 0.03 and f.insertion_auc - f.random_insertion_auc > 0.03
    assert f.deletion_ratio < 1 < f.insertion_ratio


def test_curves_start_and_end_at_the_intact_and_blurred_images_in_small_batches():
    model, x = probe_vit(), probe_image(0, 1)
    sizes = []
    f = explain.score(counting_forward(model, sizes), x, true_map(), 1, steps=8, seeds=(0, 1))
    with torch.inference_mode():
        intact = model(x).softmax(-1)[0, 1].item()
        blurred = model(explain.blur(x)).softmax(-1)[0, 1].item()
    assert len(f.deletion_curve) == len(f.insertion_curve) == 9 and f.steps == 8
    assert f.deletion_curve[0] == pytest.approx(intact, abs=1e-5) == f.insertion_curve[-1]
    assert f.deletion_curve[-1] == pytest.approx(blurred, abs=1e-5) == f.insertion_curve[0]
    assert max(sizes) <= 32 and sum(sizes) == 2 + 2 * 7 * 3  # intact, blurred, 2 curves x 7 inner steps x 3 orders
    assert f.baseline.startswith("gaussian blur sigma=")


def test_deletion_removes_the_top_cells_first():
    """With K = cells, step k blurs exactly the k highest cells: the probe's probability falls at step 1."""
    model, x = probe_vit(), probe_image(0, 2)
    f = explain.score(counting_forward(model, []), x, true_map(), 2, steps=16, seeds=(0,))
    assert f.deletion_curve[1] < f.deletion_curve[0] - 0.05
    assert np.allclose(f.deletion_curve[1:], f.deletion_curve[-1], atol=1e-4)  # nothing else matters


def test_scores_are_deterministic_and_a_shared_random_bar_gives_the_same_numbers():
    model, x = probe_vit(), probe_image(5, 0)
    h = explain.compute(model, x, "chefer")
    fwd = counting_forward(model, [])
    a = explain.score(fwd, x, h.heat, h.target)
    b = explain.score(fwd, x, h.heat, h.target)
    assert a == b
    bar = explain.random_curves(fwd, x, h.heat.shape, h.target)
    c = explain.score(fwd, x, h.heat, h.target, random=bar)
    assert c.deletion_auc == a.deletion_auc and c.random_insertion_auc == pytest.approx(a.random_insertion_auc)


def test_the_random_bar_is_seeded_permutations_of_the_cells():
    model, x = probe_vit(), probe_image(2, 0)
    fwd = counting_forward(model, [])
    perm = np.random.default_rng(7).permutation(16)
    heat = np.empty(16)
    heat[perm] = np.arange(16, 0, -1)  # a map whose order is that permutation
    f = explain.score(fwd, x, heat.reshape(4, 4), 0, steps=16, seeds=(7,))
    assert f.random_deletion_curve == f.deletion_curve and f.random_insertion_curve == f.insertion_curve


def test_curves_plot_is_a_small_picture():
    model, x = probe_vit(), probe_image(0, 1)
    img = explain.curves_plot(explain.score(counting_forward(model, []), x, true_map(), 1, steps=4), "probe")
    assert isinstance(img, Image.Image) and img.mode == "RGB" and max(img.size) <= 600
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 10  # something was drawn


def test_curves_plot_without_words_draws_numbers_and_arrows_only(monkeypatch):
    """The page's figure reads the same in any language: every text drawn is a number or an arrow (↓ deletion,
    ↑ insertion); its label on the page says the rest. With words (the default), the words are there."""
    from matplotlib.text import Text

    drawn, draw = [], Text.draw
    monkeypatch.setattr(Text, "draw", lambda self, renderer: (drawn.append(self.get_text()), draw(self, renderer))[1])
    model, x = probe_vit(), probe_image(0, 1)
    f = explain.score(counting_forward(model, []), x, true_map(), 1, steps=4)
    explain.curves_plot(f, words=False)
    shown = [t for t in drawn if t.strip()]
    assert shown and all(re.fullmatch(r"[\d.\s↓↑−-]*", t) for t in shown), shown
    assert {"↓", "↑"} <= set(shown)
    drawn.clear()
    explain.curves_plot(f)
    assert {"deletion", "insertion", "p(target)"} <= set(drawn)


def test_spearman_handles_ties_and_matches_pearson_on_ranks():
    assert cli.spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert cli.spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert cli.spearman(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert cli.spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.9486833, abs=1e-6)
    assert np.isnan(cli.spearman(np.zeros(4), np.arange(4)))


def test_bootstrap_interval_brackets_the_mean():
    v = list(np.linspace(0, 1, 20))
    lo, hi = cli.bootstrap_ci(v)
    assert lo < np.mean(v) < hi and hi - lo < 0.5


def test_randomised_copy_leaves_the_loaded_model_alone():
    model = probe_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rand = cli.randomised(model, "head")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(rand.head.weight, model.head.weight)
    assert not torch.equal(rand.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)  # top half of 1
    assert torch.equal(rand.patch_embed.proj.weight, model.patch_embed.proj.weight)  # below: as trained
    deep = vit_model.VisionTransformer(vit_model.preset("vit_test_p8_32", depth=4))
    rand = cli.randomised(deep, "head")
    same = [torch.equal(a.attn.qkv.weight, b.attn.qkv.weight) for a, b in zip(deep.blocks, rand.blocks)]
    assert same == [True, True, False, False]
    w, r = deep.blocks[3].mlp.fc1.weight, rand.blocks[3].mlp.fc1.weight
    assert abs(r.std() / w.std() - 1) < 0.1  # redrawn at the trained scale


def test_cli_scores_a_tiny_checkpoint(image_folder, tiny_checkpoints, capsys):
    out = cli.main(["--data-dir", str(image_folder), "--checkpoints", str(tiny_checkpoints["scratch_vit"]),
                    "--methods", "chefer", "occlusion", "--limit", "3", "--steps", "4", "--seeds", "0",
                    "--sanity", "--json"])
    printed = json.loads(capsys.readouterr().out)
    r = printed["results"]["scratch_vit"]
    assert set(r) == {"chefer", "occlusion"} and r["chefer"]["images"] == 3 == out["images"]
    assert r["occlusion"]["deletion_ci"][0] <= r["occlusion"]["deletion"] <= r["occlusion"]["deletion_ci"][1]
    assert "spearman_randomised" in r["chefer"]
    assert "| scratch_vit | chefer | 3 |" in cli.markdown(out["results"])


def test_cli_skip_scores_only_the_photos_after_the_first_n(image_folder, tiny_checkpoints, capsys):
    """--skip: a held-out check on the photos a method was not chosen on."""
    args = ["--data-dir", str(image_folder), "--checkpoints", str(tiny_checkpoints["scratch_vit"]),
            "--methods", "rise", "--steps", "4", "--seeds", "0", "--json"]
    every = cli.main(args)
    held_out = cli.main(args + ["--skip", "2"])
    capsys.readouterr()
    assert held_out["images"] == every["images"] - 2 and held_out["skipped"] == 2
    assert held_out["results"]["scratch_vit"]["rise"]["images"] == every["images"] - 2


def test_image_paths_are_balanced_across_classes(image_folder):
    names = [p.parent.name for p in cli.image_paths(image_folder, "test", 3)]
    assert sorted(names) == ["pizza", "steak", "sushi"]


def blurred_share_forward(x: torch.Tensor) -> torch.Tensor:
    """Logits whose class-0 probability depends only on how much of the image is blurred (how far it is from
    the probe image), whichever cells: every random order then gives the same curve, so two ways of drawing
    random sets of each size must agree exactly."""
    distance = ((x - probe_image(0, 1)).abs().sum(1) > 1e-6).flatten(1).float().mean(1)  # (B,): share changed
    return torch.stack([-10 * distance, torch.zeros_like(distance)], 1)


def test_the_shared_random_bar_draws_sets_of_the_same_sizes_as_the_full_one():
    x, shape = probe_image(0, 1), (4, 4)
    full = explain.random_curves(blurred_share_forward, x, shape, 0, steps=10, seeds=(0, 1))
    shared = explain.random_curves(blurred_share_forward, x, shape, 0, steps=10, seeds=(0, 1), shared=True)
    assert shared.deletion == pytest.approx(full.deletion, abs=1e-6)
    assert shared.insertion == pytest.approx(full.insertion, abs=1e-6)
    sizes = []
    explain.random_curves(lambda b: sizes.append(len(b)) or blurred_share_forward(b), x, (7, 7), 0, steps=10,
                          seeds=(0, 1), shared=True)
    assert sum(sizes) == 2 + 2 * 10  # 49 cells: counts 5..44 and their complements, one of which splits a half


def test_the_shared_random_bar_is_the_mean_over_random_orders_recomputed_by_hand():
    """Each point of the bar is the mean over the seeds' orders of P(target) with that order's first cells
    blurred, so many of them as the step removes (deletion) or keeps blurred (insertion)."""
    model, x, shape, steps, seeds = probe_vit(), probe_image(0, 1), (4, 4), 4, (0, 1)
    bar = explain.random_curves(counting_forward(model, []), x, shape, 1, steps=steps, seeds=seeds, shared=True)
    cell = torch.from_numpy(cell_ids(32, 32, *shape))

    def p_first(order: np.ndarray, m: int) -> float:
        blurred_cells = torch.from_numpy(order[:m])
        image = torch.where(torch.isin(cell, blurred_cells), blur(x), x)
        with torch.inference_mode():
            return float(model(image).softmax(-1)[0, 1])

    orders = [np.random.default_rng(s).permutation(16) for s in seeds]
    for k, c in enumerate([4, 8, 12], start=1):
        assert bar.deletion[k] == pytest.approx(np.mean([p_first(o, c) for o in orders]), abs=1e-5)
        assert bar.insertion[k] == pytest.approx(np.mean([p_first(o, 16 - c) for o in orders]), abs=1e-5)
    assert bar.deletion[0] == pytest.approx(p_first(orders[0], 0), abs=1e-5) == bar.insertion[-1]


def test_a_score_with_the_ends_given_runs_two_images_fewer_and_says_the_same():
    model, x = probe_vit(), probe_image(0, 1)
    with torch.inference_mode():
        ends = explain.Ends(model(x), explain.blurred_logits(model, x))
    plain, given = [], []
    a = explain.score(counting_forward(model, plain), x, true_map(), 1, steps=10, seeds=(0, 1))
    b = explain.score(counting_forward(model, given), x, true_map(), 1, steps=10, seeds=(0, 1), ends=ends)
    assert sum(given) == sum(plain) - 2
    assert b.deletion_curve == pytest.approx(a.deletion_curve, abs=1e-6)
    assert b.random_insertion_auc == pytest.approx(a.random_insertion_auc, abs=1e-6)
