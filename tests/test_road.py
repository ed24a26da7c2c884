"""ROAD (vit/explain/road.py): leak-free noisy linear imputation, and MoRF / LeRF that rank a right map
above a wrong one."""
import json

import numpy as np
import pytest
import torch
from probes import COL, ROW, probe_image, probe_vit

from vit.explain import cli, road


def ramp(side: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(float(side)), torch.arange(float(side)), indexing="ij")
    return torch.stack([0.02 * i + 0.01 * j, -0.03 * i, 0.01 * j + 1])[None] * 48 / side  # (1, 3, side, side)


@pytest.mark.parametrize("side", [48, 192])  # 192: solved on a 48 x 48 grid and upsampled
def test_imputation_fills_a_hole_in_a_linear_image_with_the_plane(side):
    """The 8-neighbour mean of a linear function is its value: an interior hole is filled exactly."""
    x, removed = ramp(side), torch.zeros(1, side, side, dtype=torch.bool)
    s = side // 48
    removed[0, 10 * s:35 * s, 8 * s:30 * s] = True
    y = road.impute(x, removed, noise=0.0)
    assert (y - x).abs().max() < 2e-2
    assert torch.equal(y[:, :, ~removed[0]], x[:, :, ~removed[0]])  # known pixels untouched


@pytest.mark.parametrize("side", [48, 192])
def test_imputation_never_reads_the_removed_pixels(side):
    cells = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(0)) < 0.6  # removed in 16 px cells
    x, removed = ramp(side), cells.repeat_interleave(side // 12, 1).repeat_interleave(side // 12, 2)
    tampered = x.clone()
    tampered[:, :, removed[0]] = 100.0  # what was there must not matter
    assert torch.equal(road.impute(x, removed, seed=3), road.impute(tampered, removed, seed=3))


def test_morf_falls_and_lerf_holds_for_the_right_map_not_for_its_reverse():
    model, x = probe_vit(), probe_image(1, 2)

    def forward(batch):
        with torch.inference_mode():
            return model(batch)
    right = np.zeros((4, 4))
    right[ROW, COL] = 1.0  # the one patch the probe reads
    good, bad = road.road(forward, x, right, 2), road.road(forward, x, -right, 2)
    assert good.morf < bad.morf and good.lerf > bad.lerf and good.combined > 0 > bad.combined
    assert len(good.morf_curve) == len(road.PERCENTILES)


def test_road_agreement_is_the_rank_correlation_over_methods():
    per = {m: {"road_combined": c, "insertion_ratio": 1 + d, "deletion_ratio": 1 - d}
           for m, c, d in (("a", 0.3, 0.2), ("b", 0.1, 0.05), ("c", 0.2, 0.1))}
    assert np.isclose(cli.road_agreement(per), 1.0)
    per["a"]["road_combined"] = 0.0
    assert cli.road_agreement(per) < 0


def test_cli_adds_road_and_its_agreement(image_folder, tiny_checkpoints, capsys):
    out = cli.main(["--data-dir", str(image_folder), "--checkpoints", str(tiny_checkpoints["scratch_vit"]),
                             "--methods", "lrp", "rise", "--limit", "2", "--steps", "4", "--seeds", "0", "--road",
                             "--json"])
    r = json.loads(capsys.readouterr().out)["results"]["scratch_vit"]
    assert all(0 <= r[m]["road_morf"] <= 1 and 0 <= r[m]["road_lerf"] <= 1 for m in ("lrp", "rise"))
    assert np.isclose(r["lrp"]["road_combined"], r["lrp"]["road_lerf"] - r["lrp"]["road_morf"])
    assert "scratch_vit" in out["road_agreement"] and "ROAD MoRF" in cli.markdown(out["results"])
