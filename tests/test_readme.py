import json
import math
import re
from pathlib import Path

import pytest

from vit.bench.readme import BLOCK_FILES, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
HAND_WRITTEN = {"limits"}  # docs/limits.md: marked, written by hand, checked against the code below


def block(text: str, name: str) -> str:
    """What lies between `<!-- name:start -->` and `<!-- name:end -->`."""
    return text.split(f"<!-- {name}:start -->\n")[1].split(f"\n<!-- {name}:end -->")[0]


def test_replace_block_swaps_only_the_marked_text():
    text = "a\n<!-- results:start -->\nold\n<!-- results:end -->\nb"
    assert replace_block(text, "results", "new\nrows") == "a\n<!-- results:start -->\nnew\nrows\n<!-- results:end -->\nb"
    with pytest.raises(ValueError, match="no <!-- perf:start -->"):
        replace_block(text, "perf", "x")


def test_readme_has_the_generated_blocks_and_one_test_command():
    """The measured sections live in docs/, each block in the file vit.bench.readme writes it to."""
    for name in ("models", "results", "performance", "faithfulness", "trust", "explore"):
        text = BLOCK_FILES[name].read_text()
        assert f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text, BLOCK_FILES[name]
    assert "<!-- limits:start -->" in DOCS["limits.md"] and "<!-- limits:end -->" in DOCS["limits.md"]
    assert README.count("<!-- test-command -->") == 1
    assert "sdk: gradio" in README and "app_file: app.py" in README


def test_readme_pins_the_installed_gradio():
    import gradio
    assert f"sdk_version: {gradio.__version__}" in README


def test_the_faithfulness_and_road_tables_are_generated_from_the_saved_run():
    from vit.bench.readme import FAITHFULNESS, faithfulness_block, road_block
    assert FAITHFULNESS.is_file() and block(DOCS["explanations.md"], "faithfulness") == faithfulness_block()
    assert block(DOCS["explanations.md"], "road") == road_block()


def test_the_issue_31_tables_are_generated_from_the_saved_sitting():
    """docs/performance.md's before / after table is checkpoints/speed.json (two `python -m vit.bench.speed`
    runs of one sitting), figure for figure; docs/explanations.md's score check is checkpoints/score_bar.json."""
    from vit.bench.speed_tables import SCORE_BAR, SPEED, score_bar_block, speed_block
    text = block(DOCS["performance.md"], "speed")
    assert text == speed_block()
    record = json.loads(SPEED.read_text())
    before, after = record["before"], record["after"]
    assert set(after["models"]) == {p.stem for p in (ROOT / "checkpoints").glob("*.safetensors")}
    for name, run in after["models"].items():
        b, a = before["models"][name]["maps"], run["maps"]
        assert [r["photo"] for r in a["rows"]] == [r["photo"] for r in b["rows"]]  # the same photos both times
        assert f"| {name} | {b['default']} → {a['default']} | {b['map_ms']:.0f} → **{a['map_ms']:.0f}** |" in text
    m = after["memory"]["growth_mb"]
    assert f"{m['warm -> burst 1']:+.0f} MB | {m['burst 1 -> burst 2']:+.0f} MB" in text
    assert block(DOCS["explanations.md"], "score_bar") == score_bar_block()
    bar = json.loads(SCORE_BAR.read_text())["results"]
    assert {r["default"] for r in bar.values()} and all(r["photos"] == 45 for r in bar.values())


def test_the_trust_tables_are_generated_from_the_saved_ood_run():
    """docs/trust.md's block is `python -m vit.trust.ood`'s saved run, each model's figures in it."""
    from vit.bench.readme import OOD_RUN, trust_block
    block = DOCS["trust.md"].split("<!-- trust:start -->\n")[1].split("\n<!-- trust:end -->")[0]
    assert OOD_RUN.is_file() and block == trust_block()
    run = json.loads(OOD_RUN.read_text())
    for r in run["runs"]:
        g = r["gate"]
        assert f"| {g['test_ece_before']:.3f} → {g['test_ece_after']:.3f} |" in block
        binned = g["test_ece_after_by_binning"]  # the ECE under other bin edges, beside the reported one
        assert len(binned) == 3 and f"| {' / '.join(f'{v:.3f}' for v in binned.values())} |" in block
        assert f"| {g['test_coverage']:.1%} | {g['test_mean_set_size']:.2f} |" in block


def test_the_inside_tables_are_generated_from_the_saved_record():
    """docs/inside.md's block is checkpoints/inside.json (`python -m vit.explore.inside`) as tables and sentences,
    its figures beside it."""
    from vit.bench.inside_tables import RECORD, inside_block
    block = DOCS["inside.md"].split("<!-- inside:start -->\n")[1].split("\n<!-- inside:end -->")[0]
    assert RECORD.is_file() and block == inside_block()
    run = json.loads(RECORD.read_text())
    for model, r in run["records"].items():
        assert (ROOT / "docs" / f"inside_{model}.png").is_file()
        assert f"| 1 | {' / '.join(f'{v:.1f}' for v in r['attention_distance_px'][0])} |" in block


def test_the_readme_is_short_and_links_every_doc():
    """A stranger reads it in five minutes: under 250 lines, the measurements one link away, and
    every image and relative link it or a doc names exists."""
    assert len(README.splitlines()) <= 250
    assert all(f"docs/{name}" in README for name in DOCS), [n for n in DOCS if f"docs/{n}" not in README]
    for base, text in [(ROOT, README), *((ROOT / "docs", t) for t in DOCS.values())]:
        for target in re.findall(r"\]\(([^)#:]+)\)", text):
            assert (base / target).exists(), f"{target} (from {base})"


def test_the_readme_tells_how_to_run_the_fast_tests():
    assert 'pytest -m "not slow"' in README


def test_every_marked_block_is_generated_and_checked_here():
    """Every `<!-- name:start -->` block of the README and docs/ is one that vit.bench.readme writes (each
    regenerated from its record and compared by a test below), or the hand-written limits."""
    marked = {name: path for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
              for name in re.findall(r"^<!-- (\w+):start -->$", path.read_text(), re.M)}
    assert set(marked) == set(BLOCK_FILES) | HAND_WRITTEN
    assert all(marked[name] == path for name, path in BLOCK_FILES.items())


def test_the_models_and_results_tables_are_generated_from_the_checkpoints_and_the_saved_latency():
    """docs/results.md's block: the committed checkpoints' metadata and checkpoints/latency.json (the latency
    column, as `python -m vit.bench.readme` last measured it); the README's models table is its first table."""
    from vit.bench.readme import LATENCY, models_block, results_block
    latency = json.loads(LATENCY.read_text())
    results = block(DOCS["results.md"], "results")
    assert results == results_block(latency)
    assert block(README, "models") == models_block(results)
    assert f"measured by `python -m vit.bench.readme` on {latency['machine']}." in results


def test_the_performance_block_is_generated_from_the_saved_benchmark():
    """docs/performance.md's block: checkpoints/bench.json, the benchmark and cold start that `python -m
    vit.bench.readme --performance` last ran, figure for figure."""
    from vit.bench.readme import BENCH, performance_block
    record = json.loads(BENCH.read_text())
    text = block(DOCS["performance.md"], "performance")
    assert text == performance_block(record)
    g = record["bench"]["gate"]["effnet"]
    assert f"| {g['request_ms']:.1f} | {g['forward_ms']:.1f} | {g['gate_ms']:.1f} | {g['gate_share']:.0%} |" in text
    assert f"a warm `/predict` request then takes {record['cold_start']['exports']['warm_request_s'] * 1e3:.0f} ms" in text


def test_regenerating_every_block_from_the_records_changes_nothing(tmp_path):
    """`python -m vit.bench.readme --from-records` (measuring nothing) on a copy of the README and docs/ gives
    them back byte for byte: every committed block is what its record makes."""
    import shutil

    from vit.bench import readme
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    assert readme.main(["--from-records", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text() == README
    assert {p.name: p.read_text() for p in sorted((tmp_path / "docs").glob("*.md"))} == DOCS


def test_the_api_examples_figures_are_the_committed_checkpoints():
    """The README's /predict example shows what the app returns for its model today (api.predict_record):
    the file's size, its parameters, its gate's threshold and temperature, at the example's precision."""
    from vit.models.checkpoint import read_meta
    example = README.split("### API", 1)[1].split("```", 2)[1]
    model = re.search(r'"model": "(\w+)"', example).group(1)
    path = ROOT / "checkpoints" / f"{model}.safetensors"
    meta = read_meta(path)
    actual = {"size_mb": path.stat().st_size / 1e6, "num_params": meta["num_params"],
              "ood_threshold": meta["trust"]["threshold"], "temperature": meta["trust"]["temperature"]}
    for key, value in actual.items():
        shown = re.search(rf'"{key}": ([0-9.]+)', example).group(1)
        places = len(shown.split(".")[1]) if "." in shown else 0
        assert float(shown) == round(value, places), (key, shown, value)


def test_the_limits_are_the_codes():
    """docs/limits.md is written by hand: each figure in it is the constant the code enforces."""
    import ast

    from vit.app.gradio_io import RESULT_TTL_S
    from vit.data.images import MAX_PIXELS, MAX_SIDE, MIN_SIDE
    app = {t.id: ast.literal_eval(node.value) for node in ast.parse((ROOT / "app.py").read_text()).body
           if isinstance(node, ast.Assign) for t in node.targets
           if isinstance(t, ast.Name) and t.id in ("QUEUE", "MAX_FILE_SIZE")}  # read, not imported: no models load
    text = " ".join(block(DOCS["limits.md"], "limits").split())  # one line: the Markdown wraps anywhere
    side = f"{math.isqrt(MAX_PIXELS):,}".replace(",", " ")
    assert f"up to {MAX_PIXELS // 10**6} megapixels ({side} × {side})" in text
    assert f"shrunk to fit {MAX_SIDE} px" in text and f"Images under {MIN_SIDE} px" in text
    assert f"**Upload size:** {app['MAX_FILE_SIZE'][:-2]} MB (`max_file_size=\"{app['MAX_FILE_SIZE']}\"`)" in text
    assert f"computes {app['QUEUE']['default_concurrency_limit']} requests at a time" in text
    assert f"with up to {app['QUEUE']['max_size']} waiting" in text
    assert RESULT_TTL_S == 3600 and "kept in Gradio's cache for an hour" in text


def test_the_package_table_is_generated_from_the_modules_docstrings(tmp_path):
    """docs/package.md lists every module of vit, with its docstring's first sentence; a module added or
    described anew makes the committed table stale."""
    from vit.bench.readme import package_block
    block = DOCS["package.md"].split("<!-- package:start -->\n")[1].split("\n<!-- package:end -->")[0]
    assert block == package_block()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "vit").rglob("*.py") if p.name != "__main__.py"}
    assert {row.split("`")[1] for row in block.splitlines()[2:]} == modules


def test_the_japanese_quick_start_gives_the_same_two_commands():
    """README.ja.md (linked from the README) runs the app and the tests with the README's own commands."""
    ja = (ROOT / "README.ja.md").read_text()
    assert "](README.ja.md)" in README
    commands = [line for line in README.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2 and all(c in ja.splitlines() for c in commands), commands


def test_the_explore_tables_are_generated_from_the_committed_explorer_record():
    """docs/explore.md's block is `python -m vit.explore`'s committed record and banks, each model's figures in it;
    its figure is written beside it."""
    from vit.bench.explore_tables import EXPLORE_FIGURE, EXPLORER_RUN, explore_block
    block = DOCS["explore.md"].split("<!-- explore:start -->\n")[1].split("\n<!-- explore:end -->")[0]
    assert EXPLORER_RUN.is_file() and block == explore_block() and EXPLORE_FIGURE.is_file()
    for r in json.loads(EXPLORER_RUN.read_text())["models"].values():
        agree = r["neighbours"]["agreement_with_answer"]
        assert f"| {len(r['test']['mistakes'])} + {len(r['val']['mistakes'])} | {agree['test']:.1%} / " in block
