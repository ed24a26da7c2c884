"""vit/serve/heap.py: freed memory is handed back when the last request in flight ends, never before."""
import threading

from vit.serve import heap


def test_the_last_request_to_end_trims_the_heap(monkeypatch):
    trims = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(threading.current_thread().name) or True)
    released = heap.Released()
    with released:
        with released:
            pass
        assert trims == [] and released.in_flight == 1  # one still runs: nothing trimmed yet
    assert len(trims) == 1 and released.in_flight == 0 and released.trims == 1


def test_a_request_that_fails_still_counts_out(monkeypatch):
    monkeypatch.setattr(heap, "trim", lambda: True)
    released = heap.Released()
    try:
        with released:
            raise ValueError("a bad photo")
    except ValueError:
        pass
    assert released.in_flight == 0 and released.trims == 1


def test_glibc_takes_the_calls():
    """On this Linux host the C library has malloc_trim and mallopt; both calls go through."""
    assert heap.LIBC is not None and heap.limit_arenas() and isinstance(heap.trim(), bool)
