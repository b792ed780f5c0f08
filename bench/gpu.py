#!/usr/bin/env python
"""CUDA measurements of NanoDet-Plus-m-416, each with its baseline in the same run.

    bench/gpu.sh                                   # a CUDA machine, one or several GPUs: < 8 min on one H100
    bench/gpu.sh --quick                           # a smoke run: a few steps and images
    bench/gpu.sh --device cpu --quick --parts train,infer,mining   # the same code on CPU (tests/test_bench_gpu.py)

Prints ONE JSON object on stdout (progress and library logs go to stderr; so does anything a
library or a subprocess prints). Every part, and every measurement inside a part, runs in its
own try/except: a failure is recorded as ``{"error": ...}`` where its numbers would be and the
rest still runs. A part that would start after ``--budget-s`` is skipped (``{"skipped": ...}``);
if something hangs, a watchdog prints what was measured so far and exits 3.

``header``  torch / CUDA / cuDNN / NCCL versions, GPU names, memory, count, NVIDIA driver, CPUs.

``train``   ``config/nanodet-plus-m_416.yml`` re-classed to 3 shape classes (``backbone.pretrain``
            off: random init) on a generated COCO-format shapes set, 480x360..640x480 JPEGs,
            the official augmentations. ``Trainer.from_config`` builds everything (real
            DataLoader with ``workers_per_gpu`` workers, pin_memory on CUDA), then the library's
            ``Trainer.run_step(batch, epoch=0)`` (aux branch active) runs warm-up steps and
            timed steps, synchronising CUDA after each. fp32 (``precision: 32``) against AMP
            (``precision: 16``: bf16 where supported, else fp16; CUDA only) at batch 32 and 96.
            The batches arrive as pinned ``uint8`` with their colour factors; ``run_step`` copies
            them non-blocking and makes the input on the GPU (colour, normalisation).
            ``images_per_s`` counts the wall time including waiting for data;
            ``compute_images_per_s`` counts ``run_step`` only: the rate the input pipeline must
            feed (``bench/loader.py`` reads it from ``bench/results/gpu.json``, this JSON saved
            there); ``data_wait_share`` is the time blocked in ``next(loader)`` over the total;
            ``peak_mem_mib`` is ``torch.cuda.max_memory_allocated`` over the timed steps.

``infer``   ``nanodet.inference.predictor.Predictor`` (PyTorch backend, BN folded, inference mode) with
            fixed random weights calibrated to give a trained-like number of candidates
            (``bench._common.random_detector``; the detections per image are reported, since
            post-processing time depends on them). Forward only at batch 1/16/64 fp32 on a
            tensor already on the device; then end to end over a folder of 512 generated JPEGs
            (640x480..1280x960) through the executor's path (``ImageFileDataset`` +
            ``inference_batches``, batch 16 as the executor's default, ``min(10, cores - 2)``
            workers → ``predict_batch``, DataLoader start-up included), pin_memory off then on,
            alternated twice, best pass kept. Baseline: the same on CPU (32 images, 4 workers).

``mining``  ALDD scores (``nanodet.mining.uncertainty.aldd_scores`` on ``Predictor.forward_levels``) over the
            same folder, pin_memory off and on, plus the executor's one-pass mining + infer
            (``predict_batch_with_levels``). Baseline: the same on CPU with a few images.

``ddp``     With several visible GPUs: the training step (AMP, batch 96 per GPU) under
            ``torchrun --nproc_per_node N`` (the command ``executor.launch.torchrun_command``
            builds; the library's ``init_distributed`` + DDP), total images/s against the same
            under torchrun with 1 process: the scaling efficiency. With one GPU it is skipped,
            but a world of one process still initialises an NCCL process group and all-reduces.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import CLASSES, available_cores, log, peak_rss_mib, summarize, synthetic_config  # noqa: E402

CONFIG = "nanodet-plus-m_416.yml"
PARTS = ("train", "infer", "mining", "ddp")
TRAIN_IMAGE_SIZE = [[480, 360], [640, 480]]
FOLDER_IMAGE_SIZE = ((640, 480), (1280, 960))
CONF_THRES = 0.35  # the executor's default conf_thres for infer results
NO_PRETRAIN = {"model": {"arch": {"backbone": {"pretrain": False}}}}


# --- what to run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    train_batches: tuple[int, ...] = (32, 96)
    warmup: int = 5
    steps: int = 15
    workers: int = 10  # DataLoader workers per GPU (the official workers_per_gpu)
    forward_batches: tuple[int, ...] = (1, 16, 64)
    forward_warmup: int = 5
    forward_calls: int = 30
    folder_images: int = 512
    folder_batch: int = 16  # the executor's default batch_size_per_gpu
    repeats: int = 2  # folder passes per setting, alternated; the best is kept
    cpu_forward_batches: tuple[int, ...] = (1, 16)
    cpu_calls: int = 3
    cpu_images: int = 32
    cpu_batch: int = 16
    ddp_batch: int = 96
    ddp_warmup: int = 3
    ddp_steps: int = 10


def make_plan(quick: bool, device: torch.device) -> Plan:
    """The full plan, or a smoke-test one; on CPU the quick plan is tiny (the test runs it)."""
    workers = max(1, min(10, available_cores() - 2))
    plan = Plan(workers=workers)
    if not quick:
        return plan
    if device.type == "cpu":
        return replace(
            plan,
            train_batches=(2,),
            warmup=1,
            steps=2,
            workers=1,
            forward_batches=(1, 4),
            forward_warmup=1,
            forward_calls=2,
            folder_images=8,
            folder_batch=4,
            repeats=1,
            cpu_forward_batches=(1, 4),
            cpu_calls=2,
            cpu_images=4,
            cpu_batch=4,
            ddp_batch=2,
            ddp_warmup=1,
            ddp_steps=2,
        )
    return replace(
        plan,
        train_batches=(32,),
        warmup=2,
        steps=3,
        forward_calls=5,
        folder_images=64,
        repeats=1,
        cpu_images=8,
        cpu_batch=8,
        ddp_batch=32,
        ddp_warmup=2,
        ddp_steps=3,
    )


@dataclass
class Run:
    """One run's settings, scratch folder, deadline, and what is built once and reused."""

    args: argparse.Namespace
    plan: Plan
    device: torch.device
    tmp: Path
    deadline: float
    cache: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()


# --- small helpers ------------------------------------------------------------------------------


def sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_mem_mib": None, "host_peak_rss_mib": round(peak_rss_mib(), 1)}
    return {
        "peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
        "peak_mem_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20, 1),
    }


def free_memory() -> None:
    gc.collect()
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - a broken CUDA context fails the next measurement instead
        log(f"[gpu.py] empty_cache failed: {err}")


def error_record(err: BaseException) -> dict:
    tail = traceback.format_exception(type(err), err, err.__traceback__)[-3:]
    return {"error": f"{type(err).__name__}: {err}"[:2000], "traceback_tail": "".join(tail)[-2000:]}


def guarded(run: Run, what: str, fn: Callable[[], dict], need_s: float = 0.0) -> dict:
    """``fn()``, or its error; skipped when less than ``need_s`` of the time budget is left."""
    if run.left_s() < need_s:
        return {"skipped": f"time budget: {max(run.left_s(), 0):.0f} s left, about {need_s:.0f} s needed"}
    start = time.perf_counter()
    log(f"[gpu.py] {what} ...")
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - every failure is a result here
        log(f"[gpu.py] {what} failed: {type(err).__name__}: {err}")
        result = error_record(err)
    free_memory()
    result.setdefault("elapsed_s", round(time.perf_counter() - start, 1))
    return result


def significant(value: float, digits: int = 4) -> float:
    """A rate to ``digits`` significant digits (one decimal would make 0.75 images/s read 0.7)."""
    return float(f"{value:.{digits}g}")


def ratio(a: dict, b: dict, key: str = "images_per_s") -> float | None:
    """``a[key] / b[key]`` when both were measured."""
    x, y = a.get(key), b.get(key)
    return round(x / y, 3) if isinstance(x, int | float) and isinstance(y, int | float) and y > 0 else None


def clean(obj):
    """JSON-safe: NaN and infinities become null (``json.dumps`` would write invalid JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


# --- header -------------------------------------------------------------------------------------


def nvidia_driver() -> str | None:
    try:
        from torch.utils import collect_env

        return collect_env.get_nvidia_driver_version(collect_env.run)
    except Exception:  # noqa: BLE001 - nvidia-smi absent or unreadable
        return None


def cuda_facts() -> dict:
    n = torch.cuda.device_count()
    props = [torch.cuda.get_device_properties(i) for i in range(n)]
    api = getattr(torch._C, "_cuda_getDriverVersion", None)
    try:
        nccl_version = torch.cuda.nccl.version()  # a tuple (major, minor, patch), an int in old releases
        nccl_version = ".".join(map(str, nccl_version)) if isinstance(nccl_version, tuple) else str(nccl_version)
    except Exception:  # noqa: BLE001 - a build without NCCL
        nccl_version = None
    return {
        "gpu_count": n,
        "gpus": [p.name for p in props],
        "gpu_memory_gib": [round(p.total_memory / 2**30, 1) for p in props],
        "compute_capability": [f"{p.major}.{p.minor}" for p in props],
        "nvidia_driver": nvidia_driver(),
        "cuda_driver_api_version": api() if api else None,
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "nccl": nccl_version,
    }


def header(device: str) -> dict:
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cores_available": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "device_asked": device,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        try:
            info.update(cuda_facts())
        except Exception as err:  # noqa: BLE001
            info["cuda_facts"] = error_record(err)
    else:
        info.update({"gpu_count": 0, "gpus": []})
    return info


# --- generated data -----------------------------------------------------------------------------


def _write_chunk(job: tuple[str, int, int]) -> str:
    """One chunk of the training set (a COCO folder of its own), generated once."""
    from nanodet.data.synthetic import make_synthetic_coco

    root, index, size = job
    out = Path(root) / f"chunk{size}_{index:03d}"
    if not (out / "annotations.json").is_file():
        make_synthetic_coco(out, size, TRAIN_IMAGE_SIZE, CLASSES, seed=index, max_objects=6, min_size=24, max_size=200)
    return out.name


def merge_chunks(root: Path, names: list[str], out: Path) -> None:
    """One COCO annotation file over the chunk folders (file names relative to ``root``)."""
    images, annotations, categories = [], [], []
    for name in names:
        data = json.loads((root / name / "annotations.json").read_text())
        categories = data["categories"]
        remap = {}
        for img in data["images"]:
            remap[img["id"]] = len(images) + 1
            images.append({**img, "id": len(images) + 1, "file_name": f"{name}/images/{img['file_name']}"})
        for ann in data["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": remap[ann["image_id"]]})
    out.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def train_data(run: Run, images: int) -> dict[str, str]:
    """At least ``images`` training images, generated in parallel chunks (cached for the run)."""
    chunk = min(128, images)
    count = math.ceil(images / chunk)
    key = ("train", chunk, count)
    if key not in run.cache:
        root = run.tmp / "train"
        root.mkdir(exist_ok=True)
        start = time.perf_counter()
        with Pool(max(1, min(count, available_cores()))) as pool:
            names = pool.map(_write_chunk, [(str(root), i, chunk) for i in range(count)])
        ann = root / f"train_{chunk}x{count}.json"
        merge_chunks(root, names, ann)
        log(f"[gpu.py] {chunk * count} training images ready in {time.perf_counter() - start:.1f} s")
        run.cache[key] = {"img_path": str(root), "ann_path": str(ann)}
    return run.cache[key]


def val_data(run: Run) -> dict[str, str]:
    if "val" not in run.cache:
        from nanodet.data.synthetic import make_synthetic_coco

        out = run.tmp / "val"
        make_synthetic_coco(out, 4, TRAIN_IMAGE_SIZE, CLASSES, seed=999, max_objects=6, min_size=24, max_size=200)
        run.cache["val"] = {"img_path": str(out / "images"), "ann_path": str(out / "annotations.json")}
    return run.cache["val"]


def _write_folder_image(job: tuple[str, int]) -> str:
    from nanodet.data.synthetic import synthetic_image

    folder, index = job
    rng = np.random.default_rng([4242, index])
    (w0, h0), (w1, h1) = FOLDER_IMAGE_SIZE
    size = (int(rng.integers(w0, w1 + 1)), int(rng.integers(h0, h1 + 1)))
    image, _, _ = synthetic_image(rng, size, max_objects=6, min_size=32, max_size=320)
    path = Path(folder) / f"{index:05d}.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return str(path)


def folder_images(run: Run, count: int) -> list[Path]:
    """``count`` JPEGs of 640x480..1280x960 (the first ones of one folder, generated once)."""
    have = run.cache.setdefault("folder", [])
    if len(have) < count:
        folder = run.tmp / "folder"
        folder.mkdir(exist_ok=True)
        jobs = [(str(folder), i) for i in range(len(have), count)]
        with Pool(max(1, min(len(jobs), available_cores()))) as pool:
            have.extend(Path(p) for p in pool.map(_write_folder_image, jobs))
    return have[:count]


def train_config(run: Run, batch: int, precision: int, workers: int, images: int):
    return synthetic_config(
        CONFIG,
        train_data(run, images),
        val_data(run),
        (416, 416),
        batch,
        workers,
        run.tmp / "work",
        {"device": {"precision": precision}, **NO_PRETRAIN},
    )


# --- training -----------------------------------------------------------------------------------


def endless_batches(loader):
    """The loader's batches across epochs (as training does), skipping empty ones."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if batch is not None:
                yield batch
        epoch += 1


def timed_steps(trainer, warmup: int, steps: int) -> dict:
    """``run_step`` on the real loader's batches: per timed step, the wait for data and the step."""
    device = trainer.device
    sync = sync_fn(device)
    batches = endless_batches(trainer.train_loader)
    waits, computes, losses = [], [], []
    start = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            reset_peak(device)
            start = time.perf_counter()
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        out = trainer.run_step(batch, 0)  # epoch 0 < detach_epoch: the aux branch is trained too
        sync()
        if i >= warmup:
            waits.append(t1 - t0)
            computes.append(time.perf_counter() - t1)
        losses.append(out["loss"])
    wall = time.perf_counter() - start
    batches.close()
    return {"wall_s": wall, "waits": waits, "computes": computes, "loss_first_last": [losses[0], losses[-1]]}


def step_summary(t: dict, batch: int, world: int = 1) -> dict:
    steps, wall, computes = len(t["computes"]), t["wall_s"], t["computes"]
    images = world * batch * steps
    return {
        "images_per_s": significant(images / wall),
        "ms_per_step": round(1e3 * wall / steps, 2),
        "compute_images_per_s": significant(images / sum(computes)),
        "compute_ms_per_step_median": round(1e3 * statistics.median(computes), 2),
        "compute_ms_per_step_min": round(1e3 * min(computes), 2),
        "data_wait_share": round(sum(t["waits"]) / wall, 4),
        "data_wait_ms_per_step": round(1e3 * sum(t["waits"]) / steps, 2),
        "timed_steps": steps,
        "loss_first_last": [round(v, 4) for v in t["loss_first_last"]],
    }


def measure_train(run: Run, batch: int, amp: bool) -> dict:
    from nanodet.engine.distributed import DistContext
    from nanodet.engine.trainer import Trainer

    plan = run.plan
    images = batch * (plan.warmup + plan.steps)
    cfg = train_config(run, batch, 16 if amp else 32, plan.workers, images)
    trainer = Trainer.from_config(cfg, run.tmp / "work", DistContext(device=run.device), seed=0)
    result = {
        "batch": batch,
        "precision": cfg.device.precision,
        "amp_dtype": str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else None,
        "grad_scaler": trainer.scaler.is_enabled(),
        "workers": cfg.device.workers_per_gpu,
        "pin_memory": trainer.train_loader.pin_memory,
        "train_images": len(trainer.train_set),
        "warmup_steps": plan.warmup,
    }
    timing = timed_steps(trainer, plan.warmup, plan.steps)
    result.update(step_summary(timing, batch))
    result.update(peak_memory(run.device))
    del trainer
    return result


def part_train(run: Run) -> dict:
    out = {
        "config": f"config/{CONFIG}, {len(CLASSES)} classes, backbone.pretrain off, official augmentations",
        "input_size": [416, 416],
        "dataset": f"generated shapes, COCO json + JPEG {TRAIN_IMAGE_SIZE[0]}..{TRAIN_IMAGE_SIZE[1]}",
        "step": "nanodet.engine.trainer.Trainer.run_step(batch, epoch=0), CUDA synchronised after each step",
        "runs": {},
    }
    for batch in run.plan.train_batches:
        for amp in (False, True):
            key = f"{'amp' if amp else 'fp32'}_b{batch}"
            if amp and not run.cuda:
                out["runs"][key] = {
                    "skipped": "not applicable on cpu: AMP is CUDA-only (trainer.autocast_dtype returns None)"
                }
                continue
            out["runs"][key] = guarded(run, f"train {key}", partial(measure_train, run, batch, amp), need_s=30)
    runs = out["runs"]
    out["amp_speedup"] = {f"b{b}": ratio(runs[f"amp_b{b}"], runs[f"fp32_b{b}"]) for b in run.plan.train_batches}
    return out


# --- inference and mining -----------------------------------------------------------------------


def inference_config():
    from nanodet.config import load_config

    cfg = load_config(REPO / "config" / CONFIG).with_classes(list(CLASSES))
    return cfg.merged(NO_PRETRAIN)


def detector_weights(run: Run) -> Path:
    """Fixed random weights that score like a trained model (``bench._common.random_detector``)."""
    path = run.tmp / "random_detector.pth"
    if not path.is_file():
        from bench._common import random_detector
        from nanodet.weights.checkpoint import save_pth

        save_pth(random_detector(inference_config()), path)
    return path


def predictor_on(run: Run, device: torch.device):
    """The library's Predictor with the PyTorch backend (the forward-only timing needs the
    PyTorch model, and it is what ``auto`` picks on CUDA)."""
    key = ("predictor", str(device))
    if key not in run.cache:
        from nanodet.inference.predictor import Predictor

        run.cache[key] = Predictor(inference_config(), detector_weights(run), device=device, backend="torch")
    return run.cache[key]


def predictor_facts(predictor) -> dict:
    return {
        "backend": predictor.backend,
        "device": str(predictor.device),
        "input_size": list(predictor.input_wh),
        "channels_last": predictor.runtime.memory_format == torch.channels_last,
    }


def forward_speeds(predictor, batches: tuple[int, ...], warmup: int, calls: int) -> dict:
    """``Predictor.forward`` on an input already on the device, per batch size."""
    sync = sync_fn(predictor.device)
    w, h = predictor.input_wh
    out = {}
    for batch in batches:
        x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch)).to(predictor.device)
        for _ in range(warmup):
            predictor.forward(x)
        sync()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            predictor.forward(x)
            sync()
            times.append(time.perf_counter() - t0)
        out[f"b{batch}"] = summarize(times, batch)
    return out


def consume(predictor, batch, mode: str) -> tuple[int, list[float]]:
    """One batch of the folder: (detections above CONF_THRES, ALDD scores) as ``mode`` asks."""
    from nanodet.mining.uncertainty import aldd_scores

    hw = (batch.images.shape[2], batch.images.shape[3])
    nc = len(predictor.class_names)
    if mode == "detect":
        dets = predictor.predict_batch(batch.images, batch.warp_matrices, batch.sizes)
        return sum(len(d.above(CONF_THRES)) for d in dets), []
    if mode == "mine":
        return 0, aldd_scores(predictor.forward_levels(batch.images), nc, hw).cpu().tolist()
    levels, dets = predictor.predict_batch_with_levels(batch.images, batch.warp_matrices, batch.sizes)
    return sum(len(d.above(CONF_THRES)) for d in dets), aldd_scores(levels, nc, hw).cpu().tolist()


def folder_pass(predictor, paths: list[Path], batch: int, workers: int, pin: bool, mode: str) -> dict:
    """The executor's path over a folder, loader start-up included; the time spent waiting for data."""
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches

    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    sync = sync_fn(predictor.device)
    done, dets, scores, waited = 0, 0, [], 0.0
    start = tick = time.perf_counter()
    for item in inference_batches(dataset, batch, workers, pin_memory=pin):
        waited += time.perf_counter() - tick
        if item.images is not None:
            found, got = consume(predictor, item, mode)
            done, dets = done + len(item.paths), dets + found
            scores.extend(got)
        tick = time.perf_counter()
    sync()
    elapsed = time.perf_counter() - start
    out = {"images": done, "images_per_s": significant(done / elapsed), "seconds": round(elapsed, 3)}
    out["data_wait_share"] = round(waited / elapsed, 4)
    if mode != "mine":
        out["detections_per_image"] = round(dets / max(done, 1), 2)
    if scores:
        out["aldd_score_mean"] = round(float(np.mean(scores)), 6)
    return out


def pin_comparison(run: Run, predictor, mode: str) -> dict:
    """pin_memory off (baseline) and on, alternated ``repeats`` times; the best pass of each."""
    plan = run.plan
    paths = folder_images(run, plan.folder_images)
    settings = {"pin_off": False, "pin_on": True} if run.cuda else {"pin_off": False}
    passes: dict[str, list[dict]] = {k: [] for k in settings}
    for _ in range(plan.repeats):
        for key, pin in settings.items():
            passes[key].append(folder_pass(predictor, paths, plan.folder_batch, plan.workers, pin, mode))
    out = {"batch": plan.folder_batch, "workers": plan.workers, "image_sizes": [list(s) for s in FOLDER_IMAGE_SIZE]}
    for key, got in passes.items():
        best = max(got, key=lambda r: r["images_per_s"])
        out[key] = {**best, "images_per_s_all_passes": [r["images_per_s"] for r in got]}
    if not run.cuda:
        out["pin_on"] = {"skipped": "not applicable on cpu: pin_memory speeds host-to-GPU copies only"}
    out["pin_on_over_off"] = ratio(out["pin_on"], out["pin_off"])
    return out


def cpu_folder(run: Run, mode: str) -> dict:
    """The CPU baseline over the first ``cpu_images`` of the folder (no pinning on CPU)."""
    plan = run.plan
    predictor = predictor_on(run, torch.device("cpu"))
    paths = folder_images(run, plan.cpu_images)
    result = folder_pass(predictor, paths, plan.cpu_batch, min(4, plan.workers), False, mode)
    return {
        **result,
        "batch": plan.cpu_batch,
        "workers": min(4, plan.workers),
        "torch_threads": torch.get_num_threads(),
    }


def cpu_baseline(run: Run, what: Callable[[], dict]) -> dict:
    result = guarded(run, "cpu baseline", what, need_s=20)
    if not run.cuda:
        result["note"] = "the device is the CPU too: run only so that this code path is exercised"
    return result


def part_infer(run: Run) -> dict:
    plan = run.plan
    predictor = predictor_on(run, run.device)
    out = {
        "weights": "fixed random weights calibrated like a trained model (bench._common.random_detector)",
        **predictor_facts(predictor),
        "conf_thres_for_counts": CONF_THRES,
    }
    forward = partial(forward_speeds, predictor, plan.forward_batches, plan.forward_warmup, plan.forward_calls)
    out["forward_fp32"] = guarded(run, "forward", forward)
    out["folder_detect"] = guarded(run, "folder detect", partial(pin_comparison, run, predictor, "detect"))
    cpu = torch.device("cpu")

    def cpu_side() -> dict:
        calls = partial(forward_speeds, predictor_on(run, cpu), plan.cpu_forward_batches, 1, plan.cpu_calls)
        facts = predictor_facts(predictor_on(run, cpu))
        return {**facts, "forward_fp32": calls(), "folder_detect": cpu_folder(run, "detect")}

    out["cpu_baseline"] = cpu_baseline(run, cpu_side)
    gpu_fwd, cpu_fwd = out["forward_fp32"], out["cpu_baseline"].get("forward_fp32", {})
    speedup = {k: ratio(gpu_fwd[k], cpu_fwd[k]) for k in gpu_fwd if k in cpu_fwd and k.startswith("b")}
    best = out["folder_detect"].get("pin_on" if run.cuda else "pin_off", {})
    speedup["folder_detect"] = ratio(best, out["cpu_baseline"].get("folder_detect", {}))
    out["speedup_vs_cpu"] = speedup
    return out


def part_mining(run: Run) -> dict:
    predictor = predictor_on(run, run.device)
    plan = run.plan
    out = {
        "algorithm": "aldd (nanodet.mining.uncertainty.aldd_scores on Predictor.forward_levels)",
        "device": str(run.device),
    }
    out["folder_mine"] = guarded(run, "folder mining", partial(pin_comparison, run, predictor, "mine"))
    paths = folder_images(run, plan.folder_images)
    one_pass = partial(folder_pass, predictor, paths, plan.folder_batch, plan.workers, run.cuda, "mine+detect")
    out["folder_mine_and_detect_one_pass"] = guarded(run, "folder mining + infer", one_pass)
    out["cpu_baseline"] = cpu_baseline(run, partial(cpu_folder, run, "mine"))
    best = out["folder_mine"].get("pin_on" if run.cuda else "pin_off", {})
    out["speedup_vs_cpu"] = ratio(best, out["cpu_baseline"])
    return out


# --- DDP ----------------------------------------------------------------------------------------


def launch_torchrun(run: Run, nproc: int, spec: dict, timeout_s: float) -> dict:
    """``spec`` in ``nproc`` torchrun workers (the executor's command); what rank 0 wrote."""
    from executor.launch import torchrun_command

    tag = f"{spec['mode']}_{nproc}"
    spec = {**spec, "out": str(run.tmp / f"ddp_{tag}.json")}
    spec_path = run.tmp / f"ddp_{tag}_spec.json"
    spec_path.write_text(json.dumps(spec))
    command = torchrun_command(nproc, [str(Path(__file__).resolve()), "--ddp-worker", str(spec_path)])
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
    try:
        code = proc.wait(timeout=max(timeout_s, 1.0))
    except subprocess.TimeoutExpired:
        stop_group(proc)
        raise TimeoutError(f"torchrun --nproc_per_node {nproc} still running after {timeout_s:.0f} s") from None
    if code != 0 or not Path(spec["out"]).is_file():
        raise RuntimeError(f"torchrun --nproc_per_node {nproc} exited {code} (worker output above on stderr)")
    return {**json.loads(Path(spec["out"]).read_text()), "torchrun_s": round(time.perf_counter() - start, 1)}


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the torchrun we started and its workers (its own process group): TERM, then KILL."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def ddp_spec(run: Run, nproc: int) -> dict:
    plan = run.plan
    workers = max(1, min(10, (available_cores() - 1) // nproc))
    per_rank = plan.ddp_batch * (plan.ddp_warmup + plan.ddp_steps)
    images = min(nproc * per_rank, 8192)  # beyond that the ranks start new epochs (as training does)
    cfg = train_config(run, plan.ddp_batch, 16, workers, images)
    return {
        "mode": "train",
        "device": run.device.type,
        "config": cfg.model_dump(mode="json"),
        "work_dir": str(run.tmp / "work_ddp"),
        "batch": plan.ddp_batch,
        "warmup": plan.ddp_warmup,
        "steps": plan.ddp_steps,
    }


def part_ddp(run: Run) -> dict:
    if not run.cuda:
        return {"skipped": "device is cpu: DDP is measured on CUDA GPUs only"}
    n = torch.cuda.device_count()
    if n < 2:
        check = partial(launch_torchrun, run, 1, {"mode": "group", "device": "cuda"}, min(120.0, run.left_s()))
        return {"skipped": "1 GPU visible", "nccl_world_size_1": guarded(run, "nccl world of 1", check, need_s=15)}
    spec = ddp_spec(run, n)
    out = {
        "gpus": n,
        "per_gpu_batch": spec["batch"],
        "precision": 16,
        "workers_per_gpu": spec["config"]["device"]["workers_per_gpu"],
    }
    one = partial(launch_torchrun, run, 1, spec, min(240.0, run.left_s()))
    out["one_gpu"] = guarded(run, "ddp baseline: torchrun 1 process", one, need_s=40)
    many = partial(launch_torchrun, run, n, spec, min(300.0, run.left_s()))
    out[f"{n}_gpus"] = guarded(run, f"ddp: torchrun {n} processes", many, need_s=40)
    for key in ("images_per_s", "compute_images_per_s"):
        speedup = ratio(out[f"{n}_gpus"], out["one_gpu"], key)
        out[f"scaling_efficiency_{key}"] = round(speedup / n, 3) if speedup is not None else None
    return out


def process_group_check(device_type: str) -> dict | None:
    """As ``init_distributed`` does (set the CUDA device, then the group: NCCL on CUDA, gloo on
    CPU), for any world size, torchrun's one included; then one all-reduce."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    t0 = time.perf_counter()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    t1 = time.perf_counter()
    x = torch.ones(1, device=device)
    dist.all_reduce(x)
    sync_fn(device)()
    t2 = time.perf_counter()
    world, rank, backend = dist.get_world_size(), dist.get_rank(), str(dist.get_backend())
    dist.destroy_process_group()
    result = {"ok": int(x.item()) == world, "backend": backend, "world_size": world}
    result.update({"init_s": round(t1 - t0, 3), "first_all_reduce_s": round(t2 - t1, 3)})
    return result if rank == 0 else None


def ddp_train(spec: dict) -> dict | None:
    """One torchrun worker: the library's DDP set-up and Trainer, timed steps, gathered on rank 0."""
    from nanodet.config import parse_config
    from nanodet.engine.distributed import cleanup_distributed, init_distributed
    from nanodet.engine.trainer import Trainer

    ctx = init_distributed(spec["device"])
    try:
        cfg = parse_config(spec["config"], "<bench/gpu.py ddp>")
        trainer = Trainer.from_config(cfg, spec["work_dir"], ctx, seed=0)
        timing = timed_steps(trainer, spec["warmup"], spec["steps"])
        mine = {**timing, **peak_memory(ctx.device), "ddp_wrapped": ctx.distributed}
        every = ctx.gather_objects(mine)
    finally:
        cleanup_distributed()
    if not ctx.is_main:
        return None
    return ddp_summary(every, spec["batch"])


def ddp_summary(every: list[dict], batch: int) -> dict:
    """Totals over the ranks: the slowest rank's wall time and compute time count."""
    world = len(every)
    slowest = max(every, key=lambda r: r["wall_s"])
    total = {**slowest, "computes": [max(c) for c in zip(*(r["computes"] for r in every))]}
    out = {"world_size": world, "ddp_wrapped": every[0]["ddp_wrapped"], **step_summary(total, batch, world)}
    out["data_wait_share_per_rank"] = [round(sum(r["waits"]) / r["wall_s"], 4) for r in every]
    out["peak_mem_mib_per_rank"] = [r["peak_mem_mib"] for r in every]
    return out


def ddp_worker(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    result = process_group_check(spec["device"]) if spec["mode"] == "group" else ddp_train(spec)
    if result is not None:
        Path(spec["out"]).write_text(json.dumps(clean(result)))
    return 0


# --- the driver ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps and images (a smoke run)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="start nothing after this many seconds (default 420)"
    )
    parser.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; known: {','.join(PARTS)}")
    return args


def emit(report: dict, out) -> None:
    out.write(json.dumps(clean(report), indent=1) + "\n")
    out.flush()


def start_watchdog(report: dict, out, after_s: float) -> threading.Timer:
    """After ``after_s``: print what was measured so far and exit 3 (something hangs)."""

    def fire() -> None:
        report["error"] = f"watchdog: still running after {after_s:.0f} s; the parts above are what finished"
        for _ in range(5):  # the main thread may be adding to the report right now
            try:
                text = json.dumps(clean(report), indent=1)
                break
            except RuntimeError:
                time.sleep(0.2)
        else:
            text = json.dumps({"error": report["error"], "header": report.get("header")})
        out.write(text + "\n")
        out.flush()
        os._exit(3)

    timer = threading.Timer(after_s, fire)
    timer.daemon = True
    timer.start()
    return timer


def run_parts(args: argparse.Namespace, device: torch.device, report: dict) -> None:
    plan = make_plan(args.quick, device)
    report["plan"] = {k: list(v) if isinstance(v, tuple) else v for k, v in plan.__dict__.items()}
    functions = {"train": part_train, "infer": part_infer, "mining": part_mining, "ddp": part_ddp}
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-gpu-") as tmp:
        run = Run(args, plan, device, Path(tmp), time.perf_counter() + args.budget_s)
        for name in PARTS:
            if name not in args.parts:
                report[name] = {"skipped": "not in --parts"}
                continue
            report[name] = guarded(run, f"part {name}", partial(functions[name], run), need_s=10)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(Path(args.ddp_worker))
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")  # the JSON goes here; anything else printed goes to stderr
    os.dup2(2, 1)
    start = time.perf_counter()
    report = {"benchmark": "bench/gpu.py", "quick": args.quick, "parts": args.parts, "header": header(args.device)}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        report["error"] = "CUDA not available"
        emit(report, out)
        return 2
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    watchdog = start_watchdog(report, out, args.budget_s + 60)
    run_parts(args, device, report)
    watchdog.cancel()
    report["wall_s"] = round(time.perf_counter() - start, 1)
    emit(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
