#!/usr/bin/env python
"""Inference benchmark of NanoDet-Plus-m: model forward and end-to-end folder detection.

Prints ONE JSON object on stdout (progress goes to stderr)::

    .venv/bin/python bench/infer.py            # full run, ~4 min on 2 quiet cores
    .venv/bin/python bench/infer.py --quick    # ~40 s: input 320 only, 3 paths, 32 images

On a shared machine, ``--wait-quiet 60`` waits for other jobs to calm down before each
timing process (the numbers of a loaded 2-core machine mean little: two OpenMP threads
that spin-wait collapse 5-20x when another process takes a core).

1. Forward throughput at inputs 320 and 416, batch 1 and 16, of the plain eager model
   (unfused, ``torch.no_grad``, default threads: the baseline) and of every candidate
   optimised path: BN folded into the convs (``Predictor(optimize=True)``, inference
   mode), channels-last, TorchScript trace + freeze, ``torch.compile`` (``--compile``),
   one intra-op thread (``@t1``) and passive OpenMP waiting (``+passive``, the env
   variable ``OMP_WAIT_POLICY=PASSIVE`` is read when the OpenMP runtime loads, so those
   candidates run in a process of their own). The fastest at batch 16 is "optimized".
   Timing runs in one subprocess per size (and OpenMP setting) with the candidates
   interleaved round by round, so all of them see the same background load; throughput
   is best-of-N (what the machine can do) with the median beside it (what it did).
   Peak memory is measured in a fresh subprocess per (size, batch, path): peak RSS of
   that process (Linux ``VmHWM``; ``ru_maxrss`` of a child inherits the parent's peak
   across fork/exec, so it is only the fallback) and its growth over the RSS once the
   model is loaded; on CUDA ``torch.cuda.max_memory_allocated``.
2. Correctness: raw head outputs of every candidate against the eager model, and boxes /
   scores after post-processing, on real-looking (synthetic) images.
3. End to end: a folder of synthetic JPEGs of mixed sizes, (a) one image at a time
   (``cv2.imread`` → ``Predictor.predict([img])``) and (b) ``ImageFileDataset`` +
   ``inference_batches`` (1 and 2 workers, batch 16) → ``predict_batch``, both with the
   same optimised model, each in a fresh process, with the time the main process waits
   in ``next(loader)``; on CPU also the loader with one OpenCV thread per worker and, for
   comparison, no loader but the folder split over one single-thread process per core.
   Plus a per-stage profile (decode, pre-process, forward, post-process) explaining it.

Weights are random but fixed (seeded) and realistic: see ``_common.random_detector``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _common  # noqa: E402  (also puts the repository on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import CpuNoise, current_rss_mib, log, peak_rss_mib, summarize  # noqa: E402

REPO = _common.REPO
CONFIGS = {320: "config/nanodet-plus-m_320.yml", 416: "config/nanodet-plus-m_416.yml"}
BASE_VARIANTS = ("eager", "fused", "fused_cl", "jit", "jit_cl", "compile", "compile_cl")
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
PROFILE_STAGES = ("decode", "preprocess", "forward_b1", "postprocess_b1", "decode_boxes_b1", "nms_b1")


# --- building a path ----------------------------------------------------------------------


def parse_variant(name: str) -> tuple[str, int | None, bool]:
    """``"jit_cl@t1+passive"`` → (base ``jit_cl``, threads 1, passive OpenMP)."""
    passive = name.endswith("+passive")
    name = name.removesuffix("+passive")
    threads = None
    if "@t" in name:
        name, t = name.split("@t")
        threads = int(t)
    if name not in BASE_VARIANTS:
        raise ValueError(f"unknown variant {name!r}")
    return name, threads, passive


def variant_env(variant: str) -> dict | None:
    """The environment a path's process needs: passive OpenMP waiting is read at OpenMP load."""
    return PASSIVE_ENV if parse_variant(variant)[2] else None


def build_predictor(variant: str, size: int, weights: Path, device: str, example: torch.Tensor, on_loaded=None):
    """A ``Predictor`` for one path and the call that runs its forward on a batch.

    Every path is a real Predictor, so ``predict`` / ``predict_batch`` use it unchanged.
    Returns (predictor, forward(batch) → raw head output, seconds spent building).
    """
    from nanodet.inference.predictor import Predictor

    base, _, _ = parse_variant(variant)
    start = time.perf_counter()
    pred = Predictor(
        REPO / CONFIGS[size],
        weights,
        device,
        optimize=base != "eager",
        channels_last=base.endswith("_cl"),
    )
    if on_loaded is not None:
        on_loaded(pred)
    if base.startswith("jit"):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ex = example.to(pred.device).contiguous(memory_format=pred.memory_format)
            traced = torch.jit.trace(pred.model, ex, check_trace=False)
            pred.model = torch.jit.freeze(traced)
    elif base.startswith("compile"):
        pred.model = torch.compile(pred.model, dynamic=False)

    if base == "eager":  # the baseline: plain module call, no_grad, no memory-format change

        def forward(batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return pred.model(batch.to(pred.device))
    else:
        forward = pred.forward
    return pred, forward, time.perf_counter() - start


def set_threads(threads: int | None) -> None:
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def error_text(err: Exception) -> str:
    """An exception in one line, for a report entry."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


# --- subprocess workers -------------------------------------------------------------------


@dataclass
class WorkerSpec:
    """What one worker subprocess of this script does, sent to it as one JSON argument (``--_spec``).

    ``kind`` picks the worker (a key of ``WORKERS``); the fields below it are read by the
    workers named in their comments.
    """

    kind: str
    device: str
    threads: int | None = None  # torch intra-op threads of the whole process (``--threads``)
    size: int = 320  # all: input size
    weights: str = ""  # all: the weights file
    inputs: str = ""  # all: pre-processed example inputs (a saved tensor of 16)
    variants: str = ""  # timing: comma list of the paths to time, interleaved
    rounds: int = 1  # timing: least rounds
    budget_s: float = 0.0  # timing: more rounds while this lasts (50 at most)
    calls_b1: int = 3  # timing: calls per round at batch 1
    calls_b16: int = 1  # timing: calls per round at batch 16
    variant: str = ""  # memory, e2e, profile: the path
    batch: int | None = None  # memory, e2e (pipeline): batch size
    images_dir: str = ""  # e2e, profile: the folder of JPEGs
    mode: str | None = None  # e2e: "sequential" or "pipeline"
    workers: int | None = None  # e2e (pipeline): loader workers
    main_threads: int | None = None  # e2e: torch threads of the main process, over the path's own
    shard: str | None = None  # e2e: "k/n", every n-th file from the k-th
    barrier: str | None = None  # e2e: folder where concurrent shards meet before the timed part
    worker_init: str | None = None  # e2e (pipeline): a plain DataLoader with ``WorkerInit(worker_init)``
    profile_images: int | None = None  # profile: images to go through

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


def worker_timing(spec: WorkerSpec) -> dict:
    """Interleaved rounds over all variants of one size; per-call wall times."""
    default_threads = torch.get_num_threads()
    sync = _common.sync(torch.device(spec.device))
    inputs = torch.load(spec.inputs)
    batches = {1: inputs[:1], 16: inputs[:16]}
    noise = CpuNoise()
    built, setup = _build_timed_paths(spec, batches, default_threads, sync)
    times, rounds = _timing_rounds(spec, built, batches, default_threads, sync)
    set_threads(default_threads)
    return {
        "times": times,
        "setup": setup,
        "foreign_cpu_share": noise.foreign_share(),
        "threads_default": default_threads,
        "rounds": rounds,
    }


def _build_timed_paths(spec: WorkerSpec, batches: dict, default_threads: int, sync) -> tuple[dict, dict]:
    """Every path of ``spec.variants`` built and run twice per batch size; (forwards, setup times)."""
    built, setup = {}, {}
    for v in spec.variants.split(","):
        _, threads, _ = parse_variant(v)
        set_threads(threads or default_threads)
        try:
            _, fwd, secs = build_predictor(v, spec.size, Path(spec.weights), spec.device, batches[16])
            for b in (16, 1):  # first calls: tracing, compilation, allocator, OpenMP pool
                t = time.perf_counter()
                for _ in range(2):
                    fwd(batches[b])
                sync()
                setup[f"{v}/b{b}_first_calls_s"] = round(time.perf_counter() - t, 3)
            built[v] = fwd
            setup[f"{v}/build_s"] = round(secs, 3)
        except Exception as err:  # a candidate that does not work here is reported, not fatal
            setup[f"{v}/error"] = error_text(err)
            log(f"  {v}: FAILED {setup[f'{v}/error']}")
    return built, setup


def _timing_rounds(spec: WorkerSpec, built: dict, batches: dict, default_threads: int, sync) -> tuple[dict, int]:
    """Per-call wall times of every built path, {path: {"1": [...], "16": [...]}}, and the rounds run."""
    times: dict[str, dict[str, list[float]]] = {v: {"1": [], "16": []} for v in built}
    calls = {1: spec.calls_b1, 16: spec.calls_b16}
    start, rounds = time.perf_counter(), 0
    # short rounds, variants interleaved, until the budget is spent: every variant is sampled
    # at many moments, so best-of-N finds the quiet ones even when other jobs load the CPU
    while rounds < spec.rounds or (time.perf_counter() - start < spec.budget_s and rounds < 50):
        for v, fwd in built.items():
            _, threads, _ = parse_variant(v)
            set_threads(threads or default_threads)
            for b in (1, 16):
                if b == 1:
                    fwd(batches[b])  # re-warm after the other variants ran
                    sync()
                for _ in range(calls[b]):
                    t = time.perf_counter()
                    fwd(batches[b])
                    sync()
                    times[v][str(b)].append(time.perf_counter() - t)
        rounds += 1
    log(f"  size {spec.size}: {rounds} rounds in {time.perf_counter() - start:.0f} s")
    return times, rounds


def worker_memory(spec: WorkerSpec) -> dict:
    """Peak memory of one (size, batch, variant) in this fresh process."""
    device = torch.device(spec.device)
    inputs = torch.load(spec.inputs)[: spec.batch]
    _, threads, _ = parse_variant(spec.variant)
    set_threads(threads)
    loaded: dict = {}

    def on_loaded(pred) -> None:  # the weights are in place; nothing has run yet
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            loaded["cuda"] = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        loaded["rss"] = current_rss_mib()
        loaded["peak_rss"] = peak_rss_mib()

    _, fwd, _ = build_predictor(spec.variant, spec.size, Path(spec.weights), spec.device, inputs, on_loaded)
    for _ in range(3):
        fwd(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out = {
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_model_loaded_mib": round(loaded["rss"], 1),
        "peak_rss_growth_mib": round(peak_rss_mib() - loaded["rss"], 1),
        "note": "peak = VmHWM of this fresh process; growth = peak minus RSS once the model is loaded "
        "(before tracing/compiling and any forward)",
    }
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["cuda_max_allocated_over_weights_mib"] = round(
            (torch.cuda.max_memory_allocated(device) - loaded["cuda"]) / 2**20, 1
        )
    return out


class WorkerInit:
    """``worker_init_fn`` for the DataLoader workers: ``cv2`` = one OpenCV thread (torch already
    runs one intra-op thread in a worker), ``nice<N>`` = lower the worker's CPU priority so the
    main process's forward is not slowed down by decoding on a machine with few cores.

    ``cv2.setNumThreads`` is only safe when the parent process never ran an OpenCV parallel
    loop before forking: in a forked child whose parent had started OpenCV's thread pool it
    blocks forever in ``pthread_cond_destroy`` (seen here with OpenCV 4.x). The e2e runs are
    fresh processes that do not touch cv2 before the loader forks.
    """

    def __init__(self, spec: str) -> None:
        self.spec = [x for x in spec.split(",") if x]

    def __call__(self, _: int) -> None:
        for item in self.spec:
            if item == "cv2":
                import cv2

                cv2.setNumThreads(1)
            elif item.startswith("nice"):
                os.nice(int(item[4:]))
        torch.set_num_threads(1)


@dataclass
class FolderRun:
    """What an end-to-end pass over the folder accumulates (seconds)."""

    detections: float = 0.0
    blocked: float = 0.0  # waiting in next(loader)
    compute: float = 0.0  # predict / predict_batch
    per_batch: list[float] = field(default_factory=list)  # model ms per image of each batch, in order
    first_batch_s: float | None = None


def worker_e2e(spec: WorkerSpec) -> dict:
    """One end-to-end run over the image folder in this fresh process."""
    files = sorted(Path(spec.images_dir).glob("*.jpg"))
    if spec.shard:  # "k/n": every n-th file from the k-th, for runs in n concurrent processes
        k, n = (int(x) for x in spec.shard.split("/"))
        files = files[k::n]
    pred = _e2e_predictor(spec)
    sync = _common.sync(pred.device)
    sync()
    if spec.barrier:  # concurrent shards: start the timed part together
        _meet_at_barrier(spec)
    noise = CpuNoise()
    start = time.perf_counter()
    run = _run_sequential(pred, files) if spec.mode == "sequential" else _run_pipeline(spec, pred, files, start)
    sync()
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 3),
        "images": len(files),
        "images_per_s": round(len(files) / wall, 2),
        "loader_wait_s": round(run.blocked, 3),
        "loader_wait_share": round(run.blocked / wall, 3),
        "first_batch_s": None if run.first_batch_s is None else round(run.first_batch_s, 3),
        "model_ms_per_image": round(1000 * run.compute / max(1, len(files)), 2),
        **({"model_ms_per_image_by_batch": run.per_batch} if run.per_batch else {}),
        "detections": int(run.detections),
        "foreign_cpu_share": noise.foreign_share(),
    }


def _e2e_predictor(spec: WorkerSpec):
    """The path's predictor, on its threads (or ``main_threads``), warmed up at batch 1 and 16."""
    example = torch.load(spec.inputs)
    pred, fwd, _ = build_predictor(spec.variant, spec.size, Path(spec.weights), spec.device, example[:16])
    _, threads, _ = parse_variant(spec.variant)
    if spec.main_threads:
        threads = spec.main_threads
    set_threads(threads)
    for b in (1, 16, 1, 16):  # load-time warm-up, not part of a folder run
        fwd(example[:b])
    return pred


def _meet_at_barrier(spec: WorkerSpec) -> None:
    """Say this shard is ready, then wait until all ``n`` shards are."""
    k, n = (int(x) for x in spec.shard.split("/"))
    Path(spec.barrier, f"ready{k}").touch()
    while sum(1 for _ in Path(spec.barrier).glob("ready*")) < n:
        time.sleep(0.005)


def _run_sequential(pred, files: list[Path]) -> FolderRun:
    """One image at a time: ``cv2.imread`` → ``Predictor.predict([img])``."""
    import cv2

    run = FolderRun()
    for path in files:
        image = cv2.imread(str(path))
        t = time.perf_counter()
        run.detections += len(pred.predict([image])[0])
        run.compute += time.perf_counter() - t
    return run


def _run_pipeline(spec: WorkerSpec, pred, files: list[Path], start: float) -> FolderRun:
    """``ImageFileDataset`` + a loader → ``predict_batch``, with the time spent in ``next(loader)``."""
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches

    run = FolderRun()
    dataset = ImageFileDataset(files, pred.input_wh, pred.keep_ratio, pred.mean, pred.std)
    loader = _plain_loader(spec, dataset) if spec.worker_init else inference_batches(dataset, spec.batch, spec.workers)
    while True:
        t = time.perf_counter()
        try:
            batch = next(loader)
        except StopIteration:
            run.blocked += time.perf_counter() - t
            break
        run.blocked += time.perf_counter() - t
        if run.first_batch_s is None:
            run.first_batch_s = time.perf_counter() - start
        if batch.images is not None:
            t = time.perf_counter()
            dets = pred.predict_batch(batch.images, batch.warp_matrices, batch.sizes)
            run.compute += time.perf_counter() - t
            run.per_batch.append(round(1000 * (time.perf_counter() - t) / len(dets), 1))
            run.detections += sum(len(d) for d in dets)
    return run


def _plain_loader(spec: WorkerSpec, dataset):
    """A plain DataLoader over the dataset whose workers run ``WorkerInit(spec.worker_init)``."""
    from torch.utils.data import DataLoader

    from nanodet.data.inference_dataset import collate_inference

    return iter(
        DataLoader(
            dataset,
            batch_size=spec.batch,
            shuffle=False,
            num_workers=spec.workers,
            collate_fn=collate_inference,
            prefetch_factor=4,
            persistent_workers=False,
            worker_init_fn=WorkerInit(spec.worker_init),
        )
    )


def worker_profile(spec: WorkerSpec) -> dict:
    """Where the time of one image goes: decode, pre-process, forward, post-process."""
    files = sorted(Path(spec.images_dir).glob("*.jpg"))[: spec.profile_images]
    example = torch.load(spec.inputs)
    pred, fwd, _ = build_predictor(spec.variant, spec.size, Path(spec.weights), spec.device, example[:16])
    _, threads, _ = parse_variant(spec.variant)
    set_threads(threads)
    sync = _common.sync(pred.device)
    for b in (1, 16, 1, 16):
        fwd(example[:b])
    stages: dict[str, list[float]] = {k: [] for k in PROFILE_STAGES}
    images, inputs, mats, candidates = [], [], [], []
    for path in files:
        seconds, image, chw, matrix, n_candidates = _profile_image(pred, fwd, sync, path)
        for k, s in zip(PROFILE_STAGES, seconds):
            stages[k].append(s)
        images.append(image)
        inputs.append(torch.from_numpy(chw))
        mats.append(matrix)
        candidates.append(n_candidates)
    fwd16, post16 = _profile_batches(pred, fwd, sync, images, inputs, mats)
    # the same forward on one thread: the CPU time it costs, for the overlap estimate
    fwd16_1t = _forward_one_thread(fwd, inputs) if fwd16 and pred.device.type == "cpu" else []
    ms = {k: round(1000 * float(np.median(v)), 2) for k, v in stages.items()}
    if fwd16:
        ms["forward_b16_per_image"] = round(1000 * float(np.median(fwd16)), 2)
        ms["postprocess_b16_per_image"] = round(1000 * float(np.median(post16)), 2)
    if fwd16_1t:
        ms["forward_b16_per_image_1thread"] = round(1000 * min(fwd16_1t), 2)
    mp = [im.shape[0] * im.shape[1] / 1e6 for im in images]
    return {
        "ms_per_image_median": ms,
        "images": len(files),
        "megapixels_mean": round(float(np.mean(mp)), 3),
        "nms_candidates_per_image_median": int(np.median(candidates)),
        "threads": torch.get_num_threads(),
    }


def _postprocess(pred, raw: torch.Tensor, hw: tuple[int, int], mats: list, images: list) -> list:
    """The predictor's full post-processing (decode, NMS, boxes back to the images)."""
    from nanodet.inference.postprocess import postprocess

    return postprocess(
        raw,
        pred.priors(hw),
        pred.head.num_classes,
        pred.head.reg_max,
        hw,
        mats,
        [(im.shape[1], im.shape[0]) for im in images],
        pred.score_thr,
        pred.iou_thr,
        pred.max_det,
    )


def _profile_image(pred, fwd, sync, path: Path) -> tuple:
    """One image through every stage: (seconds per stage in ``PROFILE_STAGES`` order, image, input,
    warp matrix, NMS candidates)."""
    from nanodet.data.image_io import read_image
    from nanodet.data.transforms import stack_batch
    from nanodet.inference.postprocess import decode
    from nanodet.ops.nms import multiclass_nms

    t0 = time.perf_counter()
    image = read_image(path)
    t1 = time.perf_counter()
    chw, matrix = pred.preprocess(image)
    t2 = time.perf_counter()
    batch = stack_batch([torch.from_numpy(chw)])
    raw = fwd(batch)
    sync()
    t3 = time.perf_counter()
    hw = (batch.shape[2], batch.shape[3])
    with torch.inference_mode():
        _postprocess(pred, raw, hw, [matrix], [image])
        t4 = time.perf_counter()
        scores, boxes = decode(raw, pred.priors(hw), pred.head.num_classes, pred.head.reg_max, hw)
        sync()
        t5 = time.perf_counter()
        multiclass_nms(boxes[0], scores[0], pred.score_thr, pred.iou_thr, pred.max_det)
        sync()
        t6 = time.perf_counter()
        n_candidates = int((scores[0] > pred.score_thr).sum())
    seconds = [b - a for a, b in itertools.pairwise((t0, t1, t2, t3, t4, t5, t6))]
    return seconds, image, chw, matrix, n_candidates


def _profile_batches(pred, fwd, sync, images: list, inputs: list, mats: list) -> tuple[list[float], list[float]]:
    """Batches of 16: forward and post-process seconds per image, one entry per batch."""
    from nanodet.data.transforms import stack_batch

    fwd16, post16 = [], []
    for start in range(0, len(inputs) - 15, 16):
        batch = stack_batch(inputs[start : start + 16])
        t0 = time.perf_counter()
        raw = fwd(batch)
        sync()
        t1 = time.perf_counter()
        with torch.inference_mode():
            hw = (batch.shape[2], batch.shape[3])
            _postprocess(pred, raw, hw, mats[start : start + 16], images[start : start + 16])
        t2 = time.perf_counter()
        fwd16.append((t1 - t0) / 16)
        post16.append((t2 - t1) / 16)
    return fwd16, post16


def _forward_one_thread(fwd, inputs: list) -> list[float]:
    """Seconds per image of the batch-16 forward on one intra-op thread (two calls after one warm-up)."""
    from nanodet.data.transforms import stack_batch

    threads_now = torch.get_num_threads()
    torch.set_num_threads(1)
    batch = stack_batch(inputs[:16])
    fwd(batch)
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        fwd(batch)
        seconds.append((time.perf_counter() - t0) / 16)
    torch.set_num_threads(threads_now)
    return seconds


WORKERS = {"timing": worker_timing, "memory": worker_memory, "e2e": worker_e2e, "profile": worker_profile}


def worker_main(text: str) -> None:
    """Entry of a worker subprocess: run the spec's worker, print its result as one JSON line."""
    spec = WorkerSpec.from_json(text)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    print(json.dumps(WORKERS[spec.kind](spec)))


def _worker_cmd(spec: WorkerSpec) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--_spec", spec.to_json()]


def _parse_worker(kind: str, rc: int | None, stdout: str, stderr: str) -> dict:
    if rc != 0 or not stdout.strip():
        tail = stderr.strip().splitlines()[-3:]
        log(f"  worker {kind} failed (rc {rc}): {' | '.join(tail)}")
        return {"error": f"rc {rc}: {' | '.join(tail)[-400:]}"}
    return json.loads(stdout.strip().splitlines()[-1])


def run_worker(spec: WorkerSpec, env: dict | None = None, timeout: float = 600) -> dict:
    """Run this script as a worker subprocess; its last stdout line is JSON."""
    return run_workers([spec], env, timeout)[0]


def run_workers(specs: list[WorkerSpec], env: dict | None = None, timeout: float = 600) -> list[dict]:
    """Several worker subprocesses at once (concurrent shards); one result each."""
    full_env = {**os.environ, **(env or {})}
    procs = [
        subprocess.Popen(
            _worker_cmd(s), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO
        )
        for s in specs
    ]
    deadline = time.monotonic() + timeout
    results = []
    for spec, proc in zip(specs, procs):
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(_parse_worker(spec.kind, proc.returncode, out, err))
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.communicate()
            log(f"  worker {spec.kind} timed out after {timeout:.0f} s")
            results.append({"error": f"timed out after {timeout:.0f} s"})
    return results


# --- main-process parts -------------------------------------------------------------------


@dataclass
class Plan:
    """The run's settings once the defaults (full run or ``--quick``) are applied."""

    quick: bool
    device: str
    threads: int | None
    sizes: list[int]
    rounds: int  # least timing rounds
    budget: float  # seconds of interleaved timing per size
    n_images: int  # folder size for end to end
    candidates: list[str]  # forward paths timed in the default OpenMP setting, "eager" first
    passive: list[str]  # paths timed with passive OpenMP waiting, in a process of their own
    wait_quiet: float
    soft_deadline: float  # perf_counter past which extra end-to-end rounds are dropped

    @property
    def cpu(self) -> bool:
        return self.device == "cpu"

    def spec(self, kind: str, size: int, assets: dict, **fields) -> WorkerSpec:
        """A worker spec for one input size, with the run's device, threads, weights and inputs."""
        return WorkerSpec(
            kind=kind,
            device=self.device,
            threads=self.threads or None,
            size=size,
            weights=str(assets["weights"]),
            inputs=str(assets["inputs"][size]),
            **fields,
        )


def make_plan(args: argparse.Namespace, t_start: float) -> Plan:
    quick, cpu = args.quick, args.device == "cpu"
    if args.variants:
        candidates = args.variants.split(",")
    elif quick:
        candidates = ["eager", "fused_cl", "jit_cl"]
    else:
        candidates = ["eager", "fused", "fused_cl", "jit", "jit_cl"] + (["fused_cl@t1", "jit_cl@t1"] if cpu else [])
    if args.compile:
        candidates += ["compile", "compile_cl"]
    if "eager" not in candidates:
        candidates.insert(0, "eager")
    return Plan(
        quick=quick,
        device=args.device,
        threads=args.threads,
        sizes=[int(x) for x in (args.sizes or ("320" if quick else "320,416")).split(",")],
        rounds=args.rounds or (1 if quick else 2),
        budget=args.budget if args.budget is not None else (5.0 if quick else 30.0),
        n_images=args.images or (32 if quick else 96),
        candidates=candidates,
        passive=[] if quick or not cpu or args.variants else ["fused_cl+passive", "jit_cl+passive"],
        wait_quiet=args.wait_quiet,
        soft_deadline=t_start + (60 if quick else 300),
    )


def make_assets(tmp: Path, sizes: list[int], n_images: int) -> dict:
    """Weights file, timing inputs per size, and the image folder."""
    from nanodet.config import load_config
    from nanodet.data.image_io import read_image
    from nanodet.data.synthetic import make_synthetic_coco
    from nanodet.data.transforms import preprocess
    from nanodet.weights.checkpoint import save_pth

    cfg = load_config(REPO / CONFIGS[320])
    t = time.perf_counter()
    model = _common.random_detector(cfg, seed=0)
    weights = tmp / "nanodet-plus-m_random.pth"
    save_pth(model, weights)
    log(f"random weights ready ({time.perf_counter() - t:.1f} s, class bias {model.class_bias:.3f})")
    t = time.perf_counter()
    make_synthetic_coco(
        tmp / "folder", n_images, image_size=((480, 360), (1280, 960)), seed=0, max_objects=6, min_size=24, max_size=256
    )
    files = sorted((tmp / "folder" / "images").glob("*.jpg"))
    log(f"{len(files)} JPEGs written ({time.perf_counter() - t:.1f} s)")
    inputs = {}
    for size in sizes:
        c = load_config(REPO / CONFIGS[size])
        mean, std = c.data.val.pipeline.normalize
        chws = []
        for i in range(16):
            chw, _ = preprocess(
                read_image(files[i % len(files)]), tuple(c.data.val.input_size), c.data.val.keep_ratio, mean, std
            )
            chws.append(torch.from_numpy(chw))
        inputs[size] = tmp / f"inputs_{size}.pt"
        torch.save(torch.stack(chws), inputs[size])
    return {
        "weights": weights,
        "images": tmp / "folder" / "images",
        "inputs": inputs,
        "class_bias": round(model.class_bias, 4),
    }


# 1. forward throughput and memory ---------------------------------------------------------


def measure_forward(plan: Plan, assets: dict) -> tuple[dict, dict]:
    """Forward throughput: one timing process per (OpenMP wait policy, size), its paths interleaved.

    Returns the ``forward`` table ({size: {"b1", "b16", "setup"}}) and what the timing processes
    saw of the other jobs on the machine.
    """
    forward: dict = {}
    noise: dict = {"foreign_cpu_share_timing_processes": [], "quiet_waits": []}
    for env_name, variants, env in (("default", plan.candidates, None), ("passive", plan.passive, PASSIVE_ENV)):
        if not variants:
            continue
        for size in plan.sizes:
            if plan.wait_quiet > 0:
                waited = _common.wait_for_quiet(plan.wait_quiet)
                log(f"waited {waited['waited_s']} s for a quiet CPU (busy share {waited['busy_share']})")
                noise["quiet_waits"].append(waited)
            log(f"timing {size} ({env_name} OpenMP wait policy): {', '.join(variants)}")
            budget = plan.budget if env_name == "default" else plan.budget / 3
            spec = plan.spec("timing", size, assets, variants=",".join(variants), rounds=plan.rounds, budget_s=budget)
            res = run_worker(spec, env=env, timeout=900)
            entry = forward.setdefault(str(size), {})
            add_timing(entry, res, env_name, noise["foreign_cpu_share_timing_processes"])
    return forward, noise


def add_timing(entry: dict, res: dict, env_name: str, foreign: list[float]) -> None:
    """One timing process's result into its size's ``forward`` entry."""
    for key in ("b1", "b16", "setup"):
        entry.setdefault(key, {})
    if "error" in res:
        entry[f"error_{env_name}"] = res["error"]
        return
    if res.get("foreign_cpu_share") is not None:
        foreign.append(res["foreign_cpu_share"])
    entry["setup"].update(res["setup"])
    entry["setup"][f"rounds_{env_name}"] = res["rounds"]
    entry["setup"][f"foreign_cpu_share_{env_name}"] = res.get("foreign_cpu_share")
    for v, per_batch in res["times"].items():
        for b, ts in per_batch.items():
            if ts:
                entry[f"b{b}"][v] = summarize(ts, int(b))


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 0.0


def choose_optimized(forward: dict, plan: Plan) -> tuple[str | None, str | None]:
    """ "optimized": the best geometric mean over sizes of batch-16 best-of-N; and the best by median."""
    scores, medians = {}, {}
    for v in plan.candidates + plan.passive:
        if parse_variant(v)[0] == "eager":
            continue
        rows = [forward.get(str(x), {}).get("b16", {}).get(v) for x in plan.sizes]
        if all(rows):
            scores[v] = geomean([r["images_per_s"] for r in rows])
            medians[v] = geomean([r["images_per_s_median"] for r in rows])
    best = max(scores, key=scores.get) if scores else None
    best_median = max(medians, key=medians.get) if medians else None
    return best, best_median


def measure_memory(plan: Plan, assets: dict, best: str | None) -> dict:
    """Peak memory, a fresh process per (size, batch, path): {size: {"b<batch>": {path: result}}}."""
    if plan.quick:
        pairs = [(16, v) for v in ("eager", best) if v]
    else:
        pairs = [(b, v) for b in (1, 16) for v in ("eager", best) if v]
        pairs += [(16, v) for v in ("fused", "fused_cl", "jit_cl") if v != best and v in plan.candidates]
    log(f"memory: {len(pairs) * len(plan.sizes)} fresh processes")
    memory: dict = {}
    for size in plan.sizes:
        for b, v in pairs:
            res = run_worker(plan.spec("memory", size, assets, batch=b, variant=v), env=variant_env(v), timeout=300)
            memory.setdefault(str(size), {}).setdefault(f"b{b}", {})[v] = res
    return memory


def merge_memory(forward: dict, memory: dict) -> None:
    """``measure_memory``'s results as the ``memory`` entry of each path in ``forward``."""
    for size, by_batch in memory.items():
        for b, by_path in by_batch.items():
            for v, res in by_path.items():
                forward.setdefault(size, {}).setdefault(b, {}).setdefault(v, {})["memory"] = res


def speedup_vs_eager(forward: dict, sizes: list[int], best: str | None) -> dict:
    """Throughput of the optimised path over the eager one, per size and batch (best-of-N, median)."""
    speedup = {}
    for x in sizes:
        f = forward.get(str(x), {})
        for b in ("b1", "b16"):
            if best and "eager" in f.get(b, {}) and "images_per_s" in f[b].get(best, {}):
                speedup[f"{x}/{b}"] = round(f[b][best]["images_per_s"] / f[b]["eager"]["images_per_s"], 3)
                speedup[f"{x}/{b}_median"] = round(
                    f[b][best]["images_per_s_median"] / f[b]["eager"]["images_per_s_median"], 3
                )
    return speedup


def optimized_summary(forward: dict, correctness: dict, sizes: list[int], best: str | None, best_median) -> dict:
    """The report's ``optimized`` entry: the chosen path, its speed-ups and its correctness."""
    speedup = speedup_vs_eager(forward, sizes, best)
    b16 = [speedup[f"{x}/b16"] for x in sizes if f"{x}/b16" in speedup]
    return {
        "path": best,
        "chosen_by": "best geometric mean over sizes of batch-16 best-of-N images/s",
        "best_by_median": best_median,
        "speedup_vs_eager": speedup,
        "speedup_b16_min_over_sizes": min(b16) if b16 else None,
        "target_b16": 1.5,
        "target_met": bool(b16) and min(b16) >= 1.5,
        "correct_vs_eager": verdict(correctness, sizes, best) if best else {},
    }


# 2. correctness ---------------------------------------------------------------------------


def check_all_correctness(plan: Plan, assets: dict) -> dict:
    """Every base path (threads and OpenMP settings do not change results) per size."""
    log("correctness checks")
    bases = list(dict.fromkeys(parse_variant(v)[0] for v in plan.candidates + plan.passive))
    return {str(size): check_correctness(bases, size, assets, plan.device) for size in plan.sizes}


@dataclass
class Reference:
    """The eager model's outputs on a batch of real-looking images: what every path is compared with."""

    example: torch.Tensor
    batch: torch.Tensor
    mats: list
    sizes: list[tuple[int, int]]
    raw: torch.Tensor
    raw_single: torch.Tensor  # the same images one at a time
    raw64: torch.Tensor  # the same model in float64
    dets: list


def eager_reference(size: int, assets: dict, device: str, n_images: int) -> Reference:
    from nanodet.data.image_io import read_image
    from nanodet.data.transforms import stack_batch

    files = sorted(Path(assets["images"]).glob("*.jpg"))[:n_images]
    example = torch.load(assets["inputs"][size])
    ref_pred, ref_fwd, _ = build_predictor("eager", size, assets["weights"], device, example)
    images = [read_image(f) for f in files]
    pre = [ref_pred.preprocess(im) for im in images]
    batch = stack_batch([torch.from_numpy(x) for x, _ in pre])
    mats = [m for _, m in pre]
    sizes = [(im.shape[1], im.shape[0]) for im in images]
    with torch.no_grad():
        raw = ref_fwd(batch).float().cpu()
        raw_single = torch.cat([ref_fwd(batch[i : i + 1]).float().cpu() for i in range(len(batch))])
        # float32 rounding of the eager model itself: the same model in float64
        raw64 = copy.deepcopy(ref_pred.model).double()(batch.double().to(ref_pred.device)).float().cpu()
    dets = ref_pred.predict_batch(batch, mats, sizes)
    return Reference(example, batch, mats, sizes, raw, raw_single, raw64, dets)


def check_correctness(variants: list[str], size: int, assets: dict, device: str, n_images: int = 8) -> dict:
    """Every path against the eager model: raw outputs on a batch, and detections."""
    ref = eager_reference(size, assets, device, n_images)
    out = {
        "images": len(ref.batch),
        "raw_max_abs": round(float(ref.raw.abs().max()), 4),
        "noise_floor": {
            "eager_float32_vs_float64_raw_max_abs_diff": float(f"{float((ref.raw64 - ref.raw).abs().max()):.3g}"),
            "eager_batch1_vs_batch8_raw_max_abs_diff": float(f"{float((ref.raw_single - ref.raw).abs().max()):.3g}"),
        },
        "detections_eager": int(sum(len(d) for d in ref.dets)),
        "paths": {},
    }
    for v in variants:
        if parse_variant(v)[0] != "eager":
            out["paths"][v] = check_path(v, size, assets, device, ref)
    return out


def check_path(variant: str, size: int, assets: dict, device: str, ref: Reference) -> dict:
    """One path against the eager reference (or the error that building or running it raised)."""
    try:
        pred, fwd, _ = build_predictor(variant, size, assets["weights"], device, ref.example)
        raw = fwd(ref.batch).float().cpu()
        raw1 = torch.cat([fwd(ref.batch[i : i + 1]).float().cpu() for i in range(2)])  # other batch size
        dets = pred.predict_batch(ref.batch, ref.mats, ref.sizes)
    except Exception as err:
        return {"error": error_text(err)}
    return compare_detections(ref.dets, dets) | {
        "raw_max_abs_diff": float(f"{float((raw - ref.raw).abs().max()):.3g}"),
        "raw_b1_max_abs_diff": float(f"{float((raw1 - ref.raw[:2]).abs().max()):.3g}"),
        "score_max_abs_diff_raw": float(
            f"{float((raw[..., :80].sigmoid() - ref.raw[..., :80].sigmoid()).abs().max()):.3g}"
        ),
    }


def compare_detections(ref: list, got: list) -> dict:
    """Match detections image by image (same label, closest box) and measure differences."""
    n_ref = sum(len(d) for d in ref)
    n_got = sum(len(d) for d in got)
    score_diff = box_diff = 0.0
    unmatched = 0
    for r, g in zip(ref, got):
        if len(r) == len(g) and np.array_equal(r.labels, g.labels):
            if len(r):
                score_diff = max(score_diff, float(np.abs(r.scores - g.scores).max()))
                box_diff = max(box_diff, float(np.abs(r.boxes - g.boxes).max()))
            continue
        used = np.zeros(len(g), dtype=bool)  # order differs: greedy match by label and box
        for box, score, label in zip(r.boxes, r.scores, r.labels):
            cand = np.flatnonzero((g.labels == label) & ~used)
            if not len(cand):
                unmatched += 1
                continue
            d = np.abs(g.boxes[cand] - box).max(axis=1) + np.abs(g.scores[cand] - score)
            j = cand[int(np.argmin(d))]
            used[j] = True
            score_diff = max(score_diff, float(abs(g.scores[j] - score)))
            box_diff = max(box_diff, float(np.abs(g.boxes[j] - box).max()))
        unmatched += int((~used).sum())
    return {
        "detections": n_got,
        "same_count": n_ref == n_got,
        "unmatched": unmatched,
        "score_max_abs_diff": float(f"{score_diff:.3g}"),
        "box_max_abs_diff_px": float(f"{box_diff:.3g}"),
    }


def verdict(correctness: dict, sizes: list[int], variant: str) -> dict:
    """One path's correctness over all sizes, against the eager model's own float32 noise."""
    rows = [correctness[str(x)]["paths"].get(parse_variant(variant)[0]) for x in sizes]
    rows = [r for r in rows if r and "error" not in r]
    if not rows:
        return {}
    floor = max(correctness[str(x)]["noise_floor"]["eager_float32_vs_float64_raw_max_abs_diff"] for x in sizes)
    return {
        "raw_max_abs_diff": max(r["raw_max_abs_diff"] for r in rows),
        "raw_max_abs_diff_eager_float32_vs_float64": floor,
        "raw_max_abs": max(correctness[str(x)]["raw_max_abs"] for x in sizes),
        "raw_within_1e-4": all(r["raw_max_abs_diff"] <= 1e-4 for r in rows),
        "score_max_abs_diff": max(r["score_max_abs_diff"] for r in rows),
        "scores_within_1e-4": all(r["score_max_abs_diff"] <= 1e-4 for r in rows),
        "box_max_abs_diff_px": max(r["box_max_abs_diff_px"] for r in rows),
        "same_detections": all(r["same_count"] and r["unmatched"] == 0 for r in rows),
    }


# 3. end to end ----------------------------------------------------------------------------


def end_to_end_modes(plan: Plan, base: WorkerSpec) -> dict[str, list[WorkerSpec]]:
    """The folder runs to measure: {mode: one spec per concurrent process}."""
    replace = dataclasses.replace
    modes = {"sequential": [replace(base, mode="sequential")]}
    for w in [2] if plan.quick else [1, 2]:
        modes[f"pipeline_w{w}"] = [replace(base, mode="pipeline", workers=w, batch=16)]
    if plan.cpu and not plan.quick:
        # one intra-op thread for OpenCV too in the workers (torch already uses one there)
        modes["pipeline_w2_cv2_1thread"] = [replace(modes["pipeline_w2"][0], worker_init="cv2")]
        # no loader: the folder split over one single-thread process per core
        cores = os.cpu_count() or 1
        t1 = parse_variant(base.variant)[0] + "@t1"
        modes[f"sequential_{cores}proc_x_1thread"] = [
            replace(base, variant=t1, mode="sequential", shard=f"{k}/{cores}") for k in range(cores)
        ]
    return modes


def measure_end_to_end(plan: Plan, base: WorkerSpec, tmp: Path) -> dict:
    """Every folder run in fresh processes (two rounds while time allows), the best round of each."""
    env = variant_env(base.variant)
    modes = end_to_end_modes(plan, base)
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(1 if plan.quick else 2):
        if r and time.perf_counter() > plan.soft_deadline - 45:
            log("end to end: second round skipped (time)")
            break
        for m, specs in modes.items():
            log(f"end to end: {m} (round {r + 1})")
            if len(specs) > 1:
                runs[m].append(run_shards(specs, tmp / f"barrier_{m}_{r}", env))
            else:
                runs[m].append(run_worker(specs[0], env=env, timeout=600))
    end_to_end: dict = {
        "images": plan.n_images,
        "image_sizes": "480x360 .. 1280x960 (uniform)",
        "input_size": base.size,
        "model_path": base.variant,
        "batch": 16,
        "runs": {m: best_run(x) for m, x in runs.items()},
    }
    return end_to_end | end_to_end_speedups(end_to_end["runs"])


def run_shards(specs: list[WorkerSpec], barrier: Path, env: dict | None) -> dict:
    """Concurrent shards of the folder that start together; one result for them all."""
    barrier.mkdir()
    parts = run_workers([dataclasses.replace(s, barrier=str(barrier)) for s in specs], env=env)
    if any("error" in x for x in parts):
        return next(x for x in parts if "error" in x)
    wall = max(x["wall_s"] for x in parts)
    return {
        "wall_s": wall,
        "images": sum(x["images"] for x in parts),
        "images_per_s": round(sum(x["images"] for x in parts) / wall, 2),
        "processes": len(parts),
        "model_ms_per_image": max(x["model_ms_per_image"] for x in parts),
        "detections": sum(x["detections"] for x in parts),
    }


def best_run(runs: list[dict]) -> dict:
    """The fastest round of a mode, with every round's throughput beside it (or the first error)."""
    good = [x for x in runs if "error" not in x]
    if not good:
        return runs[0] if runs else {"error": "not run"}
    return max(good, key=lambda x: x["images_per_s"]) | {"images_per_s_all_rounds": [x["images_per_s"] for x in good]}


def end_to_end_speedups(runs: dict) -> dict:
    """Every mode against the sequential loop, and the library pipeline's against its 2x target."""
    seq = runs.get("sequential", {}).get("images_per_s")
    if not seq:
        return {}
    speedups = {
        m: round(x["images_per_s"] / seq, 3) for m, x in runs.items() if m != "sequential" and "images_per_s" in x
    }
    lib = [v for m, v in speedups.items() if m in ("pipeline_w1", "pipeline_w2")]
    return {
        "speedup_vs_sequential": speedups,
        "pipeline_speedup": max(lib) if lib else None,
        "target": 2.0,
        "target_met": bool(lib) and max(lib) >= 2.0,
    }


def measure_profile(plan: Plan, base: WorkerSpec) -> dict:
    """The per-stage profile of the end-to-end path and the pipeline speed-up it predicts."""
    log("per-stage profile")
    spec = dataclasses.replace(base, kind="profile", profile_images=16 if plan.quick else 32)
    prof = run_worker(spec, env=variant_env(base.variant), timeout=300)
    out = {"stage_profile": prof}
    if "ms_per_image_median" in prof:
        out["model_from_profile"] = overlap_model(prof["ms_per_image_median"], plan.cpu)
    return out


def overlap_model(ms: dict, cpu: bool) -> dict:
    """The ideal pipeline speed-up from the stage times: decoding overlapped with the forward."""
    seq_ms = ms["decode"] + ms["preprocess"] + ms["forward_b1"] + ms["postprocess_b1"]
    main_ms = ms.get("forward_b16_per_image", ms["forward_b1"]) + ms.get("postprocess_b16_per_image", 0)
    worker_ms = ms["decode"] + ms["preprocess"]
    cores = os.cpu_count() or 1
    model = {
        "sequential_ms_per_image": round(seq_ms, 2),
        "pipeline_main_process_ms_per_image": round(main_ms, 2),
        "pipeline_workers_cpu_ms_per_image": round(worker_ms, 2),
    }
    if cpu and "forward_b16_per_image_1thread" in ms:
        cpu_ms = worker_ms + ms["forward_b16_per_image_1thread"] + ms.get("postprocess_b16_per_image", 0)
        model["pipeline_total_cpu_ms_per_image"] = round(cpu_ms, 2)
        model["ideal_pipeline_speedup"] = round(seq_ms / max(main_ms, cpu_ms / cores), 2)
        model["note"] = (
            f"ideal = perfect overlap on {cores} cores that scale perfectly, no contention: "
            "sequential time / max(main-process time, total CPU time / cores)"
        )
    else:
        model["ideal_pipeline_speedup"] = round(seq_ms / max(main_ms, worker_ms / 2), 2)
    return model


# --- the command --------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run (~1 min): input 320 only, fewer candidates, 32 images, one round",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--sizes", default=None, help="input sizes (default 320,416; quick 320)")
    parser.add_argument("--images", type=int, default=None, help="folder size for end to end (default 96, quick 32)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="least timing rounds (default 2, quick 1); more run while the time budget lasts",
    )
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds of interleaved timing per size (default 30, quick 5)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also try torch.compile (CPU: ~40 s of compilation per shape and size)"
    )
    parser.add_argument("--variants", default=None, help="comma list of forward candidates (advanced)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each timing process, wait up to S seconds for the other processes on this "
        "machine to use < 25%% of the CPUs (shared machines)",
    )
    parser.add_argument("--_spec", default=None, help=argparse.SUPPRESS)  # a worker subprocess: WorkerSpec JSON
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    return args


def main() -> None:
    args = parse_args()
    if args._spec:
        worker_main(args._spec)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    noise = CpuNoise()
    plan = make_plan(args, t_start)
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-") as tmp_name:
        assets = make_assets(Path(tmp_name), plan.sizes, plan.n_images)
        forward, timing_noise = measure_forward(plan, assets)
        best, best_median = choose_optimized(forward, plan)
        merge_memory(forward, measure_memory(plan, assets, best))
        correctness = check_all_correctness(plan, assets)
        e2e = plan.spec("e2e", plan.sizes[0], assets, images_dir=str(assets["images"]), variant=best or "fused_cl")
        end_to_end = measure_end_to_end(plan, e2e, Path(tmp_name)) | measure_profile(plan, e2e)
    result = {
        "benchmark": "nanodet-plus-m inference",
        "command": " ".join(["bench/infer.py", *sys.argv[1:]]),
        "device": args.device,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "threads_default": torch.get_num_threads(),
        "quick": plan.quick,
        "weights": {
            "kind": "random, seeded: He-normal convs, random BN affine, BN statistics calibrated on "
            "synthetic images, class bias set for ~0.2% candidate (prior, class) pairs",
            "class_bias": assets["class_bias"],
        },
        "forward": forward,
        "optimized": optimized_summary(forward, correctness, plan.sizes, best, best_median),
        "correctness": correctness,
        "end_to_end": end_to_end,
        "noise": {
            "foreign_cpu_share_whole_run": noise.foreign_share(),
            **timing_noise,
            "note": "share of all cores used by other processes while this ran (0 = quiet); images_per_s is "
            "best-of-N, *_median the median, noise_median_over_best their ratio",
        },
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
