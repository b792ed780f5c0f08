"""Where one core's time goes per training image: the fast pipeline's stages, measured on its real code path.

    .venv/bin/python bench/loader_stages.py [--sizes 1920x1080,4000x3000] [--inputs 416] [--images 64]
                                            [--set-images 96,48] [--batch 16] [--repeats 3] [--out FILE]

The same photo-like JPEGs and official-format configs as ``bench/loader.py`` (its ``make_set``),
one process pinned to one CPU with one thread. Two passes over ``--images`` images per repeat,
each an epoch the set has not had yet (fresh draws; files in the page cache after the first,
untimed, epoch):

* ``plain``: no profiler, ``collate_detection`` (a CUDA trainer's batches), ms per image (the
  number to compare);
* ``profiled``: under ``cProfile``, ``collate_finished`` (a CPU trainer's: the colour and
  normalisation made in the worker), the time of each stage (cumulative time of the functions that
  make it, named in ``STAGES``); ``other`` is the rest of the profiled total (Python around them,
  the profiler's own cost included). Without its ``colour (CPU trainer)`` stage it is the CUDA
  trainer's work.

The repeat with the lowest plain time is reported (the machine may be shared). Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import host_info, log, print_report  # noqa: E402
from bench.loader import CONFIGS, cpu_model, make_set  # noqa: E402

# stage -> functions (file suffix, function name) whose cumulative times add up to it; none calls another
STAGES = {
    "read file": [("~", "<built-in method numpy.fromfile>"), ("~", "<built-in method io.open>")],
    "header": [("image_io.py", "jpeg_decoded_size")],
    "decode": [("~", "<imdecode>")],
    "draw": [("transforms.py", "draw")],
    "warp": [("transforms.py", "warp_image")],
    "boxes": [("coco_dataset.py", "annotations"), ("preprocess.py", "warp_boxes"), ("transforms.py", "_keep_visible")],
    "collate": [("coco_dataset.py", "collate_finished")],
    "colour (CPU trainer)": [("transforms.py", "colour_and_normalize_hwc")],
}


def run_epoch(dataset, collate, epoch: int, count: int, batch: int) -> None:
    for start in range(0, count - batch + 1, batch):
        collate([dataset[(i, epoch)] for i in range(start, start + batch)])


def stage_times(stats: pstats.Stats) -> dict[str, float]:
    """Seconds per stage from the profile's cumulative times."""
    out = dict.fromkeys(STAGES, 0.0)
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        for stage, functions in STAGES.items():
            if any(filename.endswith(suffix) and name == fn for suffix, fn in functions):
                out[stage] += cumulative
    out["collate"] -= out["colour (CPU trainer)"]  # collate_finished calls it
    return out


def measure(set_facts: dict, size: int, count: int, batch: int, repeats: int) -> dict:
    from nanodet.config import load_config
    from nanodet.data.coco_dataset import build_dataset, collate_detection, collate_finished

    cfg = load_config(CONFIGS[size])
    dataset_cfg = cfg.data.train.model_copy(
        update={"img_path": set_facts["img_path"], "ann_path": set_facts["ann_path"]}
    )
    dataset = build_dataset(dataset_cfg, train=True, seed=0)
    count = min(count, len(dataset)) // batch * batch
    run_epoch(dataset, collate_detection, 0, count, batch)  # page cache, lazy imports
    best = None
    for r in range(repeats):
        begin = time.perf_counter()
        run_epoch(dataset, collate_detection, 1 + 2 * r, count, batch)
        plain = time.perf_counter() - begin
        profiler = cProfile.Profile()
        begin = time.perf_counter()
        profiler.enable()
        run_epoch(dataset, collate_finished, 2 + 2 * r, count, batch)
        profiler.disable()
        profiled = time.perf_counter() - begin
        stages = stage_times(pstats.Stats(profiler))
        stages["other"] = profiled - sum(stages.values())
        row = {
            "plain_ms_per_image": round(1e3 * plain / count, 2),
            "profiled_ms_per_image": round(1e3 * profiled / count, 2),
            "profiled_without_colour_ms_per_image": round(1e3 * (profiled - stages["colour (CPU trainer)"]) / count, 2),
            "stages_ms_per_image": {k: round(1e3 * v / count, 3) for k, v in stages.items()},
        }
        log(f"  repeat {r + 1}: {row}")
        if best is None or row["plain_ms_per_image"] < best["plain_ms_per_image"]:
            best = row
    return {"images": count, **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1920x1080,4000x3000")
    parser.add_argument("--inputs", default="416")
    parser.add_argument("--images", type=int, default=64, help="timed images per pass (at most the set's)")
    parser.add_argument("--set-images", default="96,48", help="images per set, one count per size (bench/loader.py's)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp") / "nanodet-bench-loader")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    results = {}
    for text, set_images in zip(args.sizes.split(","), args.set_images.split(",")):
        width, height = (int(v) for v in text.split("x"))
        facts = make_set(args.data_dir, (width, height), int(set_images))
        for size in (int(v) for v in args.inputs.split(",")):
            log(f"{text}@{size}")
            results[f"{text}@{size}"] = measure(facts, size, args.images, args.batch, args.repeats)
    report = {
        "benchmark": "the fast training pipeline's time per image by stage, one core (collate_detection batches)",
        "cpu_model": cpu_model(),
        **host_info(),
        "results": results,
    }
    print_report(report, args.out)


if __name__ == "__main__":
    main()
