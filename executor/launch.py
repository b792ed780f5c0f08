"""Running the torchrun launcher as a child of the task process.

When the task process is stopped (SIGTERM from the platform, Ctrl-C), the launcher is asked to
stop too (torchrun passes SIGTERM on to its workers and waits for them) before the failure is
reported, so no worker keeps writing to /out after monitor.txt says the task failed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

STOP_GRACE_S = 5.0  # then SIGKILL: docker stop allows 10 s in all


def run_launcher(command: list[str], cwd: Path) -> int:
    """Run ``command`` to completion; its exit code."""
    proc = subprocess.Popen(command, cwd=cwd)
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
