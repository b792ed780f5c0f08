"""``/out/monitor.txt``: one record, rewritten atomically each time.

``task_id<TAB>timestamp<TAB>percent<TAB>state[<TAB>return_code<TAB>message]`` then free text
(a traceback) on the following lines. The executor writes state 2 (running) or 4 (error).
A task made of stages (mining then infer) maps each stage's 0→1 into its share of the bar.
"""

from __future__ import annotations

import time
from pathlib import Path

from nanodet.utils.io import atomic_write_text

RUNNING, ERROR = 2, 4


class Monitor:
    def __init__(self, path: Path, task_id: str, min_interval: float = 0.5) -> None:
        self.path = path
        self.task_id = task_id
        self.min_interval = min_interval
        self._last_write = 0.0
        self.percent = 0.0
        self.enabled = True

    def _write(self, line: str, extra: str = "") -> None:
        if not self.enabled:
            return
        atomic_write_text(self.path, line + "\n" + (extra.rstrip("\n") + "\n" if extra else ""))
        self._last_write = time.monotonic()

    def progress(self, fraction: float, force: bool = False) -> None:
        """Task progress in [0, 1]; written at most every ``min_interval`` seconds unless forced."""
        self.percent = max(self.percent, min(max(fraction, 0.0), 1.0))  # never goes back
        if force or time.monotonic() - self._last_write >= self.min_interval:
            self._write(f"{self.task_id}\t{time.time():.6f}\t{self.percent:.4f}\t{RUNNING}\t0")

    def done(self) -> None:
        self.progress(1.0, force=True)

    def error(self, code: int, message: str, details: str = "") -> None:
        one_line = " ".join(message.split())
        self.percent = max(self.percent, self._written_percent())  # another process (a worker) may have got further
        self._write(f"{self.task_id}\t{time.time():.6f}\t{self.percent:.4f}\t{ERROR}\t{int(code)}\t{one_line}", details)

    def stopped(self, reason: str) -> None:
        """The task was stopped from outside (SIGTERM): the error state with no return code (the
        record's optional fields), so the platform reports its own stop, not an executor error;
        the reason is free text on the next line."""
        self.percent = max(self.percent, self._written_percent())
        self._write(f"{self.task_id}\t{time.time():.6f}\t{self.percent:.4f}\t{ERROR}", reason)

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
