"""torch.distributed set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

One code path from a single CPU process to N GPUs: without torchrun the context is a
world of one and every collective is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import ArchConfig

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, on every rank (a list of one without DDP)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        timeout = process_group_timeout()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
        if rank == 0:
            log.info(
                "process group: %s, %d processes, collectives time out after %g min",
                dist.get_backend(),
                world_size,
                timeout.total_seconds() / 60,
            )
    return DistContext(rank, world_size, local_rank, dev)


DEFAULT_TIMEOUT_MIN = 120.0


def process_group_timeout() -> timedelta:
    """How long a collective waits for the slowest rank before the job fails.

    While rank 0 scores the validation set (COCOeval is single-threaded: ~70 s per 5k images
    of 100 detections on a slow core), writes the stage and exports its ONNX, the other ranks
    wait in a broadcast and then a barrier. torch's own default (10 min for NCCL) is too short
    for a large validation set on a busy machine, so it is set here: ``NANODET_DIST_TIMEOUT_MIN``
    minutes, 120 by default."""
    raw = os.environ.get("NANODET_DIST_TIMEOUT_MIN", "").strip()
    try:
        minutes = float(raw) if raw else DEFAULT_TIMEOUT_MIN
    except ValueError:
        raise ValueError(f"NANODET_DIST_TIMEOUT_MIN={raw!r}: expected minutes as a number") from None
    if not minutes > 0:
        raise ValueError(f"NANODET_DIST_TIMEOUT_MIN={raw!r}: must be > 0")
    return timedelta(minutes=minutes)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sync_batchnorm_if_asked(model: nn.Module, cfg: ArchConfig, distributed: bool) -> nn.Module:
    """Make the batch norms of the heads whose ``norm_cfg`` says ``SyncBN`` synchronised.

    As in the official NanoDet, ``SyncBN`` applies to the layers that ``norm_cfg`` builds:
    those of ``model.head`` (``head.norm_cfg``) and of ``model.aux_head``
    (``aux_head.norm_cfg``); the backbone and the pyramids keep plain batch norm. The layers
    are built as ``BatchNorm2d`` and converted here with
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (weights and running statistics kept),
    before the model is wrapped in ``DistributedDataParallel``.

    Without ``distributed`` nothing changes: outside DDP a ``SyncBatchNorm`` computes what a
    ``BatchNorm2d`` does, which is what the layers already are. Returns ``model`` (changed in
    place).
    """
    if not distributed:
        return model
    asked = [("head", cfg.head.norm_cfg)]
    if cfg.aux_head is not None:
        asked.append(("aux_head", cfg.aux_head.norm_cfg))
    for name, norm_cfg in asked:
        part = getattr(model, name, None)
        if norm_cfg.type != "SyncBN" or part is None:
            continue
        count = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in part.modules())
        setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(part))
        log.info("%s: %d batch norm layers synchronised across processes (norm_cfg.type SyncBN)", name, count)
    return model
