"""overlapped: results in order, at most ``width`` calls at once, items pulled as calls finish."""

from __future__ import annotations

import threading

import pytest

from nanodet.utils.pipeline import overlapped


@pytest.mark.parametrize("width", [1, 2, 3])
def test_results_in_order_with_at_most_width_running(width):
    """Items come in waves of ``width`` calls that can only go on once all ``width`` are running
    (a barrier), and inside a wave the last call finishes first (each waits for the next one):
    results still come in order, and never more than ``width`` calls run at once."""
    running, most, lock = 0, 0, threading.Lock()
    pulled: list[int] = []
    wave = threading.Barrier(width, timeout=60)  # 60: a hang guard; a wave meets at once
    finished = [threading.Event() for _ in range(12)]

    def items():
        for i in range(12):
            pulled.append(i)
            yield i

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        wave.wait()
        if (i + 1) % width:  # not the last of its wave: finish after the next one
            assert finished[i + 1].wait(60)
        with lock:
            running -= 1
        finished[i].set()
        return i * i

    out = []
    for item, result in overlapped(work, items(), width):
        out.append((item, result))
        assert len(pulled) <= len(out) + width  # never more than width items ahead
    assert out == [(i, i * i) for i in range(12)]
    assert most == width


def test_an_exception_comes_out_at_its_items_turn():
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for item, _ in overlapped(work, range(6), 2):
            got.append(item)
    assert got == [0, 1, 2]


def test_calls_overlap_in_time():
    """Two calls that each wait for the other to have started both finish at width 2; at width 1
    (one call after the other) the first waits in vain."""
    met = threading.Barrier(2, timeout=60)  # 60: a hang guard; the two calls meet at once
    assert [item for item, _ in overlapped(lambda _: met.wait(), range(2), 2)] == [0, 1]
    alone = threading.Barrier(2, timeout=0.5)  # nothing can come: the wait only bounds the control
    with pytest.raises(threading.BrokenBarrierError):
        list(overlapped(lambda _: alone.wait(), range(2), 1))
