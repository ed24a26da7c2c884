"""Result files handed to Gradio (vit/app/gradio_io.py)."""
import os
import time
from pathlib import Path

from PIL import Image


def test_a_result_handed_out_again_survives_the_age_based_clean_up(tmp_path, monkeypatch):
    """The same overlay as an hour ago reuses its file; another request's clean-up (every 200th write)
    must not delete it before Gradio has copied it (Gradio then falls back to the bare path: a 403)."""
    from vit.app import gradio_io

    image = Image.new("RGB", (8, 8), (200, 30, 30))
    path = Path(gradio_io.result_file(image, tmp_path))
    hours_ago = time.time() - 2 * gradio_io.RESULT_TTL_S
    stale = tmp_path / "nobody-asked-again.png"
    stale.write_bytes(b"x")
    for p in (path, stale):
        os.utime(p, (hours_ago, hours_ago))
    monkeypatch.setattr(gradio_io, "_writes", 0)
    assert Path(gradio_io.result_file(image, tmp_path)) == path  # handed out again: no write, no clean-up
    monkeypatch.setattr(gradio_io, "_writes", 199)
    gradio_io.result_file(Image.new("RGB", (8, 8)), tmp_path)  # another request: the clean-up runs
    assert path.is_file() and not stale.exists()
