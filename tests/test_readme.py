import json
import re
from pathlib import Path

import pytest

from vit.bench.readme import BLOCK_FILES, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}


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


def test_the_faithfulness_table_is_generated_from_the_saved_run():
    from vit.bench.readme import FAITHFULNESS, faithfulness_block
    block = DOCS["explanations.md"].split("<!-- faithfulness:start -->\n")[1].split("\n<!-- faithfulness:end -->")[0]
    assert FAITHFULNESS.is_file() and block == faithfulness_block()


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


def test_the_package_table_is_generated_from_the_modules_docstrings(tmp_path):
    """docs/package.md lists every module of vit, with its docstring's first sentence; a module added or
    described anew makes the committed table stale."""
    from vit.bench.readme import package_block
    block = DOCS["package.md"].split("<!-- package:start -->\n")[1].split("\n<!-- package:end -->")[0]
    assert block == package_block()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "vit").rglob("*.py") if p.name != "__main__.py"}
    assert {row.split("`")[1] for row in block.splitlines()[2:]} == modules


def test_the_explore_tables_are_generated_from_the_committed_explorer_record():
    """docs/explore.md's block is `python -m vit.explore`'s committed record and banks, each model's figures in it;
    its figure is written beside it."""
    from vit.bench.readme import EXPLORE_FIGURE, EXPLORER_RUN, explore_block
    block = DOCS["explore.md"].split("<!-- explore:start -->\n")[1].split("\n<!-- explore:end -->")[0]
    assert EXPLORER_RUN.is_file() and block == explore_block() and EXPLORE_FIGURE.is_file()
    for r in json.loads(EXPLORER_RUN.read_text())["models"].values():
        agree = r["neighbours"]["agreement_with_answer"]
        assert f"| {len(r['test']['mistakes'])} + {len(r['val']['mistakes'])} | {agree['test']:.1%} / " in block
