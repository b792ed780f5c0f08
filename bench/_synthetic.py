"""Helpers shared by ``bench/train.py`` and ``bench/learn.py``: a synthetic shapes dataset,
a config pointed at it, CPU thread set-up and host/noise facts for the JSON report.

Nothing here is part of the library. The scripts put the repository root on ``sys.path``
and import this module as ``bench._synthetic`` (run them from anywhere).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIG_DIR = REPO / "config"
CLASSES = ("circle", "square", "triangle")


def log(*parts: object) -> None:
    """Progress goes to stderr; stdout carries only the JSON result."""
    print(*parts, file=sys.stderr, flush=True)


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
            meta = {**kind, "dup_of": dup_source[index] + 1}
        else:
            image, boxes, labels, kind = drawn[index]
            meta = {**kind, "dup_of": None}
        rare = recipe.classes.index(recipe.rare_class)
        meta |= {"empty": len(labels) == 0, "rare": bool((labels == rare).any()), "objects": len(labels)}
        yield index, image, boxes, labels, meta


def make_pool(
    root: Path, name: str, recipe: PoolRecipe, num_images: int, seed: int, with_dups: bool = True
) -> dict[str, str]:
    """Generate (once: reused when ``root/name`` holds the same recipe) a pool or test set.

    Writes ``images/00000.jpg ...``, ``annotations.json`` (COCO, image id = index + 1) and
    ``meta.json`` (per image id: empty, small, low_contrast, rare, objects, dup_of = the id of the
    image it is a near-duplicate of, or null). Returns ``img_path``, ``ann_path``, ``meta_path``.
    """
    from nanodet.data.synthetic import _write_jpeg

    out = Path(root) / name
    stamp = {"recipe": recipe.as_dict(), "num_images": num_images, "seed": seed, "with_dups": with_dups}
    paths = {
        "img_path": str(out / "images"),
        "ann_path": str(out / "annotations.json"),
        "meta_path": str(out / "meta.json"),
    }
    if (out / "recipe.json").is_file() and json.loads((out / "recipe.json").read_text()) == stamp:
        return paths
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, meta = [], [], {}
    for index, image, boxes, labels, info in _pool_images(recipe, num_images, seed, with_dups):
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
