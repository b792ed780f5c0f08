"""How many CPUs this process may really use.

``os.cpu_count()`` (and torch's default thread count) is the host's: in a container limited
to 4 CPUs on a 64-core host, 64 compute threads plus data-loading workers fight over 4 CPUs'
worth of time and every parallel region waits for its slowest, pre-empted thread. The
allowance is the smallest of the CPUs this process may be scheduled on (affinity, cpusets)
and the cgroup's CPU quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us`` in v1; Docker's ``--cpus``), rounded up.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup allows (2.5 for ``--cpus 2.5``), None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "250000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root):  # v1
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def allowed_cpus(root: Path = CGROUP_ROOT) -> tuple[int, str]:
    """(CPUs this process may use, what limits them) — at least 1. (``OMP_NUM_THREADS`` is
    the caller's to honour: it is a choice of threads, not a limit of CPUs.)"""
    try:
        schedulable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        schedulable = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None and math.ceil(quota) < schedulable:
        return max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g}"
    return max(1, schedulable), "CPUs this process may run on"


def inference_threads() -> int:
    """Threads for an inference runtime when none are asked for: torch's intra-op count when the
    program has imported torch (it may have set it), else ``OMP_NUM_THREADS``, else the CPUs
    allowed."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    return omp_threads() or allowed_cpus()[0]


def omp_threads() -> int | None:
    """The thread count ``OMP_NUM_THREADS`` asks for; None when it is unset or not a positive
    integer."""
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(explicit) if explicit.isdigit() and int(explicit) > 0 else None
