"""The NanoDet-Plus trainer: one short step function, an epoch loop, and callbacks.

    for epoch:                       for batch:
        train one epoch                  forward (model + aux branch) → loss
        save model_last.ckpt             backward, clip, optimizer step, EMA update
        every val_intervals: evaluate the EMA model with COCO mAP, keep the best

Callbacks (TensorBoard, progress bar, the YMIR monitor) observe steps, epochs and
evaluations; only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import NanoDetConfig, save_config
from ..data.coco_dataset import CocoDetection, TrainBatch
from ..errors import CheckpointError, NonFiniteLossError
from ..utils.pause_points import pause_point
from ..weights.checkpoint import save_pth
from .build import TrainingParts, build_training_parts
from .checkpointer import (
    load_training_checkpoint,
    restore_rng_states,
    save_training_checkpoint,
    split_state_dict,
)
from .data_wait import DataWaitMeter
from .distributed import DistContext, sync_batchnorm_if_asked
from .evaluate import predict_loader
from .lr_schedule import LrSchedule

log = logging.getLogger("nanodet.train")


@dataclass
class EvalResult:
    epoch: int
    metrics: dict[str, float]
    per_class_AP: dict[str, float]
    detections: dict = field(default_factory=dict, repr=False)


@dataclass
class EvalSummary:
    """What the state keeps of an evaluation: its numbers (the detections go to the callbacks only)."""

    epoch: int
    metrics: dict[str, float]
    per_class_AP: dict[str, float]


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    best_metric: float = -1.0
    best_epoch: int = -1
    evaluations: list[EvalSummary] = field(default_factory=list)


class Callback:
    """Hooks into training; every method is optional."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, losses: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: Trainer) -> None: ...
    def on_eval_end(self, trainer: Trainer, result: EvalResult, is_best: bool) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


class _TrainForward(nn.Module):
    """What DDP wraps: the training forward (model + aux branch) as ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, epoch: int):
        return self.model.forward_train(images, epoch)


def training_memory_format(device: torch.device, channels_last: bool | None = None) -> torch.memory_format:
    """Channels-last by default on CPU, where it alone made a training step of NanoDet-Plus-m-320
    ~1.2x faster (depthwise convs, batch norm and the stem conv run much faster NHWC; measured
    step against step in one process). Elsewhere NCHW (unmeasured)."""
    if channels_last is None:
        channels_last = device.type == "cpu"
    return torch.channels_last if channels_last else torch.contiguous_format


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) its parameter's memory layout.

    A checkpoint written by an NCHW run (an older version, CUDA, the official code) holds NCHW
    moments; the fused CPU Adam(W) of torch walks parameter, gradient and moments as raw memory
    and updates wrongly when their layouts differ (torch 2.13, checked in the tests)."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def autocast_dtype(cfg: NanoDetConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA with ``precision: 16``: bf16 where supported, else fp16."""
    if cfg.device.precision != 16 or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Trainer:
    """Trains built parts (:class:`~nanodet.engine.build.TrainingParts`); :meth:`from_config`
    builds them from a config.

    ``channels_last`` (default: on CPU) puts the weights of the model and of its EMA copy, and
    every input batch, in the channels-last memory layout: the same computation, only faster."""

    def __init__(
        self,
        cfg: NanoDetConfig,
        work_dir: str | Path,
        ctx: DistContext,
        parts: TrainingParts,
        callbacks: list[Callback] | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.ctx = ctx
        self.device = ctx.device
        self.callbacks = list(callbacks or [])
        self.state = TrainState()
        self.model, self.criterion, self.optimizer = parts.model, parts.criterion, parts.optimizer
        self.train_loader, self.val_loader, self.evaluator = parts.train_loader, parts.val_loader, parts.evaluator
        self.ema = parts.ema
        self.memory_format = training_memory_format(self.device, channels_last)
        self.model.to(memory_format=self.memory_format)  # in place: the optimizer keeps its parameters
        if self.ema is not None:
            self.ema.model.to(memory_format=self.memory_format)
        self.lr_schedule = LrSchedule(cfg.schedule)
        self.data_wait = DataWaitMeter()
        self.amp_dtype = autocast_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.train_module: nn.Module = _TrainForward(self.model)
        if ctx.distributed:
            sync_batchnorm_if_asked(self.model, cfg.model.arch, distributed=True)
            self.train_module = DistributedDataParallel(
                self.train_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=not self.model.has_aux,  # legacy head: gfl_reg unused
            )

    @classmethod
    def from_config(
        cls,
        cfg: NanoDetConfig,
        work_dir: str | Path,
        ctx: DistContext,
        seed: int = 0,
        callbacks: list[Callback] | None = None,
        train_set: CocoDetection | None = None,
        val_set: CocoDetection | None = None,
    ) -> Trainer:
        """Every part built from ``cfg``: the same initial weights on every rank, then per-rank randomness."""
        trainer = cls(cfg, work_dir, ctx, build_training_parts(cfg, ctx, seed, train_set, val_set), callbacks)
        torch.manual_seed(seed + ctx.rank)
        return trainer

    @property
    def train_set(self) -> CocoDetection:
        return self.train_loader.dataset

    @property
    def val_set(self) -> CocoDetection:
        return self.val_loader.dataset

    # --- checkpoints ---------------------------------------------------------------------
    def resume(self, path: str | Path) -> None:
        """Continue from a ``model_last.ckpt``: weights, EMA, optimizer, scaler, counters, RNG."""
        ckpt = load_training_checkpoint(path)
        state = ckpt["state_dict"]
        try:  # checked as a checkpoint already; here it must also fit this model and optimizer
            self.model.load_state_dict(split_state_dict(state, "model."))
            if self.ema is not None:
                ema_state = split_state_dict(state, "avg_model.")
                self.ema.model.load_state_dict(ema_state or split_state_dict(state, "model."))
            self.optimizer.load_state_dict(ckpt["optimizer_states"][0])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
            raise CheckpointError(
                f"{path}: cannot resume this model from it (another config or class count?): {reason[:300]}"
            ) from None
        match_state_layout(self.optimizer)
        self.state.epoch = int(ckpt["epoch"])
        self.state.step = int(ckpt["global_step"])
        self.state.best_metric = float(ckpt.get("best_metric", -1.0))
        self.state.best_epoch = int(ckpt.get("best_epoch", -1))
        if "rng_states" in ckpt:
            restore_rng_states(ckpt["rng_states"])
        log.info("resumed from %s: %d epochs done, step %d", path, self.state.epoch, self.state.step)

    def _save_checkpoint(self, name: str) -> None:
        save_training_checkpoint(
            self.work_dir / name,
            self.model,
            self.ema.model if self.ema else None,
            self.optimizer,
            self.scaler,
            self.state.epoch,
            self.state.step,
            self.state.best_metric,
            extra={"best_epoch": self.state.best_epoch, "class_names": list(self.cfg.class_names)},
        )

    def save_last(self) -> None:
        if self.ctx.is_main:
            self._save_checkpoint("model_last.ckpt")

    def save_best(self) -> None:
        """``model_best.ckpt`` and the EMA weights ``nanodet_model_best.pth``: the whole model, aux
        branch included (as the official ``.pth``), so fine-tuning from it keeps the assign
        guidance; inference ignores the aux keys."""
        if self.ctx.is_main:
            self._save_checkpoint("model_best.ckpt")
            save_pth(self.eval_model, self.work_dir / "nanodet_model_best.pth", class_names=list(self.cfg.class_names))

    # --- the loop --------------------------------------------------------------------------
    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    @property
    def total_epochs(self) -> int:
        return self.cfg.schedule.total_epochs

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def train(self) -> TrainState:
        if self.ctx.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.work_dir / "train_cfg.yml")
        for cb in self.callbacks:
            cb.on_train_start(self)
        for epoch in range(self.state.epoch, self.total_epochs):
            self.train_epoch(epoch)
            self.state.epoch = epoch + 1
            last = self.state.epoch == self.total_epochs
            if self.state.epoch % self.cfg.schedule.val_intervals == 0 or last:
                self.evaluate()
            self.save_last()
            for cb in self.callbacks:
                cb.on_epoch_end(self)
            self.ctx.barrier()
        self._log_data_wait_verdict()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.state

    def _log_data_wait_verdict(self) -> None:
        from ..utils.cpus import allowed_cpus

        dev = self.cfg.device
        line = self.data_wait.verdict(dev.workers_per_gpu, allowed_cpus()[0], dev.cache_images)
        if line and self.ctx.is_main:
            log.info("%s", line)

    def train_epoch(self, epoch: int) -> None:
        self.model.train()
        self.train_loader.sampler.set_epoch(epoch)
        interval = max(self.cfg.log.interval, 1)
        for batch in self.data_wait.timed(self.train_loader):  # data_wait: the time blocked in next()
            # every image of it unreadable; or one image left of several (batch norm cannot
            # train on one sample's 1x1 map)
            if batch is None or (len(batch) == 1 and (self.train_loader.batch_size or 1) > 1):
                continue
            losses = self.run_step(batch, epoch)
            self.data_wait.step_done()
            if self.state.step % interval == 0:
                losses["data_wait"] = self.data_wait.close_interval()
            for cb in self.callbacks:
                cb.on_step_end(self, losses)
            pause_point("train:step")  # where a test holds a training task (inactive otherwise)
        self.data_wait.end_epoch()

    def run_step(self, batch: TrainBatch, epoch: int) -> dict[str, float]:
        self.state.step += 1
        lr = self.lr_schedule.lr_at(epoch, self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = batch.inputs(self.device, self.memory_format)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            preds, aux_preds = self.train_module(images, epoch)
        priors = self.model.head.priors((images.shape[2], images.shape[3]), self.device)
        loss, states = self.criterion(preds, aux_preds, priors, batch.gt_bboxes, batch.gt_labels)
        # every logged number in one device-to-host copy
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in states.values())]).tolist()
        out = dict(zip(states, values[1:]))
        if not math.isfinite(values[0]):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in out.items())
            raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, step {self.state.step}: {terms}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, self.state.step)
        out["loss"] = values[0]
        out["lr"] = lr
        return out

    def evaluate(self) -> EvalResult:
        """COCO metrics of the EMA model on the validation set; keeps the best checkpoint."""
        dets = predict_loader(self.eval_model, self.val_loader, self.device, self.ctx, self.amp_dtype)
        scored = self.evaluator.evaluate(dets) if self.ctx.is_main else None
        scored = self.ctx.broadcast_object(scored)
        result = EvalResult(self.state.epoch, scored["metrics"], scored["per_class_AP"], dets)
        self.state.evaluations.append(EvalSummary(result.epoch, result.metrics, result.per_class_AP))
        save_key = self.cfg.evaluator.save_key
        metric = result.metrics.get(save_key, 0.0)
        # a tie goes to the newer evaluation, as the platform orders stages by (mAP, timestamp)
        is_best = metric >= self.state.best_metric
        if is_best:
            self.state.best_metric, self.state.best_epoch = metric, self.state.epoch
            self.save_best()
        if self.ctx.is_main:
            log.info(
                "epoch %d/%d eval: %s %.4f%s | %s",
                self.state.epoch,
                self.total_epochs,
                save_key,
                metric,
                " (best)" if is_best else "",
                " ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()),
            )
        for cb in self.callbacks:
            cb.on_eval_end(self, result, is_best)
        self.model.train()
        return result


class ProgressBar(Callback):
    """tqdm bar on rank 0 with the loss and images/s."""

    def __init__(self) -> None:
        self.bar = None
        self.last = time.perf_counter()

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.ctx.is_main:
            from tqdm import tqdm

            total = trainer.steps_per_epoch * trainer.total_epochs
            self.bar = tqdm(
                total=total,
                initial=trainer.steps_per_epoch * trainer.state.epoch,
                unit="step",
                dynamic_ncols=True,
                desc="train",
            )

    def on_step_end(self, trainer: Trainer, losses: dict[str, float]) -> None:
        if self.bar is None:
            return
        now = time.perf_counter()
        ips = trainer.cfg.device.batchsize_per_gpu * trainer.ctx.world_size / max(now - self.last, 1e-9)
        self.last = now
        self.bar.set_postfix(epoch=trainer.state.epoch + 1, loss=f"{losses['loss']:.3f}", img_s=f"{ips:.1f}")
        self.bar.update(1)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class LogLines(Callback):
    """A log line every ``log.interval`` steps (rank 0)."""

    def on_step_end(self, trainer: Trainer, losses: dict[str, float]) -> None:
        if trainer.ctx.is_main and trainer.state.step % max(trainer.cfg.log.interval, 1) == 0:
            terms = " ".join(f"{k}:{v:.4f}" for k, v in losses.items() if k not in ("lr",))
            log.info(
                "epoch %d/%d step %d lr %.2e %s",
                trainer.state.epoch + 1,
                trainer.total_epochs,
                trainer.state.step,
                losses["lr"],
                terms,
            )
