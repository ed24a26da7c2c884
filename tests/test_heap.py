"""vit/serve/heap.py: freed memory is handed back once the last request in flight has ended and no other has
begun for a while, never before, and never on a request's own path."""
import threading

from vit.serve import heap


def counted(idle_s: float) -> tuple[list[str], heap.Released]:
    """A `Released` whose trims are recorded (by thread name) instead of made: its own, not those of the
    timers that other tests' requests left on the process's `RELEASED`."""
    trims = []
    return trims, heap.Released(idle_s, trim=lambda: trims.append(threading.current_thread().name) or True)


def settle(released: heap.Released) -> None:
    """Wait for the timers the released requests set."""
    for t in [t for t in threading.enumerate() if isinstance(t, threading.Timer)]:
        t.join(released.idle_s + 5)


def test_the_heap_is_trimmed_after_the_last_request_on_a_timer():
    trims, released = counted(idle_s=0.05)
    with released:
        with released:
            pass
        settle(released)
        assert trims == [] and released.in_flight == 1  # one still runs: nothing trimmed
    assert trims == []  # the request that ended last does not wait for the trim
    settle(released)
    assert len(trims) == 1 and released.trims == 1 and trims[0] != threading.current_thread().name


def test_a_request_begun_meanwhile_defers_the_trim():
    """A visitor's next click within `idle_s`: the earlier timer trims nothing; the click's own end sets the
    one trim."""
    trims, released = counted(idle_s=0.3)
    with released:
        pass
    with released:  # begun before the first timer fires
        pass
    settle(released)
    assert len(trims) == 1 and released.trims == 1


def test_a_request_that_fails_still_counts_out():
    trims, released = counted(idle_s=0.01)
    try:
        with released:
            raise ValueError("a bad photo")
    except ValueError:
        pass
    settle(released)
    assert released.in_flight == 0 and len(trims) == 1


def test_glibc_takes_the_calls():
    """On this Linux host the C library has malloc_trim and mallopt; both calls go through."""
    assert heap.LIBC is not None and heap.limit_arenas() and isinstance(heap.trim(), bool)
