import pytest

from vit.readme import replace_block

README = (__import__("pathlib").Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_replace_block_swaps_only_the_marked_text():
    text = "a\n<!-- results:start -->\nold\n<!-- results:end -->\nb"
    assert replace_block(text, "results", "new\nrows") == "a\n<!-- results:start -->\nnew\nrows\n<!-- results:end -->\nb"
    with pytest.raises(ValueError, match="no <!-- perf:start -->"):
        replace_block(text, "perf", "x")


def test_readme_has_the_generated_blocks_and_one_test_command():
    for name in ("results", "performance", "limits"):
        assert f"<!-- {name}:start -->" in README and f"<!-- {name}:end -->" in README
    assert README.count("<!-- test-command -->") == 1
    assert "sdk: gradio" in README and "app_file: app.py" in README


def test_readme_pins_the_installed_gradio():
    import gradio
    assert f"sdk_version: {gradio.__version__}" in README


def test_the_faithfulness_table_is_generated_from_the_saved_run():
    from vit.readme import FAITHFULNESS, faithfulness_block
    block = README.split("<!-- faithfulness:start -->\n")[1].split("\n<!-- faithfulness:end -->")[0]
    assert FAITHFULNESS.is_file() and block == faithfulness_block()
