"""vit/files.py: a file is replaced whole or not at all."""
import os

import pytest

from vit.files import atomic_path


def test_a_write_that_fails_leaves_the_old_file_and_no_litter(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.safetensors"]


def test_a_write_replaces_the_file_and_keeps_its_mode(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"old")
    path.chmod(0o640)
    with atomic_path(path, fsync=True) as tmp:
        assert tmp.parent == tmp_path and not path.read_bytes() == b"new"
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o640
    with atomic_path(tmp_path / "sub" / "fresh.png") as tmp:  # a new file in a new folder: readable by all
        tmp.write_bytes(b"x")
    assert (tmp_path / "sub" / "fresh.png").stat().st_mode & 0o777 == 0o644
