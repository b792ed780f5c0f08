"""Which devices a task runs on: ``gpu_count: 0`` / ``gpu_id: ''`` is CPU; GPUs asked for
must exist (no silent fallback to CPU)."""

from __future__ import annotations

import torch

from .errors import ExecutorError, NoGpuError, ReturnCode


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
