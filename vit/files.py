"""Files written whole or not at all: every writer of a checkpoint, an export, a training state or a
result image goes through `atomic_path`, so a reader never sees half a file and two writers never mix."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; renamed over `path` when the block ends
    without an error, removed otherwise. The new file keeps the mode of the one it replaces (0o644 for a
    new one: mkstemp's 0o600 would hide it from other users); `fsync` flushes it to disk first (a
    training state must survive a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
