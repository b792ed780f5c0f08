"""Pause points: places where a test can hold a process it started until it has acted at a known
moment (sent SIGTERM mid-work, killed it mid-write, watched monitor.txt while nothing but the
heartbeat runs), instead of guessing that moment with a sleep.

Inactive unless ``NANODET_TEST_PAUSE_AT`` (comma-separated points) and ``NANODET_TEST_PAUSE_DIR``
are set *and* the process runs under pytest (``PYTEST_CURRENT_TEST``: pytest sets it, and the
processes a test starts inherit it). A task run by the platform never waits here.

A point is ``name`` (each time it is reached, until released) or ``name@n`` (the n-th time this
process reaches ``name``). Reached, the process creates ``<dir>/<point>.<pid>.reached`` and waits
until ``<dir>/<point>.go`` exists; signals are handled while it waits (a SIGTERM handler's
exception comes out of :func:`pause_point`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

PAUSE_AT_ENV = "NANODET_TEST_PAUSE_AT"
PAUSE_DIR_ENV = "NANODET_TEST_PAUSE_DIR"
MAX_PAUSE_S = 600.0  # a test that forgot to release (or died) does not leave the process waiting for ever

_reached: Counter[str] = Counter()


def pause_point(name: str) -> None:
    """Wait here when a test asked to (see the module's docstring); return at once otherwise."""
    points = os.environ.get(PAUSE_AT_ENV)
    if not points or PAUSE_DIR_ENV not in os.environ or "PYTEST_CURRENT_TEST" not in os.environ:
        return
    _reached[name] += 1
    wanted = {p.strip() for p in points.split(",")}
    point = name if name in wanted else f"{name}@{_reached[name]}"
    if point not in wanted:
        return
    folder = Path(os.environ[PAUSE_DIR_ENV])
    release = folder / f"{point}.go"
    (folder / f"{point}.{os.getpid()}.reached").touch()
    deadline = time.monotonic() + MAX_PAUSE_S
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
