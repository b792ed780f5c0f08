"""Which devices a task runs on: ``gpu_count: 0`` / ``gpu_id: ''`` is CPU; GPUs asked for
must exist (no silent fallback to CPU). Each process takes its share of the CPUs the
container allows (cgroup quota, not the host's count) for compute threads and loaders."""

from __future__ import annotations

import logging

import torch

from nanodet.utils.cpus import allowed_cpus, limit_threads, omp_threads

from .errors import ExecutorError, NoGpuError, ReturnCode

log = logging.getLogger("executor.devices")


def select_devices(gpu_count: int, gpu_id: str) -> tuple[str, int]:
    """("cpu" | "cuda", number of processes)."""
    ids = [x for x in gpu_id.split(",") if x.strip()]
    if gpu_count <= 0 or not ids:
        return "cpu", 1
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible == 0:
        raise NoGpuError(f"config.yaml asks for {gpu_count} GPU(s) (gpu_id {gpu_id!r}) but no GPU is visible")
    wanted = min(gpu_count, len(ids))
    if wanted > visible:
        raise ExecutorError(
            f"config.yaml asks for {wanted} GPUs (gpu_id {gpu_id!r}) but {visible} are visible", ReturnCode.GPU_MISMATCH
        )
    return "cuda", wanted


def share_cpus(processes: int, workers_per_process: int) -> int:
    """Give this process (one of ``processes`` on this machine) its share of the allowed CPUs
    as torch compute threads (fewer when ``OMP_NUM_THREADS`` says so: the operator's choice
    wins); returns the data-loading workers that fit in that share (at most
    ``workers_per_process``; 0 stays 0)."""
    cpus, limit = allowed_cpus()
    share = max(1, cpus // max(processes, 1))
    explicit = omp_threads()
    threads = min(share, explicit) if explicit else share
    torch.set_num_threads(threads)
    limit_threads(processes, torch_threads=False, allowed=(cpus, limit))  # OpenCV's threads within the share too
    workers = min(workers_per_process, share)
    log.info(
        "%d CPUs allowed (%s), %d per process: %d compute threads%s, %d data-loading workers%s",
        cpus,
        limit,
        share,
        threads,
        f" (OMP_NUM_THREADS={explicit})" if threads < share else "",
        workers,
        f" instead of {workers_per_process}" if workers < workers_per_process else "",
    )
    return workers
