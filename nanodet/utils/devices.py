"""The default inference device, found without importing PyTorch where no GPU can exist."""

from __future__ import annotations

from pathlib import Path

# Device nodes without which no GPU is visible to this process: NVIDIA's control device, AMD's
# ROCm compute device, WSL2's GPU paravirtualisation device.
GPU_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def default_device() -> str:
    """``cuda`` when PyTorch sees a GPU, else ``cpu``. On a machine without a GPU device node the
    answer is ``cpu`` without importing PyTorch (2 s of a command's start)."""
    if not any(Path(node).exists() for node in GPU_NODES):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
