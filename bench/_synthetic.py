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
from pathlib import Path

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
    recipe = {"num_images": num_images, "image_size": json.loads(json.dumps(image_size)), "seed": seed,
              "min_size": min_size, "max_size": max_size, "max_objects": max_objects, "classes": list(CLASSES)}
    stamp = out / "recipe.json"
    ann = out / "annotations.json"
    if not (ann.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == recipe):
        start = time.perf_counter()
        make_synthetic_coco(out, num_images, image_size=image_size, class_names=CLASSES, seed=seed,
                            max_objects=max_objects, min_size=min_size, max_size=max_size)
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
):
    """``config/<config_name>`` for the 3 shape classes, reading the generated datasets.

    The official train pipeline (augmentations) is kept; only paths, input size, batch and
    workers change, plus ``overrides`` (nested dicts, official key names).
    """
    from nanodet.config import _deep_merge, load_config

    cfg = load_config(CONFIG_DIR / config_name).with_classes(list(CLASSES))
    size = [int(input_size[0]), int(input_size[1])]
    base = {
        "save_dir": str(work_dir),
        "data": {"train": {**train, "input_size": size}, "val": {**val, "input_size": size}},
        "device": {"batchsize_per_gpu": batch_size, "workers_per_gpu": workers},
        "log": {"interval": 10**9},
    }
    return cfg.merged(_deep_merge(base, overrides or {}))
