"""How many CPUs this process may really use.

``os.cpu_count()`` (and torch's default thread count) is the host's: in a container limited
to 4 CPUs on a 64-core host, 64 compute threads plus data-loading workers fight over 4 CPUs'
worth of time and every parallel region waits for its slowest, pre-empted thread. The
allowance is the smallest of the CPUs this process may be scheduled on (affinity, cpusets)
and the cgroup's CPU quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us`` in v1; Docker's ``--cpus``), rounded up.

PyTorch's default thread count follows the affinity but not the quota; OpenCV's may follow
either. :func:`limit_threads` lowers both to a process's share of the allowance (training,
evaluation and the predictor call it), never raising a count and leaving alone a count the
user chose (``OMP_NUM_THREADS`` for PyTorch, ``OPENCV_FOR_THREADS_NUM`` for OpenCV).
A data-loading worker runs :data:`WORKER_THREADS` of each: the workers are the parallelism.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
WORKER_THREADS = 1  # PyTorch and OpenCV threads in each data-loading worker

log = logging.getLogger(__name__)


def cgroup_quota(root: Path | None = None) -> float | None:
    """CPUs' worth of time the cgroup allows (2.5 for ``--cpus 2.5``), None when unlimited or
    unknown. ``root``: the cgroup folder (default :data:`CGROUP_ROOT`)."""
    root = CGROUP_ROOT if root is None else root
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


def allowed_cpus(root: Path | None = None) -> tuple[int, str]:
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
    """Threads for an inference runtime when none are asked for: ``OMP_NUM_THREADS`` when set,
    else the CPUs allowed, or torch's intra-op count when the program has imported torch and
    set it lower."""
    explicit = omp_threads()
    if explicit:
        return explicit
    allowed = allowed_cpus()[0]
    torch = sys.modules.get("torch")
    return min(allowed, torch.get_num_threads()) if torch is not None else allowed


def local_processes() -> int:
    """Processes of this job on this machine: torchrun's ``LOCAL_WORLD_SIZE``, else 1."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def cpu_share(processes: int = 1) -> int:
    """CPUs each of ``processes`` processes on this machine may use: the allowance split evenly,
    at least 1."""
    return max(1, allowed_cpus()[0] // max(1, processes))


def loader_workers(requested: int, processes: int = 1) -> int:
    """Data-loading workers (:data:`WORKER_THREADS` each) that fit in a process's share: at most
    ``requested``; 0 stays 0."""
    return max(0, min(requested, cpu_share(processes)))


@dataclass(frozen=True)
class ThreadLimits:
    """What :func:`limit_threads` found and did: each library's count after it (None: the
    library is not loaded), and why."""

    share: int
    limit: str  # what limits the CPUs (the quota, or the affinity)
    torch: int | None
    opencv: int | None
    lowered: tuple[str, ...]  # what was lowered, e.g. "torch 64 -> 4"


def limit_threads(
    processes: int = 1, torch_threads: bool = True, allowed: tuple[int, str] | None = None
) -> ThreadLimits:
    """Lower PyTorch's intra-op threads (when ``torch_threads`` and PyTorch is imported) and
    OpenCV's to this process's share of the CPUs allowed (one of ``processes`` on this machine)
    where they are above it; a count below it is the program's own (left as it is), and so is a
    count set by ``OMP_NUM_THREADS`` (PyTorch) or ``OPENCV_FOR_THREADS_NUM`` (OpenCV).
    ``allowed``: :func:`allowed_cpus` when the caller has it already."""
    cpus, limit = allowed or allowed_cpus()
    share = max(1, cpus // max(1, processes))
    lowered: list[str] = []
    torch = sys.modules.get("torch") if torch_threads else None
    torch_count = None
    if torch is not None:
        torch_count = torch.get_num_threads()
        if torch_count > share and omp_threads() is None and not os.environ.get("MKL_NUM_THREADS"):
            torch.set_num_threads(share)
            lowered.append(f"torch {torch_count} -> {share}")
            torch_count = share
    import cv2

    opencv_count = cv2.getNumThreads()
    if opencv_count > share and not os.environ.get("OPENCV_FOR_THREADS_NUM"):
        cv2.setNumThreads(share)
        lowered.append(f"OpenCV {opencv_count} -> {share}")
        opencv_count = share
    if lowered:
        log.info(
            "%d CPUs allowed (%s), %d for this process: threads lowered (%s)", cpus, limit, share, ", ".join(lowered)
        )
    return ThreadLimits(share, limit, torch_count, opencv_count, tuple(lowered))


def omp_threads() -> int | None:
    """The thread count ``OMP_NUM_THREADS`` asks for; None when it is unset or not a positive
    integer."""
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(explicit) if explicit.isdigit() and int(explicit) > 0 else None
