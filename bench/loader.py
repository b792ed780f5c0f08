"""The training input pipeline against the official NanoDet's, to the batch the trainer receives.

    .venv/bin/python bench/loader.py [--rounds 2] [--batch 16] [--sizes 1920x1080,4000x3000]
                                     [--inputs 416,320] [--images 96,48] [--no-cache] [--out FILE]

The same photo-like JPEGs (``bench._common.photo_like``, quality 90: a photo's decode cost) and
config (``config/nanodet-plus-m_<input>.yml``) go through the official ``build_dataset``,
``naive_collate`` and ``stack_batch_img`` (``bench/official_loader.py`` in its environment) and
through ours: ``gpu`` (what a CUDA trainer receives: uint8 images, colour factors), ``cpu`` (the
network's input, made in the worker), ``gpu_image`` (decoded at the image's reduction, as the cache
stores it), ``before`` (``reference=True``: the pipeline before the fast path, this run's baseline)
and ``decode`` (the decode alone: the floor under any pipeline on this decoder).

``one_core``: one process pinned to one CPU, batch after batch (the first untimed), each set and
input with the two sides back to back; ``one_core_cpu_time``: by the process's CPU time;
``all_cores``: a DataLoader with one worker per CPU, the second epoch. ``cache_images_ours_gpu``:
``gpu`` with ``cache_images`` ram/disk at 416. Rounds alternate which side runs first; ratios are
ours / official within a round, their median over rounds reported. ``gpu_side``: the rate a GPU
trainer takes, from ``--gpu-result`` (``bench/gpu.py``'s report) when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import RESULTS, available_cores, host_info, log, official_command, photo_like, print_report  # noqa: E402

CONFIGS = {416: REPO / "config" / "nanodet-plus-m_416.yml", 320: REPO / "config" / "nanodet-plus-m_320.yml"}
UNIQUE_IMAGES = 4  # per size; the rest of the set are copies (same decode cost, less to generate)
JPEG_QUALITY = 90
CLASSES = ("a", "b", "c")
VARIANTS = ["gpu", "cpu", "gpu_image", "before", "decode"]  # ours, on one core


def make_set(root: Path, size: tuple[int, int], count: int) -> dict:
    """``count`` JPEGs of ``size`` (``UNIQUE_IMAGES`` distinct, copied) with 5 boxes each, COCO json;
    made once per recipe under ``root``."""
    import cv2
    import numpy as np

    width, height = size
    out = root / f"{width}x{height}_{count}"
    recipe = {"size": list(size), "count": count, "unique": UNIQUE_IMAGES, "quality": JPEG_QUALITY, "version": 1}
    if (out / "recipe.json").is_file() and json.loads((out / "recipe.json").read_text()) == recipe:
        return json.loads((out / "facts.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng([width, height])
    for i in range(min(UNIQUE_IMAGES, count)):
        image = photo_like(rng, width, height)
        cv2.imwrite(str(out / "images" / f"{i:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    images, annotations = [], []
    for i in range(count):
        if i >= UNIQUE_IMAGES:
            shutil.copyfile(out / "images" / f"{i % UNIQUE_IMAGES:04d}.jpg", out / "images" / f"{i:04d}.jpg")
        images.append({"id": i + 1, "file_name": f"{i:04d}.jpg", "width": width, "height": height})
        for j in range(5):
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            bbox = [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1 + j % len(CLASSES), "bbox": bbox}
                | {"area": round(w * h, 2), "iscrowd": 0}
            )
    categories = [{"id": i + 1, "name": name, "supercategory": "thing"} for i, name in enumerate(CLASSES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(coco))
    files = sorted((out / "images").glob("*.jpg"))[:UNIQUE_IMAGES]
    mean_bytes = sum(f.stat().st_size for f in files) / len(files)
    facts = {
        "img_path": str(out / "images"),
        "ann_path": str(out / "annotations.json"),
        "size": list(size),
        "images": count,
        "distinct_images": len(files),
        "jpeg_quality": JPEG_QUALITY,
        "mean_file_mib": round(mean_bytes / 2**20, 3),
        "bits_per_pixel": round(8 * mean_bytes / (width * height), 3),
    }
    (out / "facts.json").write_text(json.dumps(facts))
    (out / "recipe.json").write_text(json.dumps(recipe))
    log(f"generated {count} {width}x{height} images -> {out}")
    return facts


# --- ours, in a child process ------------------------------------------------------------------


def rates(seconds: float, cpu_seconds: float, images: int) -> dict:
    return {
        "images_per_s": round(images / seconds, 3),
        "ms_per_image": round(1e3 * seconds / images, 2),
        "cpu_images_per_s": round(images / cpu_seconds, 3),
        "cpu_ms_per_image": round(1e3 * cpu_seconds / images, 2),
        "timed_images": images,
    }


def decode_floor(job: dict, dataset) -> dict:
    """Read, header and decode at each draw's reduction, the same images and draws as the one-core
    jobs, the first batch untimed."""
    import numpy as np

    from nanodet.data.image_io import read_image_scaled
    from nanodet.data.transforms import draw_decode_factor

    def factor_of(index: int):
        seed = [dataset.seed, 0, index]
        return lambda w, h: draw_decode_factor(dataset.transform.draw(np.random.default_rng(seed), w, h).matrix)

    count, batch = job["images"] - job["images"] % job["batch"], job["batch"]
    seconds, cpu_seconds, factors = 0.0, 0.0, []
    for i in range(count):
        path = dataset.img_dir / dataset.coco.imgs[dataset.img_ids[i]]["file_name"]
        begin, cpu_begin = time.perf_counter(), time.process_time()
        _, factor, _ = read_image_scaled(path, factor_of(i))
        if i >= batch:
            seconds += time.perf_counter() - begin
            cpu_seconds += time.process_time() - cpu_begin
            factors.append(factor)
    return rates(seconds, cpu_seconds, count - batch) | {
        "factors": {str(k): factors.count(k) for k in sorted(set(factors))}
    }


def one_core(job: dict, dataset) -> dict:
    from nanodet.data.coco_dataset import collate_detection, collate_finished

    collate = collate_finished if job["variant"] == "cpu" else collate_detection
    batch = job["batch"]
    epochs = []
    for epoch in range(job["epochs"]):
        times, cpu_times = [], []
        for start in range(0, job["images"] - batch + 1, batch):
            begin, cpu_begin = time.perf_counter(), time.process_time()
            collate([dataset[(i, epoch)] for i in range(start, start + batch)])
            times.append(time.perf_counter() - begin)
            cpu_times.append(time.process_time() - cpu_begin)
        skip = 1 if epoch == 0 else 0  # the first batch of the run warms up
        epochs.append(rates(sum(times[skip:]), sum(cpu_times[skip:]), batch * (len(times) - skip)))
    return epochs[0] | ({"epochs": epochs} if len(epochs) > 1 else {})


def all_cores(job: dict, cfg, dataset) -> dict:
    import torch

    from nanodet.engine.build import build_loader
    from nanodet.engine.distributed import DistContext

    cfg = cfg.merged({"device": {"batchsize_per_gpu": job["batch"], "workers_per_gpu": job["workers"]}})
    device = torch.device("cuda" if job["variant"] == "gpu" else "cpu")  # which collate: nothing runs on it
    loader = build_loader(cfg, dataset, DistContext(device=device), train=True, seed=0)
    epochs = []
    for epoch in range(job["epochs"]):
        loader.sampler.set_epoch(epoch)
        begin = time.perf_counter()
        for _ in loader:
            pass
        seconds = time.perf_counter() - begin
        epochs.append({"images_per_s": round(len(loader) * job["batch"] / seconds, 3), "seconds": round(seconds, 3)})
    return {
        "epochs": epochs,
        "prefetch_factor": loader.prefetch_factor,
        "persistent_workers": loader.persistent_workers,
    }


def run_child(jobs_file: Path) -> None:
    import warnings

    import cv2
    import torch

    from nanodet.config import load_config
    from nanodet.data.coco_dataset import build_dataset

    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # a CUDA loader's settings on a CPU-only host
    results = []
    for job in json.loads(jobs_file.read_text()):
        if job.get("cpu") is not None:
            os.sched_setaffinity(0, {job["cpu"]})
            torch.set_num_threads(1)
            cv2.setNumThreads(1)
        cfg = load_config(job["config"])
        paths = {"img_path": job["img_path"], "ann_path": job["ann_path"]}
        dataset = build_dataset(
            cfg.data.train.model_copy(update=paths),
            train=True,
            seed=0,
            cache_images=job["cache"],
            reference=job["variant"] == "before",
            decode_per_draw=job["variant"] != "gpu_image",
        )
        if job["variant"] == "decode":
            out = decode_floor(job, dataset)
        else:
            out = one_core(job, dataset) if job["mode"] == "single" else all_cores(job, cfg, dataset)
        if dataset.cache is not None:
            out["cached_images"] = dataset.cache.stored()
            dataset.cache.close()
        results.append({**job, **out})
    print("\n" + json.dumps(results))


# --- the driver --------------------------------------------------------------------------------


def run_jobs(cmd: list[str], jobs: list[dict]) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(jobs, fh)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([*cmd, fh.name], capture_output=True, text=True, env=env, timeout=3600)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        return [{**job, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"} for job in jobs]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gpu_rate(path: Path) -> dict:
    """The training step's images/s on the GPU (``bench/gpu.py``'s JSON): the rate the loader must feed."""
    if not path.is_file():
        return {"not_measured": f"no GPU result at {path} (bench/gpu.sh on a CUDA machine writes it)"}
    report = json.loads(path.read_text())
    runs = report.get("train", {}).get("runs", {})
    rates = {
        k: v["compute_images_per_s"] for k, v in runs.items() if isinstance(v, dict) and "compute_images_per_s" in v
    }
    if not rates:
        return {"not_measured": f"{path} has no train runs"}
    gpus = report.get("header", {}).get("gpus")
    return {
        "source": str(path),
        "gpus": gpus,
        "compute_images_per_s": rates,
        "must_feed_images_per_s": max(rates.values()),
    }


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _find(results: list[dict] | None, **keys) -> dict | None:
    return next((it for it in results or [] if all(it.get(k) == v for k, v in keys.items())), None)


def _rate(item: dict | None, epoch: int | None = None, field: str = "images_per_s") -> float | None:
    """images/s of a job (``field``: by the wall clock, or ``cpu_images_per_s`` by its CPU time): of
    the run (one-core jobs) or of one of its epochs."""
    if item is None or "error" in item:
        return None
    if epoch is None:
        return item.get(field)
    return item["epochs"][epoch][field] if "epochs" in item else None


def _compare(ours: list, official: list, label: str) -> dict:
    """The median over rounds, and ours / official within each round then its median."""
    ratios = [o / f for o, f in zip(ours, official) if o and f]
    return {
        f"{label}_images_per_s": median(ours),
        f"{label}_vs_official": median(ratios),
        f"{label}_vs_official_per_round": [round(x, 3) for x in ratios],
    }


def summary(rounds: list[dict], sets: dict, inputs: list[int]) -> dict:
    """Per set and input: one core and all cores (second epoch), each variant against the official
    of the same round; the cache's first and second epochs (input 416)."""
    out = {}
    for name in sets:
        for size in inputs:
            key = {"set": name, "input": size}
            row: dict = {}
            official_rates = {}
            for label, mode, epoch, field in (
                ("one_core", "single", None, "images_per_s"),
                ("one_core_cpu_time", "single", None, "cpu_images_per_s"),
                ("all_cores", "loader", 1, "images_per_s"),
            ):
                official = [_rate(_find(r.get(f"official_{mode}"), **key), epoch, field) for r in rounds]
                official_rates.setdefault(mode, official)
                part: dict = {"official_images_per_s": median(official)}
                for variant in VARIANTS:
                    ours = [_rate(_find(r.get(f"ours_{mode}"), variant=variant, **key), epoch, field) for r in rounds]
                    if any(v is not None for v in ours):
                        part.update(_compare(ours, official, f"ours_{variant}"))
                if "ours_decode_images_per_s" in part:  # the decode alone: the most any pipeline on it can reach
                    part["ceiling_at_decode_floor_vs_official"] = part.pop("ours_decode_vs_official")
                    per_round = part.pop("ours_decode_vs_official_per_round")
                    part["ceiling_at_decode_floor_vs_official_per_round"] = per_round
                    part["decode_floor_images_per_s"] = part.pop("ours_decode_images_per_s")
                row[label] = part
            if size == 416 and any("ours_cache" in r for r in rounds):
                cache: dict = {}
                for label, mode, cache_mode in (
                    ("one_core_ram", "single", "ram"),
                    ("one_core_disk", "single", "disk"),
                    ("all_cores_ram", "loader", "ram"),
                ):
                    items = [_find(r.get("ours_cache"), mode=mode, cache=cache_mode, **key) for r in rounds]
                    cache[label] = {
                        "epoch1_images_per_s": median([_rate(it, 0) for it in items]),
                        **_compare([_rate(it, 1) for it in items], official_rates[mode], "epoch2"),
                        "cached_images": [it.get("cached_images") for it in items if it],
                    }
                row["cache_images_ours_gpu"] = cache
            out[f"{name}@{size}"] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="the trainer's batch (the training template's default)")
    parser.add_argument("--sizes", default="1920x1080,4000x3000")
    parser.add_argument("--inputs", default="416,320")
    parser.add_argument("--images", default="96,48", help="images per set, one count per size")
    parser.add_argument("--workers", type=int, default=available_cores(), help="DataLoader workers for all cores")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "nanodet-bench-loader")
    parser.add_argument("--gpu-result", type=Path, default=RESULTS / "gpu.json", help="bench/gpu.py's report")
    parser.add_argument("--no-cache", action="store_true", help="skip the cache_images measurements")
    parser.add_argument("--out", type=Path, default=RESULTS / "loader.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    inputs = [int(v) for v in args.inputs.split(",")]
    sets = {f"{w}x{h}": make_set(args.data_dir, (w, h), int(n)) for (w, h), n in zip(sizes, args.images.split(","))}
    one_cpu = sorted(os.sched_getaffinity(0))[-1]
    commands = {
        "official": official_command(REPO / "bench" / "official_loader.py"),
        "ours": [sys.executable, str(Path(__file__).resolve()), "--child"],
    }

    def jobs(mode: str, variants: list[str], cache: str = "none", only: tuple | None = None) -> list[dict]:
        return [
            {
                "set": name,
                "input": size,
                "variant": variant,
                "config": str(CONFIGS[size]),
                "img_path": facts["img_path"],
                "ann_path": facts["ann_path"],
                "batch": args.batch,
                "images": facts["images"],
                "mode": mode,
                "workers": args.workers if mode == "loader" else 0,
                "epochs": 2 if (mode == "loader" or cache != "none") else 1,
                "cpu": one_cpu if mode == "single" else None,
                "cache": cache,
            }
            for name, facts in sets.items()
            for size in inputs
            for variant in variants
            if only is None or only in ((name, size), size)
        ]

    rounds: list[dict] = []
    pairs = [(name, size) for name in sets for size in inputs]
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}")
        result: dict = {}
        # one core: each set and input on its own, the two sides back to back (the machine's load
        # drifts over minutes); all cores: every set and input in one go per side
        for mode, group, g in [("single", p, g) for g, p in enumerate(pairs)] + [("loader", None, 0)]:
            for side in ("official", "ours") if (r + g) % 2 == 0 else ("ours", "official"):
                if commands[side] is None:
                    continue
                start = time.perf_counter()
                variants = ["official"] if side == "official" else VARIANTS if mode == "single" else ["gpu", "cpu"]
                todo = jobs(mode, variants, only=group)
                result.setdefault(f"{side}_{mode}", []).extend(run_jobs(commands[side], todo))
                log(f"  {side} {mode} {group or 'all'}: {time.perf_counter() - start:.1f}s")
        if not args.no_cache:
            start = time.perf_counter()
            todo = [j for c in ("ram", "disk") for j in jobs("single", ["gpu"], c, only=416)]
            result["ours_cache"] = run_jobs(commands["ours"], todo + jobs("loader", ["gpu"], "ram", only=416))
            log(f"  ours cache: {time.perf_counter() - start:.1f}s")
        rounds.append(result)
    report = {
        "benchmark": "training input pipeline, ours against the official NanoDet's, to the batch the trainer receives",
        **host_info(),
        "batch": args.batch,
        "workers_all_cores": args.workers,
        "sets": sets,
        "configs": {str(k): str(v.relative_to(REPO)) for k, v in CONFIGS.items() if k in inputs},
        "official": "measured, interleaved" if commands["official"] else "not measured: no official harness",
        "gpu_side": gpu_rate(args.gpu_result),
        "summary": summary(rounds, sets, inputs),
        "rounds": rounds,
    }
    print_report(report, args.out, indent=1)


if __name__ == "__main__":
    main()
