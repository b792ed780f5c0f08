"""Shared helpers of the benchmarks: fixed random weights, memory and CPU-noise probes.

Nothing here is part of the library; the benchmarks import it as ``bench._common`` (run
them from the repository root) or as ``_common`` (run as a script from ``bench/``).
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nanodet.config import NanoDetConfig  # noqa: E402
from nanodet.data.synthetic import synthetic_image  # noqa: E402
from nanodet.data.transforms import preprocess  # noqa: E402
from nanodet.model import build_model  # noqa: E402

SCORE_THR_LOGIT = math.log(0.05 / 0.95)  # sigmoid(x) > 0.05  <=>  x > -2.944


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- weights ---------------------------------------------------------------------------


def calibration_batch(cfg: NanoDetConfig, count: int = 8, seed: int = 1234) -> torch.Tensor:
    """Pre-processed real-looking images (the synthetic shapes) at the config's input size."""
    mean, std = cfg.data.val.pipeline.normalize
    inputs = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        size = (int(rng.integers(480, 1281)), int(rng.integers(360, 961)))
        image, _, _ = synthetic_image(rng, size, max_objects=6, min_size=32, max_size=256)
        chw, _ = preprocess(image, tuple(cfg.data.val.input_size), cfg.data.val.keep_ratio, mean, std)
        inputs.append(torch.from_numpy(chw))
    return torch.stack(inputs)


@torch.no_grad()
def random_detector(cfg: NanoDetConfig, seed: int = 0, candidate_rate: float = 0.002) -> nn.Module:
    """An inference model (no aux branch) with fixed random weights that behave like trained ones.

    * every conv gets He-normal weights, so signals neither vanish nor explode (with the
      library's init, std 0.01 in places, the stride-32 features are ~1e-4 and all class
      scores are nearly equal, so comparing detections would compare near-ties; speed is
      the same: no denormals were measured);
    * BatchNorm affine parameters are random and the running statistics are the real
      statistics of the activations on real-looking images (cumulative average over a
      calibration batch), so folding BN into the convs is exercised with non-trivial
      mean/var;
    * the class bias of ``head.gfl_cls`` is set so that about ``candidate_rate`` of all
      (prior, class) pairs score above the 0.05 NMS threshold on those images: a few
      hundred candidates per image, tens of detections after NMS, as with a trained model.
    """
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg.model.arch, with_aux=False)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1, generator=gen)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5, generator=gen)
            module.bias.normal_(0.0, 0.2, generator=gen)
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration passes
    calib = calibration_batch(cfg)
    model.train()
    for chunk in calib.split(4):
        model(chunk)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    model.eval()

    num_classes = model.head.num_classes
    for conv in model.head.gfl_cls:
        conv.bias[:num_classes] = 0.0
    logits = model(calib)[..., :num_classes].flatten()
    quantile = torch.quantile(
        logits[torch.randperm(len(logits), generator=gen)[:2_000_000]].float(), 1.0 - candidate_rate
    )
    class_bias = SCORE_THR_LOGIT - float(quantile)
    for conv in model.head.gfl_cls:
        conv.bias[:num_classes] = class_bias
    model.class_bias = class_bias  # for the report
    return model


# --- memory ----------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux's ``VmHWM`` (the high-water mark of this process's own address space) when
    available: ``getrusage(RUSAGE_SELF).ru_maxrss`` of a child started by a big parent
    reports at least the *parent's* RSS at fork time (the kernel keeps the pre-exec peak),
    so a fresh subprocess of a 600 MiB parent would never report less than 600 MiB.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


# --- CPU noise -------------------------------------------------------------------------


def _system_busy_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class CpuNoise:
    """How much CPU other processes used while a benchmark ran (our own children excluded
    once they have been waited for), as a fraction of all cores: 0 = quiet machine."""

    def __init__(self) -> None:
        self.start = _system_busy_ticks()
        self.own_start = _own_cpu_seconds()
        self.wall_start = time.perf_counter()

    def foreign_share(self) -> float | None:
        end = _system_busy_ticks()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (end[0] - self.start[0]) / hz
        total = (end[1] - self.start[1]) / hz
        foreign = busy - (_own_cpu_seconds() - self.own_start)
        return round(max(0.0, foreign) / total, 3) if total > 0 else None


# --- timing ----------------------------------------------------------------------------


def summarize(times: Sequence[float], items: int) -> dict:
    """Throughput summary of per-call wall times: best-of-N and median, items/s."""
    ts = sorted(times)
    median = ts[len(ts) // 2] if len(ts) % 2 else 0.5 * (ts[len(ts) // 2 - 1] + ts[len(ts) // 2])
    return {
        "images_per_s": round(items / ts[0], 2),  # best of N: the machine's own speed
        "images_per_s_median": round(items / median, 2),
        "ms_per_call_best": round(1000 * ts[0], 3),
        "ms_per_call_median": round(1000 * median, 3),
        "calls": len(ts),
        "noise_median_over_best": round(median / ts[0], 3),
    }


def sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def busy_share(seconds: float = 2.0) -> float | None:
    """Share of all cores busy over the next ``seconds`` (call it while we run nothing)."""
    a = _system_busy_ticks()
    time.sleep(seconds)
    b = _system_busy_ticks()
    if a is None or b is None or b[1] == a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25, window_s: float = 2.0) -> dict:
    """Wait (at most ``max_wait_s``) for a window in which other processes use less than
    ``threshold`` of the CPUs. Returns how long it waited and the last share seen."""
    start = time.perf_counter()
    share = None
    while True:
        share = busy_share(window_s)
        if share is None or share < threshold or time.perf_counter() - start >= max_wait_s:
            break
    return {"waited_s": round(time.perf_counter() - start, 1), "busy_share": None if share is None else round(share, 3)}
