"""What the benchmarks share: fixed random weights, memory and CPU-noise probes, CPU thread
set-up and host facts for the JSON reports, and synthetic datasets (the shapes sets and the
active-learning pool) with configs pointed at them.

Nothing here is part of the library; the benchmarks import it as ``bench._common`` (run
them from anywhere: they put the repository root on ``sys.path``) or as ``_common`` (run as
a script from ``bench/``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
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


def print_report(report: dict, out: Path | None = None) -> None:
    """A benchmark's JSON report on stdout, and in ``out`` too when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


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


# --- synthetic datasets, threads, host facts ------------------------------------------

CONFIG_DIR = REPO / "config"
CLASSES = ("circle", "square", "triangle")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores the machine's processes kept busy over ``seconds`` (from /proc/stat), or None."""

    def sample() -> tuple[int, int] | None:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values[:8]) - idle, os.sysconf("SC_CLK_TCK")

    first = sample()
    start = time.perf_counter()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None:
        return None
    return (second[0] - first[0]) / second[1] / (time.perf_counter() - start)


def default_threads() -> tuple[int, str]:
    """(threads, why): ``OMP_NUM_THREADS`` if set, else the cores other processes leave idle.

    On a small machine shared with other jobs, intra-op threads that outnumber the idle
    cores get pre-empted while the others spin-wait at every barrier: measured here on 2
    cores with ~1 core taken by others, 2 threads ran a training step 3-4x slower than 1.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores = available_cores()
    busy = busy_cores()
    if busy is None:
        return cores, "all cores"
    return max(1, min(cores, round(cores - busy))), f"idle cores ({busy:.2f} of {cores} busy before start)"


def set_threads(threads: int) -> int:
    """Intra-op threads of torch (and of OpenMP in subprocesses started later)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def host_info() -> dict:
    import torch

    return {
        "cores_available": available_cores(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def make_dataset(
    root: Path,
    name: str,
    num_images: int,
    image_size,
    seed: int,
    min_size: int,
    max_size: int,
    max_objects: int = 4,
) -> dict[str, str]:
    """Generate (once: reused if ``root/name`` holds the same recipe) a COCO shapes set."""
    from nanodet.data.synthetic import make_synthetic_coco

    out = Path(root) / name
    recipe = {
        "num_images": num_images,
        "image_size": json.loads(json.dumps(image_size)),
        "seed": seed,
        "min_size": min_size,
        "max_size": max_size,
        "max_objects": max_objects,
        "classes": list(CLASSES),
    }
    stamp = out / "recipe.json"
    ann = out / "annotations.json"
    if not (ann.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == recipe):
        start = time.perf_counter()
        make_synthetic_coco(
            out,
            num_images,
            image_size=image_size,
            class_names=CLASSES,
            seed=seed,
            max_objects=max_objects,
            min_size=min_size,
            max_size=max_size,
        )
        stamp.write_text(json.dumps(recipe))
        log(f"generated {num_images} {name} images in {time.perf_counter() - start:.1f}s -> {out}")
    return {"img_path": str(out / "images"), "ann_path": str(ann)}


def synthetic_config(
    config_name: str,
    train: dict[str, str],
    val: dict[str, str],
    input_size: Sequence[int],
    batch_size: int,
    workers: int,
    work_dir: Path,
    overrides: dict | None = None,
    class_names: Sequence[str] = CLASSES,
):
    """``config/<config_name>`` for the shape classes (default the 3 of :data:`CLASSES`),
    reading the generated datasets.

    The official train pipeline (augmentations) is kept; only paths, input size, batch and
    workers change, plus ``overrides`` (nested dicts, official key names).
    """
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


# --- an active-learning pool: imbalanced, small/faint objects, empty images, near-duplicates ---------


@dataclass(frozen=True)
class PoolRecipe:
    """How ``bench/active_learning.py`` draws its pool and test set (square images of ``image_size``).

    Each original image is empty (background only) with probability ``empty_share``; otherwise it
    holds 1..``max_objects`` objects whose classes follow ``class_freq`` (the last class is the
    rare one), all small (``small_size``) in a ``small_share`` of them, all faint (a colour only a
    little off the background under them) in a ``low_contrast_share`` of them. A ``dup_share`` of
    the pool are near-duplicates: copies of other pool images shifted by up to ``max_shift``
    pixels, re-brightened and re-noised, with their boxes moved alike.
    """

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
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()} | {
            "rare_class": self.rare_class
        }


def _faint_colour(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A colour 18-32 grey levels brighter or darker than the background under ``mask``."""
    under = image[mask].reshape(-1, 3).mean(axis=0)
    offset = rng.choice([-1.0, 1.0]) * rng.uniform(18, 32) + rng.normal(0, 4, size=3)
    if under.mean() + offset.mean() < 8 or under.mean() + offset.mean() > 247:
        offset = -offset
    return np.clip(under + offset, 0, 255).astype(np.uint8)


def _draw_pool_objects(
    rng: np.random.Generator, image: np.ndarray, recipe: PoolRecipe, small: bool, faint: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1..max_objects shapes on ``image`` (in place); boxes tight to the visible pixels, labels."""
    from nanodet.data.synthetic import SHAPES, _object_colour, _place, _visible_box

    height, width = image.shape[:2]
    low, high = recipe.small_size if small else recipe.object_size
    owner = np.full((height, width), -1, dtype=np.int32)
    placed: list[np.ndarray] = []
    labels: list[int] = []
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
        image[drawn] = _faint_colour(rng, image, drawn) if faint else _object_colour(rng)
        owner[drawn] = len(labels)
        placed.append(np.array([x, y, x + w, y + h], dtype=np.float64))
        labels.append(label)
    kept = [i for i in range(len(labels)) if (owner == i).any()]
    boxes = np.array([_visible_box(owner == i) for i in kept], dtype=np.float32).reshape(-1, 4)
    return boxes, np.array([labels[i] for i in kept], dtype=np.int64)


def pool_image(rng: np.random.Generator, recipe: PoolRecipe) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One original image: ``(image BGR, boxes xyxy, labels, kind)``, kind = empty/small/faint flags."""
    from nanodet.data.synthetic import _add_noise, _background

    size = recipe.image_size
    image = _background(rng, size, size)
    empty = bool(rng.random() < recipe.empty_share)
    small = not empty and bool(rng.random() < recipe.small_share)
    faint = not empty and bool(rng.random() < recipe.low_contrast_share)
    boxes, labels = (
        (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
        if empty
        else _draw_pool_objects(rng, image, recipe, small, faint)
    )
    return _add_noise(rng, image), boxes, labels, {"small": small, "low_contrast": faint}


def near_duplicate(
    rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, max_shift: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shifted (1..max_shift px), re-brightened, re-noised copy with its boxes shifted and clipped.

    Boxes left under 3 px wide or tall by the image border are dropped with their labels.
    """
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


def _pool_layout(seed: int, num_images: int, dup_share: float) -> tuple[list[int], dict[int, int]]:
    """Which positions of the pool hold originals, and for each duplicate position its source position."""
    rng = np.random.default_rng([seed, 2])
    num_dups = round(num_images * dup_share)
    order = rng.permutation(num_images)
    originals = sorted(int(i) for i in order[num_dups:])
    sources = rng.choice(originals, size=num_dups, replace=False)
    return originals, {int(d): int(s) for d, s in zip(sorted(order[:num_dups]), sources)}


def _coco_record(index: int, boxes: np.ndarray, labels: np.ndarray, size: int, first_ann: int) -> tuple[dict, list]:
    """The COCO image entry (id ``index + 1``) and its annotations (ids from ``first_ann``)."""
    image = {"id": index + 1, "file_name": f"{index:05d}.jpg", "width": size, "height": size}
    anns = []
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
        w, h = x2 - x1, y2 - y1
        anns.append(
            {
                "id": first_ann + len(anns),
                "image_id": index + 1,
                "category_id": label + 1,
                "bbox": [x1, y1, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return image, anns


def _pool_images(recipe: PoolRecipe, num_images: int, seed: int, with_dups: bool):
    """Yield ``(index, image, boxes, labels, meta)`` for every position of the set, originals first drawn."""
    originals, dup_source = _pool_layout(seed, num_images, recipe.dup_share if with_dups else 0.0)
    drawn: dict[int, tuple] = {}
    for index in originals:
        image, boxes, labels, kind = pool_image(np.random.default_rng([seed, 0, index]), recipe)
        drawn[index] = (image, boxes, labels, kind)
    for index in range(num_images):
        if index in dup_source:
            image, boxes, labels, kind = drawn[dup_source[index]]
            image, boxes, labels = near_duplicate(
                np.random.default_rng([seed, 1, index]), image, boxes, labels, recipe.max_shift
            )
            meta = {**kind, "dup_of": dup_source[index] + 1, "scene": dup_source[index] + 1}
        else:
            image, boxes, labels, kind = drawn[index]
            meta = {**kind, "dup_of": None, "scene": index + 1}
        yield index, image, boxes, labels, meta | _content_meta(recipe, labels)


def _content_meta(recipe: PoolRecipe, labels: np.ndarray) -> dict:
    rare = recipe.classes.index(recipe.rare_class)
    return {"empty": len(labels) == 0, "rare": bool((labels == rare).any()), "objects": len(labels)}


def _burst_images(recipe: PoolRecipe, num_scenes: int, seed: int, frames: tuple[int, int]):
    """Yield ``(index, image, boxes, labels, meta)`` of a bursty pool: each of ``num_scenes``
    originals (drawn as :func:`pool_image` draws them) appears as ``frames[0]..frames[1]``
    consecutive frames, each a jittered copy (:func:`near_duplicate`: shifted by up to
    ``max_shift`` px, re-brightened, re-noised), like a short video of one scene. ``scene`` is
    the id of the scene's first frame; ``dup_of`` too for every later frame."""
    index = 0
    for scene in range(num_scenes):
        base, boxes, labels, kind = pool_image(np.random.default_rng([seed, 0, scene]), recipe)
        count = int(np.random.default_rng([seed, 4, scene]).integers(frames[0], frames[1] + 1))
        first = index + 1
        for frame in range(count):
            rng = np.random.default_rng([seed, 3, scene, frame])
            image, moved, kept = near_duplicate(rng, base, boxes, labels, recipe.max_shift)
            meta = {**kind, "dup_of": first if frame else None, "scene": first}
            yield index, image, moved, kept, meta | _content_meta(recipe, kept)
            index += 1


def make_pool(
    root: Path,
    name: str,
    recipe: PoolRecipe,
    num_images: int,
    seed: int,
    with_dups: bool = True,
    bursts: tuple[int, int] | None = None,
) -> dict[str, str]:
    """Generate (once: reused when ``root/name`` holds the same recipe) a pool or test set.

    Writes ``images/00000.jpg ...``, ``annotations.json`` (COCO, image id = index + 1) and
    ``meta.json`` (per image id: empty, small, low_contrast, rare, objects, dup_of = the id of the
    image it is a near-duplicate of, or null, scene = the id of its scene's original or first
    frame). With ``bursts`` = (fewest, most) frames, ``num_images`` is the number of scenes, each
    a burst of jittered frames (:func:`_burst_images`; ``with_dups`` is ignored). Returns
    ``img_path``, ``ann_path``, ``meta_path``.
    """
    from nanodet.data.synthetic import _write_jpeg

    out = Path(root) / name
    stamp = {"recipe": recipe.as_dict(), "num_images": num_images, "seed": seed, "with_dups": with_dups, "meta": 2}
    if bursts is not None:
        stamp |= {"bursts": list(bursts)}
    paths = {
        "img_path": str(out / "images"),
        "ann_path": str(out / "annotations.json"),
        "meta_path": str(out / "meta.json"),
    }
    if (out / "recipe.json").is_file() and json.loads((out / "recipe.json").read_text()) == stamp:
        return paths
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, meta = [], [], {}
    frames = (
        _burst_images(recipe, num_images, seed, bursts)
        if bursts is not None
        else _pool_images(recipe, num_images, seed, with_dups)
    )
    for index, image, boxes, labels, info in frames:
        _write_jpeg(out / "images" / f"{index:05d}.jpg", image)
        entry, anns = _coco_record(index, boxes, labels, recipe.image_size, len(annotations) + 1)
        images.append(entry)
        annotations.extend(anns)
        meta[index + 1] = info
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(recipe.classes)]
    coco = {
        "info": {"description": f"active-learning {name}", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    Path(paths["ann_path"]).write_text(json.dumps(coco))
    Path(paths["meta_path"]).write_text(json.dumps(meta))
    (out / "recipe.json").write_text(json.dumps(stamp))
    return paths
