"""``/out/monitor.txt``: one record, rewritten atomically each time.

``task_id<TAB>timestamp<TAB>percent<TAB>state[<TAB>return_code<TAB>message]`` then free text
(a traceback) on the following lines. The executor writes state 2 (running) or 4 (error).
A task made of stages (mining then infer) maps each stage's 0→1 into its share of the bar.

Alive at every moment: while a task runs, a heartbeat thread in the task process rewrites the
record (same progress, new timestamp) whenever nobody has written it for ``HEARTBEAT_S``, so
the platform sees the file change at least that often in phases that report no progress of
their own (evaluation, stage writing, export, a torchrun start-up). Several processes write the
record (the task process, torchrun's rank 0): every write happens under an exclusive lock on
the record's folder and never lowers the progress already written for the task.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from nanodet.utils.io import atomic_write_text

RUNNING, ERROR = 2, 4
HEARTBEAT_S = float(os.environ.get("NANODET_MONITOR_HEARTBEAT_S", "10"))  # well under the 30 s the platform may wait


# A process forked while one of its threads holds the lock (a DataLoader worker forked while
# the heartbeat writes) would hold it too, for good: its copy of the descriptor is closed at once.
_HELD: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


class Clock:
    """The monitor's time: record timestamps (:meth:`time`), the write throttle (:meth:`monotonic`)
    and the heartbeat's pauses (:meth:`wait`). Tests hand a :class:`Monitor` one they move by hand."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` or until ``stop`` is set; True when it was set."""
        return stop.wait(seconds)


SYSTEM_CLOCK = Clock()


class Monitor:
    def __init__(self, path: Path, task_id: str, min_interval: float = 0.5, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.task_id = task_id
        self.min_interval = min_interval
        self.clock = clock
        self._last_write = 0.0
        self.percent = 0.0
        self.enabled = True

    def _write(self, line: str, extra: str = "") -> None:
        atomic_write_text(self.path, line + "\n" + (extra.rstrip("\n") + "\n" if extra else ""))
        self._last_write = self.clock.monotonic()

    def progress(self, fraction: float, force: bool = False) -> None:
        """Task progress in [0, 1]; written at most every ``min_interval`` seconds unless forced."""
        self.percent = max(self.percent, min(max(fraction, 0.0), 1.0))  # never goes back
        if self.enabled and (force or self.clock.monotonic() - self._last_write >= self.min_interval):
            with self._locked():
                self.percent = max(self.percent, self._written_percent())  # nor below another writer's
                self._write(self._running_record())

    def _running_record(self) -> str:
        return f"{self.task_id}\t{self.clock.time():.6f}\t{self.percent:.4f}\t{RUNNING}\t0"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the record's folder, shared by every process writing the record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY)
        _HELD.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            _HELD.discard(fd)
            os.close(fd)  # releases the lock

    def beat(self, max_age: float = HEARTBEAT_S) -> None:
        """Rewrite the running record with a new timestamp when nobody wrote it for ``max_age`` s."""
        with self._locked():
            try:
                fields = read_monitor(self.path)
                if fields[0] == self.task_id and fields[3] != str(RUNNING):
                    return  # the task already ended (done is 2 at 1.0; an error or a stop is final)
                if fields[0] == self.task_id and self.clock.time() - float(fields[1]) < max_age:
                    return
                self.percent = max(self.percent, float(fields[2]) if fields[0] == self.task_id else 0.0)
            except (OSError, IndexError, ValueError):
                pass
            self._write(self._running_record())

    @contextlib.contextmanager
    def heartbeat(self, max_age: float = HEARTBEAT_S) -> Iterator[None]:
        """Keep the record fresh (:meth:`beat`) from a background thread while the block runs."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            try:
                self.beat(max_age)
            except OSError:
                pass  # a full disk must not kill the heartbeat: the next beat tries again

        def loop() -> None:
            while not self.clock.wait(stop, max_age / 4):
                beat()

        beat()  # the first one here, before the block: the record exists from the task's first second

        thread = threading.Thread(target=loop, name="monitor-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def done(self) -> None:
        self.progress(1.0, force=True)

    def error(self, code: int, message: str, details: str = "") -> None:
        if not self.enabled:
            return
        one_line = " ".join(message.split())
        with self._locked():
            self.percent = max(self.percent, self._written_percent())  # a worker may have got further
            line = f"{self.task_id}\t{self.clock.time():.6f}\t{self.percent:.4f}\t{ERROR}\t{int(code)}\t{one_line}"
            self._write(line, details)

    def stopped(self, reason: str) -> None:
        """The task was stopped from outside (SIGTERM): the error state with no return code (the
        record's optional fields), so the platform reports its own stop, not an executor error;
        the reason is free text on the next line."""
        if not self.enabled:
            return
        with self._locked():
            self.percent = max(self.percent, self._written_percent())
            self._write(f"{self.task_id}\t{self.clock.time():.6f}\t{self.percent:.4f}\t{ERROR}", reason)

    def _written_percent(self) -> float:
        """The progress in the current record of this task (0 when there is none)."""
        try:
            fields = read_monitor(self.path)
            return float(fields[2]) if fields[0] == self.task_id else 0.0
        except (OSError, IndexError, ValueError):
            return 0.0


def read_monitor(path: Path) -> list[str]:
    """The fields of the first line of a monitor file."""
    return Path(path).read_text(encoding="utf-8").splitlines()[0].split("\t")
