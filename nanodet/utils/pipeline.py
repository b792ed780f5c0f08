"""Work on a stream of items, a few at a time, results in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def overlapped(fn: Callable[[T], R], items: Iterable[T], width: int, ahead: int = 0) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for each item, in order, with up to ``width`` calls of ``fn`` running
    at once in threads (``width`` 1 and no ``ahead``: in this thread, one after the other).

    For work that releases the GIL (an ONNX Runtime or OpenVINO forward, OpenCV, NumPy): while
    one batch is in a forward the next can start, and the items are pulled from ``items`` only
    as calls finish, so at most ``max(width, ahead)`` calls are submitted and their results wait
    in memory (``ahead``: how far the calls may run ahead of the consumer). An exception comes
    out at its item's turn; the calls already started finish first."""
    window = max(width, ahead)
    if window <= 1:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max(width, 1), thread_name_prefix="overlapped") as pool:
        pending: deque[tuple[T, Future[R]]] = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= window:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
