"""The parts a :class:`~nanodet.engine.trainer.Trainer` is made of, each built from the config.

``build_training_parts`` is what ``Trainer.from_config`` uses; each builder is also usable
alone (a custom loop, a benchmark, a test that swaps one part).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import tempfile
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..config import ConfigError, NanoDetConfig
from ..data.coco_dataset import CocoDetection, EpochSampler, build_dataset, collate_detection, collate_finished
from ..evaluation.coco import CocoEvaluator
from ..model import build_model
from ..model.criterion import NanoDetPlusLoss
from ..model.detector import AUX_PREFIXES, NanoDet
from ..weights.checkpoint import load_weights
from ..weights.imagenet import load_imagenet_backbone
from .distributed import DistContext
from .ema import ModelEMA

log = logging.getLogger("nanodet.train")


@dataclass
class TrainingParts:
    model: NanoDet
    criterion: NanoDetPlusLoss
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader
    evaluator: CocoEvaluator
    ema: ModelEMA | None


def build_training_model(cfg: NanoDetConfig) -> NanoDet:
    """The training model (aux branch included) with its starting weights: ``load_model``
    (the whole model; the class convs carried over to the config's classes) or, failing that, the backbone's
    ImageNet weights when ``backbone.pretrain`` (else random init)."""
    model = build_model(cfg.model.arch)
    if cfg.schedule.load_model:
        report = load_weights(
            model,
            cfg.schedule.load_model,
            log,
            class_names=list(cfg.class_names),
            source_class_names=cfg.schedule.load_model_classes,
        )
        if model.has_aux:
            aux = sum(k.startswith(AUX_PREFIXES) for k in report.loaded)
            restored = f"{aux} tensors restored from" if aux else "not in"
            log.info(
                "assign-guidance branch (aux_fpn, aux_head): %s %s%s",
                restored,
                cfg.schedule.load_model,
                "" if aux else ", starts from random init",
            )
    elif cfg.model.arch.backbone.pretrain:
        load_imagenet_backbone(model.backbone, cfg.model.arch.backbone.model_size, log)
    return model


def build_optimizer(cfg: NanoDetConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD; ``no_norm_decay`` exempts norm weights and biases from weight decay."""
    o = cfg.schedule.optimizer
    params = model.parameters()
    if o.no_norm_decay:
        norm_types = (nn.BatchNorm2d, nn.GroupNorm)
        no_decay = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters()}
        no_decay |= {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
        params = [
            {"params": [p for p in model.parameters() if id(p) not in no_decay]},
            {"params": [p for p in model.parameters() if id(p) in no_decay], "weight_decay": 0.0},
        ]
    if o.name == "SGD":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    optim_cls = torch.optim.AdamW if o.name == "AdamW" else torch.optim.Adam
    return optim_cls(params, lr=o.lr, weight_decay=o.weight_decay, fused=_fused_on_cpu(model))


def _fused_on_cpu(model: nn.Module) -> bool | None:
    """The fused Adam/AdamW on CPU (measured: 11 ms instead of 32 ms a step for NanoDet-Plus-m),
    where torch's default is a Python loop over the tensors; elsewhere torch's own default.

    The fused kernel needs each parameter's gradient and moments in the parameter's memory
    layout: autograd gives gradients that layout, and ``Trainer.resume`` puts loaded moments in it
    (:func:`~nanodet.engine.trainer.match_state_layout`)."""
    return True if all(p.device.type == "cpu" for p in model.parameters()) else None


def build_criterion(cfg: NanoDetConfig) -> NanoDetPlusLoss:
    head = cfg.model.arch.head
    assigner = getattr(head, "assigner_cfg", None)
    return NanoDetPlusLoss(
        head.num_classes,
        head.reg_max,
        head.loss,
        topk=assigner.topk if assigner else 13,
        iou_factor=assigner.iou_factor if assigner else 3.0,
    )


PREFETCH_IMAGES = 64
"""Images each DataLoader worker keeps ready ahead of the trainer (at least 2, at most 8 batches)."""


def prefetch_batches(batch_size: int) -> int:
    """Batches each worker loads ahead: :data:`PREFETCH_IMAGES` worth, 2 to 8 batches. Small
    batches get more of them, so a slow image does not leave the trainer waiting; large ones
    stay at 2, so pinned memory stays bounded."""
    return min(8, max(2, math.ceil(PREFETCH_IMAGES / batch_size)))


def init_loader_worker(worker_id: int) -> None:
    """One thread for OpenCV in a DataLoader worker that starts afresh (spawn, forkserver): the
    workers are the parallelism, a thread pool in each would oversubscribe the CPUs. (PyTorch's
    worker loop already runs on one thread.) A forked worker is left alone: OpenCV runs serially
    there, and resizing the thread pool it inherited deadlocks when the parent's pool had started.
    """
    if multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
        import cv2

        cv2.setNumThreads(1)


SOCKET_PATH_MAX = 107
"""Bytes a UNIX socket's path may have on Linux (``sun_path`` is 108, with its terminating zero)."""

WORKER_SOCKET_SUFFIX = len("/pymp-12345678/listener-12345678")
"""What Python's multiprocessing adds to the temporary folder for the socket a worker process
hands each batch's shared memory over (``resource_sharer``: a ``pymp-`` folder, a ``listener-`` socket)."""


def check_worker_sockets(workers: int) -> None:
    """Refuse DataLoader workers where the temporary folder's path is too long for their sockets.

    A worker passes each batch's shared memory to the training process through a UNIX socket
    under the temporary folder (``TMPDIR``). Where its path does not fit, the worker's queue
    thread drops the batch with a traceback and the training process waits for it forever: a
    hang, not an error. Raised here, before any worker starts."""
    if workers <= 0:
        return
    folder = tempfile.gettempdir()
    if len(folder.encode()) + WORKER_SOCKET_SUFFIX > SOCKET_PATH_MAX:
        limit = SOCKET_PATH_MAX - WORKER_SOCKET_SUFFIX
        raise ConfigError(
            f"the temporary folder {folder!r} is {len(folder.encode())} bytes long: data-loading workers pass "
            f"batches through UNIX sockets under it, whose paths cannot exceed {SOCKET_PATH_MAX} bytes. "
            f"Point TMPDIR at a folder of at most {limit} bytes, or set workers_per_gpu to 0"
        )


def build_loader(cfg: NanoDetConfig, dataset: CocoDetection, ctx: DistContext, train: bool, seed: int) -> DataLoader:
    """This rank's shard in batches; the sampler passes the epoch on to the augmentation seed.

    Fast training samples (``uint8``, colour factors apart) are finished into the network's
    input by the workers for a CPU trainer, and on the GPU for a CUDA one (batches pinned,
    :meth:`~nanodet.data.coco_dataset.TrainBatch.inputs`). Workers persist across epochs."""
    dev = cfg.device
    sampler = EpochSampler(
        DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=train, seed=seed)
    )
    workers = dev.workers_per_gpu
    check_worker_sockets(workers)
    cuda = ctx.device.type == "cuda"
    return DataLoader(
        dataset,
        batch_size=dev.batchsize_per_gpu,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_detection if cuda else collate_finished,
        pin_memory=cuda,
        drop_last=train and len(sampler) > dev.batchsize_per_gpu,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_batches(dev.batchsize_per_gpu) if workers > 0 else None,
        worker_init_fn=init_loader_worker if workers > 0 else None,
    )


def build_training_parts(
    cfg: NanoDetConfig,
    ctx: DistContext,
    seed: int = 0,
    train_set: CocoDetection | None = None,
    val_set: CocoDetection | None = None,
) -> TrainingParts:
    """Every part from the config. The model is built under ``seed`` (the same initial weights
    on every rank) and moved to the rank's device."""
    torch.manual_seed(seed)
    model = build_training_model(cfg).to(ctx.device)
    decay = cfg.model.weight_averager.decay if cfg.model.weight_averager else None
    train_set = train_set or build_dataset(cfg.data.train, train=True, seed=seed, cache_images=cfg.device.cache_images)
    val_set = val_set or build_dataset(cfg.data.val, train=False, seed=seed)
    return TrainingParts(
        model=model,
        criterion=build_criterion(cfg),
        optimizer=build_optimizer(cfg, model),
        train_loader=build_loader(cfg, train_set, ctx, train=True, seed=seed),
        val_loader=build_loader(cfg, val_set, ctx, train=False, seed=seed),
        evaluator=CocoEvaluator(val_set.coco, list(cfg.class_names), iou_thrs=cfg.evaluator.iou_thrs),
        ema=ModelEMA(model, decay) if decay else None,
    )
