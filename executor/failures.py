"""Any exception → the platform's return code and a one-line reason."""

from __future__ import annotations

import torch

from nanodet.checkpoint import CheckpointError
from nanodet.config import ConfigError as ModelConfigError
from nanodet.data.image_io import ImageReadError
from nanodet.engine.trainer import NonFiniteLossError

from .errors import ExecutorError, ReturnCode


def classify(err: BaseException) -> tuple[ReturnCode, str]:
    if isinstance(err, ExecutorError):
        return err.code, str(err)
    if isinstance(err, NonFiniteLossError):
        return ReturnCode.NAN_LOSS, f"{err} (try a lower learning_rate)"
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(err).lower():
        first = str(err).splitlines()[0][:200] if str(err).strip() else type(err).__name__
        return ReturnCode.OUT_OF_MEMORY, f"out of memory: {first} (try a smaller batch_size_per_gpu)"
    if isinstance(err, CheckpointError):
        return ReturnCode.MODEL, str(err)
    if isinstance(err, ModelConfigError):
        return ReturnCode.CONFIG, str(err).replace("\n", "; ")
    if isinstance(err, ImageReadError):
        return ReturnCode.IMAGE_FORMAT, str(err)
    if isinstance(err, KeyboardInterrupt):
        return ReturnCode.CONFIG, "interrupted"
    return ReturnCode.MODEL, f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
