"""nanodet.utils.pause_points: a point holds its process until the test releases it, only when
asked for (the n-th time, or each time), and never outside pytest."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from nanodet.utils.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV, pause_point


def _in_thread(name: str) -> threading.Event:
    done = threading.Event()
    threading.Thread(target=lambda: (pause_point(name), done.set()), daemon=True).start()
    return done


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120  # a hang guard: the thread gets there at once
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def test_the_nth_time_holds_until_released(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(PAUSE_AT_ENV, "other, nth-point@2")
    monkeypatch.setenv(PAUSE_DIR_ENV, str(tmp_path))
    pause_point("nth-point")  # the first time: not asked for, no wait
    assert not list(tmp_path.iterdir())
    held = _in_thread("nth-point")
    _wait_for(tmp_path / f"nth-point@2.{os.getpid()}.reached")
    assert not held.is_set()  # nothing but the release file lets it go
    (tmp_path / "nth-point@2.go").touch()
    assert held.wait(120)  # 120: a hang guard
    assert _in_thread("nth-point").wait(120)  # the third time: not asked for


def test_each_time_until_released(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(PAUSE_AT_ENV, "every-point")
    monkeypatch.setenv(PAUSE_DIR_ENV, str(tmp_path))
    first = _in_thread("every-point")
    _wait_for(tmp_path / f"every-point.{os.getpid()}.reached")
    assert not first.is_set()
    (tmp_path / "every-point.go").touch()
    assert first.wait(120) and _in_thread("every-point").wait(120)  # released for good


def test_inactive_outside_pytest_or_without_its_folder(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(PAUSE_AT_ENV, "idle-point")
    monkeypatch.setenv(PAUSE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # a task the platform runs
    assert _in_thread("idle-point").wait(120)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "x")
    monkeypatch.delenv(PAUSE_DIR_ENV)
    assert _in_thread("idle-point").wait(120)
    assert not list(tmp_path.iterdir())
