"""What the benchmarks share: host facts, JSON reports, threads and load, memory, forked children under
limits, the official NanoDet's environment, start.py runs, generated pictures, datasets and weights.
torch, numpy, OpenCV and nanodet are imported where used: a child starts at its parent's size at the fork.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import platform
import re
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
CONFIG_DIR = REPO / "config"
CLASSES = ("circle", "square", "triangle")
SCORE_THR_LOGIT = math.log(0.05 / 0.95)  # sigmoid(x) > 0.05  <=>  x > -2.944
# The official NanoDet beside ours (../shared/ref/README.md): run.sh runs a script in its environment
REF_HARNESS = Path(os.environ.get("NANODET_REF", REPO.parent / "shared" / "ref"))
REF_CODE = Path(os.environ.get("REF_DIR", "/tmp/nanodet-ref"))
LOOP_LOG = re.compile(r"rank 0: (\d+) images in ([\d.]+) s")  # a predict task's batch loop


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def print_report(report: dict, out: Path | None = None, indent: int | None = 2) -> None:
    """The JSON report on stdout, and in ``out`` (atomically) when given."""
    text = json.dumps(report, indent=indent)
    print(text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(out)


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_info() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return dict(cores_available=available_cores(), cpu_model=cpu_model(), torch=torch.__version__) | {
        "python": platform.python_version(),
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0), sum(fields[:8])


def busy_share(seconds: float = 2.0) -> float | None:
    """Share of all CPUs busy over the next ``seconds`` (call it while we run nothing)."""
    a = _cpu_ticks()
    time.sleep(seconds)
    b = _cpu_ticks()
    return None if a is None or b is None or b[1] == a[1] else (b[0] - a[0]) / (b[1] - a[1])


def default_threads() -> tuple[int, str]:
    """(threads, why): ``OMP_NUM_THREADS`` if set, else the idle cores (threads beyond them spin-wait at
    every barrier: 2 threads ran a training step 3-4x slower than 1 on 2 cores with one taken)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores, share = available_cores(), busy_share(1.0)
    if share is None:
        return cores, "all cores"
    busy = share * (os.cpu_count() or cores)
    return max(1, min(cores, round(cores - busy))), f"idle cores ({busy:.2f} of {cores} busy before start)"


def set_threads(threads: int) -> int:
    """Intra-op threads of torch (and of OpenMP in subprocesses started later)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(field + ":")), None)
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mib() -> float:
    """Peak RSS of this process (``VmHWM``; ``ru_maxrss`` would include the parent's at the fork)."""
    kib = _status_kib("VmHWM")
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if kib is None else kib) / 1024


LOADED, REFUSED, UNDOCUMENTED = "loaded", "refused", "undocumented"  # what a child can come to
MEMORY, SIGNAL, TIMEOUT = "memory", "signal", "timeout"
OUTCOMES = (LOADED, REFUSED, UNDOCUMENTED, SIGNAL, TIMEOUT, MEMORY)
_MEMORY_SIGNS = ("can't allocate memory", "MemoryError", "out of memory", "std::bad_alloc")
GIB = 1 << 30


@dataclass
class ChildResult:
    outcome: str  # one of OUTCOMES
    detail: str = ""  # exception type and message, or the signal
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_growth_mib: float = 0.0  # the child's peak RSS beyond its size at the fork


@dataclass
class Limits:
    """CPU seconds (the time limit: SIGXCPU), a wall-clock backstop (a sleeping child), RLIMIT_AS bytes."""

    wall_s: float = 60.0
    cpu_s: int = 10
    address_space: int = 2 * GIB


def _child(fn: Callable[[], None], documented: tuple, out: int, limits: Limits) -> None:
    """The forked side: limits, no output, run, one JSON line on the pipe. Never returns."""
    try:
        faulthandler.disable()  # pytest's, inherited: a crash is the parent's to report
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
        rss_start = _status_kib("VmRSS")
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        try:
            fn()
            report = {"outcome": LOADED}
        except documented as err:
            text = str(err)
            outcome = MEMORY if any(sign in text for sign in _MEMORY_SIGNS) else REFUSED
            report = {"outcome": outcome, "detail": f"{type(err).__name__}: {text[:400]}"}
        except MemoryError as err:
            report = {"outcome": MEMORY, "detail": f"MemoryError: {str(err)[:400]}"}
        except BaseException as err:  # noqa: BLE001 - sorting every exception is the point
            module, name = type(err).__module__, type(err).__qualname__  # IndexError, struct.error
            name = name if module == "builtins" else f"{module}.{name}"
            report = {"outcome": UNDOCUMENTED, "detail": f"{name}: {str(err)[:400]}"}
        report["rss_growth_mib"] = max(0, _status_kib("VmHWM") - rss_start) / 1024
        os.write(out, (json.dumps(report) + "\n").encode())
    finally:
        os._exit(0)


def _reap(pid: int, fd: int, start: float, data: bytes, limits: Limits, timed_out: bool) -> ChildResult:
    os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    wall, cpu = time.monotonic() - start, usage.ru_utime + usage.ru_stime
    if timed_out:
        return ChildResult(TIMEOUT, f"still running after {limits.wall_s:.0f} s (wall clock)", wall, cpu)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return ChildResult(TIMEOUT, f"more than {limits.cpu_s} s of CPU (SIGXCPU)", wall, cpu)
        return ChildResult(SIGNAL, f"killed by {signal.Signals(sig).name}", wall, cpu)
    try:
        report = json.loads(data.decode())
    except ValueError:
        return ChildResult(SIGNAL, f"exited with {os.waitstatus_to_exitcode(status)} without a report", wall, cpu)
    growth = report.get("rss_growth_mib", 0.0)
    outcome = MEMORY if growth * 2**20 > limits.address_space else report["outcome"]
    return ChildResult(outcome, report.get("detail", ""), wall, cpu, growth)


def run_children(
    work: Iterable[tuple[Any, Callable[[], None]]], documented: tuple, limits: Limits, jobs: int = 1
) -> Iterator[tuple[Any, ChildResult]]:
    """Run each ``(key, fn)`` in a forked child, ``jobs`` at a time; yield ``(key, result)`` as each ends.
    ``work`` is consumed one item as a child may start (so it can write the file that child reads)."""
    pending, running, more = iter(work), {}, True  # running: fd -> [key, pid, start, data]
    while running or more:
        while more and len(running) < jobs:
            item = next(pending, None)
            if item is None:
                more = False
                break
            read_end, write_end = os.pipe()
            start = time.monotonic()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                _child(item[1], documented, write_end, limits)
            os.close(write_end)
            running[read_end] = [item[0], pid, start, b""]
        if not running:
            break
        wait = max(0.0, min(c[2] + limits.wall_s for c in running.values()) - time.monotonic())
        for fd in select.select(list(running), [], [], wait)[0]:
            chunk = os.read(fd, 65536)
            if chunk:
                running[fd][3] += chunk
            else:
                key, pid, start, data = running.pop(fd)
                yield key, _reap(pid, fd, start, data, limits, timed_out=False)
        now = time.monotonic()
        for fd in [fd for fd, c in running.items() if now - c[2] >= limits.wall_s]:
            key, pid, start, data = running.pop(fd)
            os.kill(pid, signal.SIGKILL)
            yield key, _reap(pid, fd, start, data, limits, timed_out=True)


def run_in_child(
    fn: Callable[[], None], documented: tuple, wall_s: float = 60.0, cpu_s: int = 10, address_space: int = 2 * GIB
) -> ChildResult:
    """Run ``fn`` in a forked child under the limits and say what came of it."""
    ((_, result),) = run_children([(None, fn)], documented, Limits(wall_s, cpu_s, address_space))
    return result


def official_command(script: Path | str, *args: str) -> list[str] | None:
    """``script`` run by the official NanoDet's environment (``REF_HARNESS/run.sh``), or None without it."""
    run = REF_HARNESS / "run.sh"
    return ["bash", str(run), str(script), *map(str, args)] if run.is_file() else None


def run_start_py(in_dir: Path, out_dir: Path, env: dict | None = None, repo: Path = REPO) -> dict:
    """``start.py --in --out`` of ``repo`` in a process of its own: wall seconds, its largest process's
    peak RSS (``wait4``), the log and the batch loop's seconds from it. Exits on a failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f"{out_dir.name}.log", "w+") as logged:
        start = time.perf_counter()
        command = [sys.executable, str(repo / "start.py"), "--in", str(in_dir), "--out", str(out_dir)]
        proc = subprocess.Popen(command, stdout=logged, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        logged.seek(0)
        text = logged.read()
    if proc.returncode != 0:
        raise SystemExit(f"{repo}/start.py failed on {in_dir}:\n{text[-3000:]}")
    loop = LOOP_LOG.search(text)
    return dict(wall_s=round(wall, 2), peak_rss_mib=round(usage.ru_maxrss / 1024, 1), log=text) | {
        "batch_loop_s": float(loop.group(2)) if loop else None
    }


def photo_like(rng, width: int, height: int):
    """A BGR image whose JPEG decodes at a photo's cost: a light gradient, mostly-luminance texture at
    five scales, 8-15 textured objects with hard edges, noise (sigma 3)."""
    import cv2
    import numpy as np

    img = np.empty((height, width, 3), np.float32)
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(60, 200, 3).astype(np.float32), rng.uniform(40, 170, 3).astype(np.float32)
    img[:] = top * (1 - ys) + bottom * ys
    for cells, amplitude in ((6, 25.0), (24, 14.0), (96, 9.0), (384, 7.0), (1200, 6.0)):
        rows = max(2, cells * height // max(width, height))
        grid = rng.normal(0, amplitude, (rows, cells, 3)).astype(np.float32)
        grid[..., 1:] = 0.6 * grid[..., :1] + 0.4 * grid[..., 1:]
        img += cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(8, 16))):
        ax, ay = int(rng.uniform(0.03, 0.2) * width), int(rng.uniform(0.03, 0.2) * height)
        x0, y0 = int(rng.integers(0, width - 2 * ax)), int(rng.integers(0, height - 2 * ay))
        mask = np.full((2 * ay, 2 * ax), 255, np.uint8)
        if rng.random() < 0.5:
            mask[:] = 0
            cv2.ellipse(mask, (ax, ay), (ax, ay), 0.0, 0, 360, 255, -1)
        cells = rng.normal(0, 22, (int(rng.integers(4, 40)), int(rng.integers(4, 40)), 3)).astype(np.float32)
        texture = cv2.resize(cells, (2 * ax, 2 * ay), interpolation=cv2.INTER_CUBIC)
        texture += rng.uniform(20, 235, 3).astype(np.float32)
        region = img[y0 : y0 + 2 * ay, x0 : x0 + 2 * ax]
        region[mask > 0] = texture[mask > 0]
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(image) -> bytes:
    import cv2

    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def shapes_jpegs(folder: Path, count: int, seed: int, min_wh: Sequence[int], max_wh: Sequence[int]) -> list:
    """``count`` JPEGs (quality 90) of generated shapes, sizes drawn in ``min_wh..max_wh``; their sizes."""
    import numpy as np

    from nanodet.data.synthetic import synthetic_image

    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        size = (int(rng.integers(min_wh[0], max_wh[0] + 1)), int(rng.integers(min_wh[1], max_wh[1] + 1)))
        (folder / f"{i:05d}.jpg").write_bytes(
            _jpeg(synthetic_image(rng, size, max_objects=6, min_size=32, max_size=256)[0])
        )
        sizes.append(size)
    return sizes


def small_candidates(in_dir: Path, count: int, seed: int) -> list[str]:
    """``count`` 96x72 JPEGs of shapes under ``in_dir/assets`` (256 folders); their ``/in/...`` paths."""
    import numpy as np

    from nanodet.data.synthetic import synthetic_image

    rows = []
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        image, _, _ = synthetic_image(rng, size=(96, 72), class_names=CLASSES, max_objects=3, min_size=16, max_size=48)
        name = f"assets/{k % 256:02x}/cand-{k:06d}.jpg"
        (in_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (in_dir / name).write_bytes(_jpeg(image))
        rows.append(f"/in/{name}")
    return rows


def models_folder(models: Path, input_size: int) -> Path:
    """``models/`` as a training leaves it (3 classes, square input, ``random_detector`` weights)."""
    from nanodet.config import load_config, save_config
    from nanodet.weights.checkpoint import save_pth

    size = [input_size, input_size]
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").with_classes(list(CLASSES))
    cfg = cfg.merged({"data": {"train": {"input_size": size}, "val": {"input_size": size}}})
    models.mkdir(parents=True, exist_ok=True)
    save_pth(random_detector(cfg, 0, 0.01), models / "nanodet_model_best.pth", inference_only=True)
    save_config(cfg, models / "train_cfg.yml")
    return models


def make_dataset(
    root: Path, name: str, num_images: int, image_size, seed: int, min_size: int, max_size: int, max_objects: int = 4
) -> dict[str, str]:
    """A COCO shapes set under ``root/name``, generated once (reused while its recipe is the same)."""
    from nanodet.data.synthetic import make_synthetic_coco

    out = Path(root) / name
    recipe = dict(num_images=num_images, image_size=json.loads(json.dumps(image_size)), seed=seed, min_size=min_size)
    recipe |= dict(max_size=max_size, max_objects=max_objects, classes=list(CLASSES))
    stamp, ann = out / "recipe.json", out / "annotations.json"
    if not (ann.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == recipe):
        start = time.perf_counter()
        make_synthetic_coco(out, num_images, image_size, CLASSES, seed, max_objects, min_size, max_size)
        stamp.write_text(json.dumps(recipe))
        log(f"generated {num_images} {name} images in {time.perf_counter() - start:.1f}s -> {out}")
    return {"img_path": str(out / "images"), "ann_path": str(ann)}


def synthetic_config(
    config_name: str, train: dict, val: dict, input_size, batch_size: int, workers: int, work_dir: Path,
    overrides: dict | None = None, class_names: Sequence[str] = CLASSES,
):  # fmt: skip
    """``config/<config_name>`` for ``class_names`` reading the generated sets: paths, input size, batch
    and workers set, then ``overrides`` (official keys)."""
    from nanodet.config import _deep_merge, load_config

    cfg = load_config(CONFIG_DIR / config_name).with_classes(list(class_names))
    size = [int(input_size[0]), int(input_size[1])]
    base = {
        "save_dir": str(work_dir),
        "data": {"train": {**train, "input_size": size}, "val": {**val, "input_size": size}},
        "device": {"batchsize_per_gpu": batch_size, "workers_per_gpu": workers},
        "log": {"interval": 10**9},
    }
    return cfg.merged(_deep_merge(base, overrides or {}))


def random_detector(cfg, seed: int = 0, candidate_rate: float = 0.002):
    """An inference model with fixed random weights that behave like trained ones: He-normal convs (the
    library's init leaves near-equal class scores), random BatchNorm affines with the running statistics
    of a calibration batch (BN folding sees real mean/var), and a class bias such that ``candidate_rate``
    of the (prior, class) pairs score above 0.05 on those pictures (a few hundred per image, as trained)."""
    import numpy as np
    import torch
    from torch import nn

    from nanodet.data.synthetic import synthetic_image
    from nanodet.data.transforms import preprocess
    from nanodet.model import build_model

    val, calib = cfg.data.val, []  # pre-processed shapes pictures at the config's input size
    for i in range(8):
        rng = np.random.default_rng([1234, i])
        size = (int(rng.integers(480, 1281)), int(rng.integers(360, 961)))
        image, _, _ = synthetic_image(rng, size, max_objects=6, min_size=32, max_size=256)
        calib.append(
            torch.from_numpy(preprocess(image, tuple(val.input_size), val.keep_ratio, *val.pipeline.normalize)[0])
        )
    calib = torch.stack(calib)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg.model.arch, with_aux=False)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, math.sqrt(2.0 / module.weight[0].numel()), generator=gen)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.2, generator=gen)
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration passes
        model.train()
        for chunk in calib.split(4):
            model(chunk)
        for module in batch_norms:
            module.momentum = 0.1
        model.eval()
        num_classes = model.head.num_classes
        for conv in model.head.gfl_cls:
            conv.bias[:num_classes] = 0.0
        logits = model(calib)[..., :num_classes].flatten()
        sample = logits[torch.randperm(len(logits), generator=gen)[:2_000_000]].float()
        class_bias = SCORE_THR_LOGIT - float(torch.quantile(sample, 1.0 - candidate_rate))
        for conv in model.head.gfl_cls:
            conv.bias[:num_classes] = class_bias
    model.class_bias = class_bias  # for the report
    return model


@dataclass(frozen=True)
class PoolRecipe:
    """``bench/active_learning.py``'s pool and test set (square ``image_size`` images): empty with
    probability ``empty_share``, else 1..``max_objects`` objects of classes drawn by ``class_freq`` (the
    last is the rare one), all small in a ``small_share``, all faint in a ``low_contrast_share``; a
    ``dup_share`` of the pool are near-duplicates (shifted up to ``max_shift`` px, re-lit, re-noised)."""

    classes: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
    class_freq: tuple[float, ...] = (0.45, 0.30, 0.15, 0.07, 0.03)
    image_size: int = 128
    empty_share: float = 0.38
    small_share: float = 0.25
    low_contrast_share: float = 0.20
    dup_share: float = 0.15
    max_objects: int = 4
    object_size: tuple[int, int] = (20, 56)
    small_size: tuple[int, int] = (10, 20)
    max_shift: int = 6

    @property
    def rare_class(self) -> str:
        return self.classes[-1]

    def as_dict(self) -> dict:
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return fields | {"rare_class": self.rare_class}


def _draw_pool_objects(rng, image, recipe: PoolRecipe, small: bool, faint: bool):
    """Draw 1..max_objects shapes on ``image`` in place: (boxes tight to the visible pixels, labels).
    A faint one is 18-32 grey levels off the background under it."""
    import numpy as np

    from nanodet.data.synthetic import SHAPES, _object_colour, _place, _visible_box

    height, width = image.shape[:2]
    low, high = recipe.small_size if small else recipe.object_size
    owner = np.full((height, width), -1, dtype=np.int32)
    placed, labels = [], []
    for _ in range(rng.integers(1, recipe.max_objects + 1)):
        label = int(rng.choice(len(recipe.classes), p=np.asarray(recipe.class_freq) / sum(recipe.class_freq)))
        kind = SHAPES[recipe.classes[label]]
        box = _place(rng, kind, placed, width, height, low, high, 0.15)
        if box is None:
            continue
        x, y, w, h = box
        mask = np.zeros((height, width), dtype=np.uint8)
        kind.draw(mask, x, y, w, h, rng)
        drawn = mask > 0
        if faint:
            under = image[drawn].reshape(-1, 3).mean(axis=0)
            offset = rng.choice([-1.0, 1.0]) * rng.uniform(18, 32) + rng.normal(0, 4, size=3)
            if under.mean() + offset.mean() < 8 or under.mean() + offset.mean() > 247:
                offset = -offset
            image[drawn] = np.clip(under + offset, 0, 255).astype(np.uint8)
        else:
            image[drawn] = _object_colour(rng)
        owner[drawn] = len(labels)
        placed.append(np.array([x, y, x + w, y + h], dtype=np.float64))
        labels.append(label)
    kept = [i for i in range(len(labels)) if (owner == i).any()]
    boxes = np.array([_visible_box(owner == i) for i in kept], dtype=np.float32).reshape(-1, 4)
    return boxes, np.array([labels[i] for i in kept], dtype=np.int64)


def pool_image(rng, recipe: PoolRecipe):
    """One original image: ``(image BGR, boxes xyxy, labels, kind)``, kind = empty/small/faint flags."""
    import numpy as np

    from nanodet.data.synthetic import _add_noise, _background

    image = _background(rng, recipe.image_size, recipe.image_size)
    empty = bool(rng.random() < recipe.empty_share)
    small = not empty and bool(rng.random() < recipe.small_share)
    faint = not empty and bool(rng.random() < recipe.low_contrast_share)
    if empty:
        boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    else:
        boxes, labels = _draw_pool_objects(rng, image, recipe, small, faint)
    return _add_noise(rng, image), boxes, labels, {"small": small, "low_contrast": faint}


def near_duplicate(rng, image, boxes, labels, max_shift: int):
    """A shifted (1..max_shift px), re-lit, re-noised copy; its boxes shifted and clipped (those left
    under 3 px dropped with their labels)."""
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    dx, dy = (int(v) * int(rng.choice([-1, 1])) for v in rng.integers(1, max_shift + 1, size=2))
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    moved = moved.astype(np.float64) * rng.uniform(0.92, 1.08) + rng.normal(0, rng.uniform(2, 5), size=moved.shape)
    shifted = boxes + np.float32([dx, dy, dx, dy])
    shifted[:, 0::2] = shifted[:, 0::2].clip(0, width)
    shifted[:, 1::2] = shifted[:, 1::2].clip(0, height)
    keep = ((shifted[:, 2] - shifted[:, 0]) >= 3) & ((shifted[:, 3] - shifted[:, 1]) >= 3)
    return np.clip(moved, 0, 255).astype(np.uint8), shifted[keep], labels[keep]


def _pool_images(recipe: PoolRecipe, num_images: int, seed: int, with_dups: bool):
    """Yield ``(index, image, boxes, labels, meta)`` per position, the originals drawn first."""
    import numpy as np

    rng = np.random.default_rng([seed, 2])  # which positions hold near-duplicates, and of what
    num_dups = round(num_images * (recipe.dup_share if with_dups else 0.0))
    order = rng.permutation(num_images)
    originals = sorted(int(i) for i in order[num_dups:])
    sources = rng.choice(originals, size=num_dups, replace=False)
    dup_source = {int(d): int(s) for d, s in zip(sorted(order[:num_dups]), sources)}
    drawn = {index: pool_image(np.random.default_rng([seed, 0, index]), recipe) for index in originals}
    for index in range(num_images):
        source = dup_source.get(index, index)
        image, boxes, labels, kind = drawn[source]
        if index in dup_source:
            rng = np.random.default_rng([seed, 1, index])
            image, boxes, labels = near_duplicate(rng, image, boxes, labels, recipe.max_shift)
        yield index, image, boxes, labels, {**kind, "dup_of": source + 1 if index in dup_source else None}, source + 1


def _burst_images(recipe: PoolRecipe, num_scenes: int, seed: int, frames: tuple[int, int]):
    """Each scene (drawn as ``pool_image``) as ``frames[0]..frames[1]`` jittered frames (``near_duplicate``),
    like a short video; ``scene`` is its first frame's id."""
    import numpy as np

    index = 0
    for scene in range(num_scenes):
        base, boxes, labels, kind = pool_image(np.random.default_rng([seed, 0, scene]), recipe)
        count = int(np.random.default_rng([seed, 4, scene]).integers(frames[0], frames[1] + 1))
        first = index + 1
        for frame in range(count):
            rng = np.random.default_rng([seed, 3, scene, frame])
            image, moved, kept = near_duplicate(rng, base, boxes, labels, recipe.max_shift)
            yield index, image, moved, kept, {**kind, "dup_of": first if frame else None}, first
            index += 1


def make_pool(
    root: Path, name: str, recipe: PoolRecipe, num_images: int, seed: int, with_dups: bool = True, bursts=None
) -> dict[str, str]:
    """A pool or test set under ``root/name``, made once per recipe: ``images/00000.jpg ...``,
    ``annotations.json`` (COCO, id = index + 1), ``meta.json`` (per id: empty, small, low_contrast, rare,
    objects, dup_of, scene). With ``bursts`` = (fewest, most) frames, ``num_images`` counts scenes."""
    from nanodet.data.synthetic import _write_jpeg

    out = Path(root) / name
    stamp = {"recipe": recipe.as_dict(), "num_images": num_images, "seed": seed, "with_dups": with_dups, "meta": 2}
    stamp |= {} if bursts is None else {"bursts": list(bursts)}
    names = {"img_path": "images", "ann_path": "annotations.json", "meta_path": "meta.json"}
    paths = {key: str(out / name) for key, name in names.items()}
    if (out / "recipe.json").is_file() and json.loads((out / "recipe.json").read_text()) == stamp:
        return paths
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, meta = [], [], {}
    if bursts is None:
        frames = _pool_images(recipe, num_images, seed, with_dups)
    else:
        frames = _burst_images(recipe, num_images, seed, bursts)
    rare = recipe.classes.index(recipe.rare_class)
    for index, image, boxes, labels, info, scene in frames:
        _write_jpeg(out / "images" / f"{index:05d}.jpg", image)
        size = recipe.image_size
        images.append({"id": index + 1, "file_name": f"{index:05d}.jpg", "width": size, "height": size})
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
            w, h = x2 - x1, y2 - y1
            ann = {"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1, "bbox": [x1, y1, w, h]}
            annotations.append(ann | {"area": w * h, "iscrowd": 0})
        content = {"empty": len(labels) == 0, "rare": bool((labels == rare).any()), "objects": len(labels)}
        meta[index + 1] = info | {"scene": scene} | content
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(recipe.classes)]
    coco = {"info": {"description": f"active-learning {name}", "seed": seed}, "licenses": [], "images": images}
    coco |= {"annotations": annotations, "categories": categories}
    Path(paths["ann_path"]).write_text(json.dumps(coco))
    Path(paths["meta_path"]).write_text(json.dumps(meta))
    (out / "recipe.json").write_text(json.dumps(stamp))
    return paths
