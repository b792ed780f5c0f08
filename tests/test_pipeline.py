"""overlapped: results in order, at most ``width`` calls at once, items pulled as calls finish."""

from __future__ import annotations

import threading
import time

import pytest

from nanodet.utils.pipeline import overlapped


@pytest.mark.parametrize("width", [1, 2, 3])
def test_results_in_order_with_at_most_width_running(width):
    running, most, lock = 0, 0, threading.Lock()
    pulled: list[int] = []

    def items():
        for i in range(12):
            pulled.append(i)
            yield i

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (i % 3 == 0))  # some calls slower, so later ones finish first
        with lock:
            running -= 1
        return i * i

    out = []
    for item, result in overlapped(work, items(), width):
        out.append((item, result))
        assert len(pulled) <= len(out) + width  # never more than width items ahead
    assert out == [(i, i * i) for i in range(12)]
    assert most == width if width > 1 else most == 1


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
    """Two calls that each wait 0.2 s take about 0.2 s together at width 2, not 0.4 s."""
    start = time.perf_counter()
    list(overlapped(lambda _: time.sleep(0.2), range(2), 2))
    assert time.perf_counter() - start < 0.35
