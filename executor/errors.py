"""Failures as the platform understands them: each kind carries its YMIR return code."""

from __future__ import annotations

from enum import IntEnum


class ReturnCode(IntEnum):
    OK = 0
    CONFIG = 300001
    DATASET = 300002
    IMAGE_FORMAT = 300003
    MODEL = 300004
    OBJECT_TYPE = 300005
    GPU_MISMATCH = 300101
    NO_GPU = 300102
    OUT_OF_MEMORY = 300103
    NAN_LOSS = 300201
    NETWORK = 300301


class ExecutorError(Exception):
    """A task failure with a one-line reason naming the file/key/line at fault."""

    code: ReturnCode = ReturnCode.CONFIG

    def __init__(self, message: str, code: ReturnCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigError(ExecutorError):
    code = ReturnCode.CONFIG


class DatasetError(ExecutorError):
    code = ReturnCode.DATASET


class ImageFormatError(ExecutorError):
    code = ReturnCode.IMAGE_FORMAT


class ModelError(ExecutorError):
    code = ReturnCode.MODEL


class NoGpuError(ExecutorError):
    code = ReturnCode.NO_GPU


class OutOfMemoryError(ExecutorError):
    code = ReturnCode.OUT_OF_MEMORY


class NanLossError(ExecutorError):
    code = ReturnCode.NAN_LOSS


class TaskTerminated(BaseException):
    """SIGTERM (the platform stopping the task). A BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` on the way (e.g. around torch.load) mistakes it for a bad file.
    It carries no return code: the platform asked for the stop (``app.main`` reports it so)."""
