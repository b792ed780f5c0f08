"""Any exception → the platform's return code and a one-line reason."""

from __future__ import annotations

import shutil

import torch

from nanodet.config import ConfigError as ModelConfigError
from nanodet.data.image_io import ImageReadError
from nanodet.engine.trainer import NonFiniteLossError
from nanodet.weights.checkpoint import CheckpointError

from .errors import ExecutorError, ReturnCode

# What torch says when a DataLoader worker cannot get shared memory for a batch: killed by
# SIGBUS touching a /dev/shm page the container's shm_size cannot back, or refused a segment.
_SHM_SIGNS = (
    "killed by signal: Bus error",
    "out of shared memory",
    "unable to allocate shared memory",
    "unable to write to file </torch_",
    "unable to open shared memory object",
)
# A worker that died without saying why (the loader noticed before the signal): shared memory
# is the usual cause in a container, the kernel's OOM killer the other.
_WORKER_DIED = "exited unexpectedly"


def worker_failure(err: BaseException) -> str | None:
    """The reason, when ``err`` is a DataLoader worker that ran out of shared memory or died."""
    text = str(err)
    if not isinstance(err, RuntimeError):
        return None
    certain = any(sign in text for sign in _SHM_SIGNS)
    if not certain and not ("DataLoader worker" in text and _WORKER_DIED in text):
        return None
    try:
        usage = shutil.disk_usage("/dev/shm")
        shm = f"/dev/shm: {usage.free / 2**20:.0f} of {usage.total / 2**20:.0f} MiB free now"
    except OSError:
        shm = "no /dev/shm"
    what = (
        f"data-loading workers ran out of shared memory ({shm})"
        if certain
        else f"a data-loading worker died, most often for lack of shared memory ({shm}), else killed for memory"
    )
    return (
        f"{what}: give the container a larger shm_size, or lower workers_per_gpu or batch_size_per_gpu "
        f"in config.yaml ({text.splitlines()[0][:160]})"
    )


def classify(err: BaseException) -> tuple[ReturnCode, str]:
    if isinstance(err, ExecutorError):
        return err.code, str(err)
    loader = worker_failure(err)
    if loader is not None:
        return ReturnCode.CONFIG, loader
    if isinstance(err, NonFiniteLossError):
        return ReturnCode.NAN_LOSS, f"{err} (try a lower learning_rate)"
    if isinstance(err, CheckpointError):  # before the memory test: its text quotes the file's names
        return ReturnCode.MODEL, str(err)
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(err).lower():
        first = str(err).splitlines()[0][:200] if str(err).strip() else type(err).__name__
        return ReturnCode.OUT_OF_MEMORY, f"out of memory: {first} (try a smaller batch_size_per_gpu)"
    if isinstance(err, ModelConfigError):
        return ReturnCode.CONFIG, str(err).replace("\n", "; ")
    if isinstance(err, ImageReadError):
        return ReturnCode.IMAGE_FORMAT, str(err)
    if isinstance(err, KeyboardInterrupt):
        return ReturnCode.CONFIG, "interrupted"
    return ReturnCode.MODEL, f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
