"""vit.bench on tiny checkpoints: counts, references and the shape of the report. No timing is asserted:
timing belongs in the benchmark's printed figures, never in a test that asserts a time."""
import json
import shutil

import pytest
import torch
from conftest import CLASSES, ROOT

from vit.bench import cli, flops, memory, optimisations, references, report, timing
from vit.explain import methods
from vit.models import checkpoint, families
from vit.models.factory import load
from vit.models.scratch_vit import VisionTransformer, preset
from vit.serve.predictor import Predictor, optimise


def analytic_flops(cfg) -> int:
    """2 x MACs of one image through a ViT: patch projection, per block qkv, QK^T, AV, proj and MLP, head(s)."""
    n_patch, d = cfg.grid_size**2, cfg.embed_dim
    n, hidden = n_patch + cfg.num_prefix_tokens, int(d * cfg.mlp_ratio)
    patch = n_patch * d * cfg.in_chans * cfg.patch_size**2
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * hidden
    heads = (2 if cfg.distilled else 1) * d * cfg.num_classes
    return 2 * (patch + cfg.depth * block + heads)


@pytest.mark.parametrize("distilled", [False, True])
def test_flops_of_tiny_vit_equal_the_analytic_count(distilled):
    model = VisionTransformer(preset("vit_test_p8_32", distilled=distilled)).eval()
    x = torch.randn(1, 3, 32, 32)
    assert flops.count_flops(model, x) == analytic_flops(model.cfg)
    # the fused SDPA formula agrees with torch's own count of the explicit path's two matmuls
    assert flops.count_flops(model, x) == flops.count_flops(lambda x: model.forward_with_attention(x)[0], x)


@pytest.mark.parametrize("name, distilled", [("vit_test_p8_32", False), ("vit_test_p8_32", True),
                                             ("vit_foodvision_p8_96", True)])  # the committed scratch ViT's
def test_timm_reference_loads_our_weights_and_logits_match(name, distilled):
    torch.manual_seed(0)
    model = VisionTransformer(preset(name, distilled=distilled, drop_path=0.1)).eval()
    ref = references.timm_reference(model)
    assert type(ref).__name__ == ("VisionTransformerDistilled" if distilled else "VisionTransformer")
    x = torch.randn(2, 3, model.cfg.image_size, model.cfg.image_size)
    with torch.inference_mode():
        assert torch.allclose(model(x), ref(x), atol=1e-5)


def test_time_interleaved_gives_every_case_its_runs():
    x = torch.randn(4, 4)
    cases = {"mm": timing.Case(lambda x: x @ x, x), "one_thread": timing.Case(lambda x: x + 1, x, threads=1)}
    threads = torch.get_num_threads()
    t = timing.time_interleaved(cases, runs=7, warmup=1)
    assert {k: v["runs"] for k, v in t.items()} == {"mm": 7, "one_thread": 7}
    assert all(v["min"] <= v["p50"] <= v["p95"] for v in t.values())
    assert torch.get_num_threads() == threads


def small_effnet(src, dst):
    """The tiny effnet checkpoint (full Lite0) fed 64 px images, to keep the test quick."""
    ckpt = load(src)
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "num_params", "weights_dtype")}
    meta["preprocessing"] = {**meta["preprocessing"], "input_size": [3, 64, 64]}
    checkpoint.save(dst, ckpt.model, meta)


def run_cli(args, capsys) -> dict:
    threads = torch.get_num_threads()
    try:
        assert cli.main(args) == 0
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_json_report_on_tiny_checkpoints(tiny_checkpoints, image_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(optimisations, "ATOL", 0.0)  # every variant that is not bit-exact gets re-checked
    for family in ("scratch_vit", "timm_vit"):
        shutil.copy(tiny_checkpoints[family], tmp_path / f"{family}.safetensors")
    small_effnet(tiny_checkpoints["effnet"], tmp_path / "effnet.safetensors")
    out = run_cli(["--json", "--checkpoints", str(tmp_path), "--runs", "2", "--warmup", "0", "--batch-size", "2",
                   "--matmul-size", "256", "--threads", "1", "--test-dir", str(image_folder / "test"), "--no-rss",
                    "--engine-batches", "1,3", "--explain-runs", "1"],
                  capsys)
    assert {"machine", "settings", "floor", "models", "references", "optimisations", "bench_peak_rss_mb"} <= set(out)
    assert {"cpu", "cores", "torch_threads", "torch"} <= set(out["machine"])
    assert out["floor"]["matmul_gflops_per_s"] > 0
    for family, m in out["models"].items():
        assert m["status"] == "ok", family
        assert {"params", "file_mb", "gflops", "latency_ms", "throughput_images_per_s", "explain",
                "latency_over_floor"} <= set(m)
        assert m["latency_ms"]["runs"] == 2 and m["gflops"] > 0
    assert out["models"]["effnet"]["explain"]["what"] == "Grad-CAM"
    assert set(out["references"]["attention_over_forward"]) == {"scratch_vit", "timm_vit"}
    timm_ref = out["references"]["scratch_vs_timm"]
    assert timm_ref["logits_allclose"] and timm_ref["bar"] == 1.05 and timm_ref["ratio"]["p50"] > 0
    hybrid = out["references"]["hybrid_vs_lite0"]
    assert hybrid["lite0_gflops"] > 0 and hybrid["stem_share"]["best"] > 0
    variants = {f: [v["variant"] for v in rows] for f, rows in out["optimisations"].items()}
    assert "int8" in variants["scratch_vit"] and "channels_last" in variants["effnet"]
    assert "int8" not in variants["effnet"] and "no_grad" in variants["timm_vit"]
    int8 = next(v for v in out["optimisations"]["scratch_vit"] if v["variant"] == "int8")
    assert not int8["bit_exact"] and not int8["allclose"]  # changed numerics: the test split was re-checked
    assert int8["test"]["n_images"] == int8["baseline_test"]["n_images"] == len(CLASSES) * 2
    assert 0 <= int8["test"]["agreement"] <= 1 and int8["baseline_test"]["agreement"] == 1.0
    no_grad = next(v for v in out["optimisations"]["scratch_vit"] if v["variant"] == "no_grad")
    assert no_grad["bit_exact"] and "test" not in no_grad  # the same logits: nothing to re-check
    for family, rows in out["engines"].items():  # every engine at both batch sizes, top-1 checked against eager
        engines = {"torch", "onnxruntime", "bare onnxruntime"} | ({"onnxruntime int8"} if families.get(family).int8 else set())
        assert {(r["engine"], r["batch_size"]) for r in rows} == {(e, b) for e in engines for b in (1, 3)}, family
        for r in rows:
            assert r["latency_ms"]["runs"] == 2 and r["over_floor"] > 0 and 0 <= r["top1_agreement"] <= 1
            if r["engine"] in ("torch", "onnxruntime", "bare onnxruntime"):  # fp32: the same top-1 as eager
                assert r["top1_agreement"] == 1.0, r
    for family, rows in out["explanations"].items():  # a full /explain for every method the model lists
        assert [r["method"] for r in rows] == list(methods.of(families.get(family))), family
        assert [r["default"] for r in rows] == [True] + [False] * (len(rows) - 1)
        assert all(r["runs"] == 1 and 0 < r["p50_s"] <= r["max_s"] for r in rows)
    md = report.performance_markdown(out)
    assert "### Full explanations" in md and "occlusion" in md
    assert md.startswith("Measured by `python -m vit.bench") and out["machine"]["cpu"] in md
    assert all(title in md for title in (families.get(f).title for f in ("scratch_vit", "timm_vit", "effnet")))
    assert "### Engines" in md and "ONNX Runtime (vit.runtime.engines)" in md and "bare ONNX Runtime session" in md
    assert out["machine"]["cpu"] in report.performance_text(out)


def test_missing_checkpoint_is_reported_not_fatal(tmp_path):
    settings = cli.Settings(runs=1, warmup=0, test_dir=None, rss=False, matmul_size=256)
    out = cli.run({"effnet": tmp_path / "effnet.safetensors"}, settings)
    assert out["models"]["effnet"]["status"] == "missing"
    assert "no such checkpoint" in out["models"]["effnet"]["error"]
    assert "missing" in report.performance_markdown(out)


@pytest.mark.slow
def test_rss_probe_reports_the_child_not_the_parent(tiny_checkpoints):
    """ru_maxrss survives fork + exec: a child that read it would report at least this process's peak."""
    ballast = torch.ones(512 * 2**20 // 4)  # 512 MB, touched, in the parent only
    parent_peak = memory.max_rss_mb()
    rss = memory.probe_rss(tiny_checkpoints["scratch_vit"], threads=1)
    del ballast
    assert 0 < rss["import_mb"] <= rss["serve_mb"] < parent_peak


def test_optimise_keeps_the_original_and_channels_last_keeps_the_logits(tiny_checkpoints):
    ckpt = load(tiny_checkpoints["effnet"])
    fast = optimise(ckpt.model, "effnet", "channels_last")
    assert fast is not ckpt.model
    assert ckpt.model.conv_stem.weight.is_contiguous()  # the original is untouched
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(fast(x), ckpt.model(x), atol=optimisations.ATOL)
    with pytest.raises(ValueError, match="nn.Linear"):
        optimise(ckpt.model, "effnet", "int8")
    with pytest.raises(ValueError, match="unknown optimisation"):
        optimise(ckpt.model, "effnet", "fp8")


def test_predictor_optimisation_option(tiny_checkpoints):
    from conftest import make_image

    plain = Predictor.from_checkpoint(tiny_checkpoints["scratch_vit"])
    int8 = Predictor.from_checkpoint(tiny_checkpoints["scratch_vit"], optimisation="int8")
    assert plain.optimisation == "none" and int8.optimisation == "int8"
    image = make_image(3)
    assert set(int8.predict(image)) == set(CLASSES)
    assert len(int8.explain(image).maps) == plain.num_layers
    assert max(abs(plain.predict(image)[c] - int8.predict(image)[c]) for c in CLASSES) < 0.05


def test_the_gate_row_says_what_the_gate_adds_to_a_request(tiny_checkpoints):
    """vit.bench's gate row: the committed EfficientNet's gate time is part of its request; no gate, no row."""
    from vit.bench.gate_cost import bench_gate
    from vit.bench.report import gate_rows

    assert bench_gate(tiny_checkpoints["effnet"], runs=2, warmup=1)["gate"] is None
    committed = ROOT / "checkpoints" / "effnet.safetensors"
    if not committed.is_file():
        pytest.skip("the committed checkpoints are not here")
    g = bench_gate(committed, runs=3, warmup=1)
    assert g["gate"] == "knn" and 0 < g["gate_ms"] < g["request_ms"] and 0 < g["forward_ms"] < g["request_ms"]
    assert 0 < g["gate_share"] < 1
    _, rows = gate_rows({"models": {"effnet": {"title": "E"}}, "gate": {"effnet": g, "x": {"gate": None}}})
    assert rows[0][4] == f"{g['gate_ms']:.1f}" and rows[1][4] == "no gate"
