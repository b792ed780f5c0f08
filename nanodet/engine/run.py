"""Entry points used by the CLI (and the YMIR executor): train, evaluate."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import NanoDetConfig
from ..data.coco_dataset import build_dataset, collate_detection
from ..evaluation.coco import CocoEvaluator
from ..model import build_model
from ..pictures.evaluation import EvalPictures
from ..utils.cpus import limit_threads, loader_workers, local_processes
from ..weights.checkpoint import load_weights
from .build import check_worker_sockets, init_loader_worker
from .distributed import DistContext, cleanup_distributed, init_distributed
from .evaluate import predict_loader
from .tensorboard import TensorBoardLogger
from .trainer import Callback, LogLines, ProgressBar, Trainer, TrainState

log = logging.getLogger("nanodet.train")


def train(
    cfg: NanoDetConfig,
    work_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool | str | Path = False,
    callbacks: list[Callback] | None = None,
    tensorboard_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    pictures: EvalPictures | None = None,
) -> TrainState:
    """Train under torchrun or in one process; returns the final state (rank 0 wrote the files).
    ``pictures`` renders what TensorBoard shows of each evaluation (default: IoU of the
    config's ``save_key``, else 0.5; score 0.35); pass the same one to a callback that keeps
    them too, and each evaluation's pictures are drawn once.

    Each process takes its share of the CPUs allowed (cgroup quota, affinity): PyTorch and
    OpenCV threads above it are lowered, and data-loading workers are at most that many."""
    cfg = fit_to_cpus(cfg, local_processes())
    ctx = init_distributed(device)
    try:
        work_dir = Path(work_dir or cfg.save_dir)
        cbs: list[Callback] = []
        if ctx.is_main:  # logs, TensorBoard and the progress bar are rank 0's
            cbs += [LogLines(), TensorBoardLogger(tensorboard_dir or work_dir / "tensorboard", pictures)]
            if progress:
                cbs.append(ProgressBar())
        trainer = Trainer.from_config(cfg, work_dir, ctx, seed=seed, callbacks=cbs + list(callbacks or []))
        if resume:
            path = Path(resume) if not isinstance(resume, bool) else work_dir / "model_last.ckpt"
            if path.is_file():
                trainer.resume(path)
            elif ctx.is_main:
                log.warning("resume asked but %s does not exist: starting from scratch", path)
        return trainer.train()
    finally:
        cleanup_distributed()


def evaluate(cfg: NanoDetConfig, weights: str | Path, device: str = "auto", batch_size: int | None = None) -> dict:
    """COCO metrics of ``weights`` on the config's validation set (threads and data-loading
    workers within the CPUs allowed, as in :func:`train`)."""
    cfg = fit_to_cpus(cfg, processes=1)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    model = build_model(cfg.model.arch, with_aux=False)
    load_weights(model, weights, log, strict=True)
    model.to(dev)
    dataset = build_dataset(cfg.data.val, train=False)
    check_worker_sockets(cfg.device.workers_per_gpu)
    loader = DataLoader(
        dataset,
        batch_size=batch_size or cfg.device.batchsize_per_gpu,
        shuffle=False,
        num_workers=cfg.device.workers_per_gpu,
        collate_fn=collate_detection,
        worker_init_fn=init_loader_worker if cfg.device.workers_per_gpu > 0 else None,
    )
    dets = predict_loader(model, loader, dev, DistContext(device=dev))
    scored = CocoEvaluator(dataset.coco, list(cfg.class_names)).evaluate(dets)
    return {"metrics": scored["metrics"], "per_class_AP": scored["per_class_AP"]}


def fit_to_cpus(cfg: NanoDetConfig, processes: int) -> NanoDetConfig:
    """Lower this process's PyTorch and OpenCV threads to its share of the CPUs allowed (one of
    ``processes`` on this machine; :func:`~nanodet.utils.cpus.limit_threads`); ``cfg`` with at
    most that many data-loading workers."""
    limits = limit_threads(processes)
    workers = loader_workers(cfg.device.workers_per_gpu, processes)
    if workers == cfg.device.workers_per_gpu:
        return cfg
    log.info(
        "workers_per_gpu %d -> %d: %d CPUs for this process (%s)",
        cfg.device.workers_per_gpu,
        workers,
        limits.share,
        limits.limit,
    )
    return cfg.merged({"device": {"workers_per_gpu": workers}})
