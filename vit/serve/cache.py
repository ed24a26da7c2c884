"""Bounded, thread-safe caches keyed by an image's content, so a request never sees another image's result.

    key = content_key(photo)            # sha1 of the decoded pixels, their size and mode
    passes = LRU(8); passes.put((key, "torch"), value); passes.get((key, "torch"))

Nothing is stored on a model: a Predictor holds its caches beside it, and every key starts with the
content hash of the decoded photo, so two users with different photos never share an entry and two
with the same photo get the same (deterministic) answer either way.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Hashable

from PIL import Image


def content_key(photo: Image.Image) -> str:
    """A hash of the decoded photo's pixels, size and mode (not of its file: two encodings of one picture
    share it, two pictures never do short of a SHA-1 collision)."""
    h = hashlib.sha1(f"{photo.mode}{photo.size}".encode())
    h.update(photo.tobytes())
    return h.hexdigest()


class LRU:
    """At most `size` entries; the least recently used goes first. Safe to share between threads."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"an LRU needs size >= 1, got {size}")
        self.size, self.hits, self.misses = size, 0, 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> Any:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
