"""The training input pipeline against the official NanoDet's, side by side, to the batch the trainer receives.

    .venv/bin/python bench/loader.py [--rounds 2] [--batch 16] [--sizes 1920x1080,4000x3000]
                                     [--inputs 416,320] [--images 96,48] [--workers N]
                                     [--ref-python /tmp/refenv/bin/python]
                                     [--ref-pythonpath /tmp/nanodet-ref:/tmp/refshim]
                                     [--out bench/results/loader.json]

The same generated photo-like JPEGs (smooth light, textures at five scales, textured objects with
hard edges, sensor noise; quality 90: about 1.2-1.6 bits per pixel, whose decode costs what a
photo's does) and the same official-format config (``config/nanodet-plus-m_416.yml`` for input
416, ``_320`` for 320: the official augmentation, ``perspective`` 0) go through:

* official: its ``build_dataset`` (``CocoDataset`` + ``Pipeline``), ``naive_collate`` and the
  ``stack_batch_img`` of its ``TrainingTask`` (``bench/official_loader.py``, run by the official
  environment's Python, ``--ref-python`` / ``$NANODET_REF_PYTHON``, with ``--ref-pythonpath`` /
  ``$NANODET_REF_PYTHONPATH``: see the official harness's README for setting it up);
* ours, ``gpu``: what a CUDA trainer receives (``collate_detection``: ``uint8`` images and colour
  factors; colour and normalisation then run on the GPU, not timed here);
* ours, ``cpu``: what a CPU trainer receives (``collate_finished``: the network's input made in
  the worker);
* ours, ``gpu_image``: ``gpu`` with each image decoded at the image's reduction (what every draw
  allows: ``decode_per_draw=False``, as ``cache_images`` stores them) instead of its draw's own;
* ours, ``before``: the pipeline as it was (``reference=True``: whole decode, perspective warp,
  colour in float32 per image), this run's baseline of the change;
* ``decode``: the decode alone (read, header, decode at each draw's reduction; same images and
  draws): the floor under any pipeline on this decoder, and so the ceiling of its ratio to the
  official (``ceiling_at_decode_floor_vs_official``).

``single``: one process pinned to one CPU with one thread (OpenCV, PyTorch), items then collate,
batch after batch, the first batch untimed; each set and input runs on its own, the two sides back
to back. Timed by the wall clock (``one_core``) and by the process's CPU time
(``one_core_cpu_time``: images per CPU-second, what a core of its own would give; on a shared
machine the wall clock also counts the time other processes held the CPU). ``all cores``: a
DataLoader with one worker per CPU (ours: ``nanodet.engine.build.build_loader``, persistent
workers; official: its ``tools/train.py`` loader, workers not persistent), two epochs; the second
epoch's images/s is reported.
``cache``: ours ``gpu`` with ``cache_images`` ``ram`` and ``disk``, at input 416: epoch 1 decodes and
stores, epoch 2 reads the cache. Rounds alternate which side runs first; each ratio is official /
ours within a round, and the median over rounds is reported. The GPU rate the loader must feed is
read from ``--gpu-result`` (``bench/gpu.py``'s JSON) when that file exists.
Prints ONE JSON object (progress on stderr) and writes it to ``--out``.
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

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import available_cores, host_info, log  # noqa: E402

CONFIGS = {416: REPO / "config" / "nanodet-plus-m_416.yml", 320: REPO / "config" / "nanodet-plus-m_320.yml"}
UNIQUE_IMAGES = 4  # per size; the rest of the set are copies (same decode cost, less to generate)
JPEG_QUALITY = 90
CLASSES = ("a", "b", "c")
SINGLE_VARIANTS = ["gpu", "cpu", "gpu_image", "before", "decode"]  # ours, on one core


# --- data --------------------------------------------------------------------------------------


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photo-like BGR image: a smooth light gradient, mostly-luminance texture at five scales,
    8-15 objects with their own texture and hard edges, and Gaussian sensor noise (sigma 3)."""
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


def make_set(root: Path, size: tuple[int, int], count: int) -> dict:
    """``count`` JPEGs of ``size`` (``UNIQUE_IMAGES`` distinct ones, copied) with 5 boxes each, as
    COCO json; made once per recipe under ``root``."""
    width, height = size
    out = root / f"{width}x{height}_{count}"
    recipe = {"size": list(size), "count": count, "unique": UNIQUE_IMAGES, "quality": JPEG_QUALITY, "version": 1}
    stamp = out / "recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return json.loads((out / "facts.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng([width, height])
    start = time.perf_counter()
    for i in range(min(UNIQUE_IMAGES, count)):
        cv2.imwrite(
            str(out / "images" / f"{i:04d}.jpg"),
            photo_like(rng, width, height),
            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        )
    images, annotations = [], []
    for i in range(count):
        if i >= UNIQUE_IMAGES:
            shutil.copyfile(out / "images" / f"{i % UNIQUE_IMAGES:04d}.jpg", out / "images" / f"{i:04d}.jpg")
        images.append({"id": i + 1, "file_name": f"{i:04d}.jpg", "width": width, "height": height})
        for j in range(5):
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1 + j % len(CLASSES),
                    "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name, "supercategory": "thing"} for i, name in enumerate(CLASSES)]
    (out / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
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
    stamp.write_text(json.dumps(recipe))
    log(f"generated {count} {width}x{height} images in {time.perf_counter() - start:.1f}s -> {out}")
    return facts


# --- ours, in a child process ------------------------------------------------------------------


def our_dataset(job: dict):
    from nanodet.config import load_config
    from nanodet.data.coco_dataset import build_dataset

    cfg = load_config(job["config"])
    dataset_cfg = cfg.data.train.model_copy(update={"img_path": job["img_path"], "ann_path": job["ann_path"]})
    return cfg, build_dataset(
        dataset_cfg,
        train=True,
        seed=0,
        cache_images=job.get("cache", "none"),
        reference=job["variant"] == "before",
        decode_per_draw=job["variant"] != "gpu_image",
    )


def our_decode_floor(job: dict, dataset) -> dict:
    """The decode alone, as the fast samples decode (each at its draw's reduction): read, header,
    decode, the same images and draws as the ``single`` jobs; what no pipeline built on this
    decoder can go under. The first ``batch`` images warm up."""
    from nanodet.data.image_io import read_image_scaled
    from nanodet.data.transforms import draw_decode_factor

    def factor_of(index: int):
        seed = [dataset.seed, 0, index]
        return lambda w, h: draw_decode_factor(dataset.transform.draw(np.random.default_rng(seed), w, h).matrix)

    count, batch = job["images"] - job["images"] % job["batch"], job["batch"]
    paths = [dataset.img_dir / dataset.coco.imgs[dataset.img_ids[i]]["file_name"] for i in range(count)]
    seconds, cpu_seconds, factors = 0.0, 0.0, []
    for i, path in enumerate(paths):
        begin, cpu_begin = time.perf_counter(), time.process_time()
        _, factor, _ = read_image_scaled(path, factor_of(i))
        if i >= batch:
            seconds += time.perf_counter() - begin
            cpu_seconds += time.process_time() - cpu_begin
            factors.append(factor)
    timed = count - batch
    return {
        "images_per_s": round(timed / seconds, 3),
        "ms_per_image": round(1e3 * seconds / timed, 2),
        "cpu_images_per_s": round(timed / cpu_seconds, 3),
        "cpu_ms_per_image": round(1e3 * cpu_seconds / timed, 2),
        "timed_images": timed,
        "factors": {str(k): factors.count(k) for k in sorted(set(factors))},
    }


def our_single(job: dict, dataset) -> dict:
    from nanodet.data.coco_dataset import collate_detection, collate_finished

    collate = collate_finished if job["variant"] == "cpu" else collate_detection
    batch, count = job["batch"], job["images"]
    starts = list(range(0, count - batch + 1, batch))
    epochs = []
    for epoch in range(job["epochs"]):
        times, cpu_times = [], []
        for start in starts:
            begin, cpu_begin = time.perf_counter(), time.process_time()
            collate([dataset[(i, epoch)] for i in range(start, start + batch)])
            times.append(time.perf_counter() - begin)
            cpu_times.append(time.process_time() - cpu_begin)
        skip = 1 if epoch == 0 else 0  # the first batch of the run warms up
        timed, cpu_timed = times[skip:], cpu_times[skip:]
        epochs.append(
            {
                "images_per_s": round(batch * len(timed) / sum(timed), 3),
                "ms_per_image": round(1e3 * sum(timed) / (batch * len(timed)), 2),
                "cpu_images_per_s": round(batch * len(cpu_timed) / sum(cpu_timed), 3),
                "cpu_ms_per_image": round(1e3 * sum(cpu_timed) / (batch * len(cpu_timed)), 2),
                "timed_images": batch * len(timed),
            }
        )
    out = dict(epochs[0])
    if len(epochs) > 1:
        out["epochs"] = epochs
    if dataset.cache is not None:
        out["cached_images"] = dataset.cache.stored()
    return out


def our_loader(job: dict, cfg, dataset) -> dict:
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
    out = {"epochs": epochs, "prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers}
    if dataset.cache is not None:
        out["cached_images"] = dataset.cache.stored()
    return out


def run_child(jobs_file: Path) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # a CUDA loader's settings on a CPU-only host
    results = []
    for job in json.loads(jobs_file.read_text()):
        if job.get("cpu") is not None:
            os.sched_setaffinity(0, {job["cpu"]})
            torch.set_num_threads(1)
            cv2.setNumThreads(1)
        cfg, dataset = our_dataset(job)
        if job["variant"] == "decode":
            out = our_decode_floor(job, dataset)
        elif job["mode"] == "single":
            out = our_single(job, dataset)
        else:
            out = our_loader(job, cfg, dataset)
        if dataset.cache is not None:
            dataset.cache.close()
        results.append({**job, **out})
    print("\n" + json.dumps(results))


# --- the driver --------------------------------------------------------------------------------


def run_jobs(cmd: list[str], jobs: list[dict], env: dict | None = None) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(jobs, fh)
    try:
        proc = subprocess.run([*cmd, fh.name], capture_output=True, text=True, env=env, timeout=3600)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        return [{**job, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"} for job in jobs]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def gpu_rate(path: Path) -> dict:
    """The training step's images/s on the GPU (``bench/gpu.py``'s JSON), the rate the loader must feed."""
    if not path.is_file():
        return {"not_measured": f"no GPU result at {path} (bench/gpu.sh on a CUDA machine writes it)"}
    report = json.loads(path.read_text())
    runs = report.get("train", {}).get("runs", {})
    rates = {
        k: v["compute_images_per_s"] for k, v in runs.items() if isinstance(v, dict) and "compute_images_per_s" in v
    }
    if not rates:
        return {"not_measured": f"{path} has no train runs"}
    best = max(rates, key=rates.get)
    gpus = report.get("header", {}).get("gpus")
    return {"source": str(path), "gpus": gpus, "compute_images_per_s": rates, "must_feed_images_per_s": rates[best]}


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="the trainer's batch (the training template's default)")
    parser.add_argument("--sizes", default="1920x1080,4000x3000")
    parser.add_argument("--inputs", default="416,320")
    parser.add_argument("--images", default="96,48", help="images per set, one count per size")
    parser.add_argument("--workers", type=int, default=available_cores(), help="DataLoader workers for all cores")
    parser.add_argument("--ref-python", default=os.environ.get("NANODET_REF_PYTHON", "/tmp/refenv/bin/python"))
    parser.add_argument(
        "--ref-pythonpath", default=os.environ.get("NANODET_REF_PYTHONPATH", "/tmp/nanodet-ref:/tmp/refshim")
    )
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "nanodet-bench-loader")
    parser.add_argument("--gpu-result", type=Path, default=REPO / "bench" / "results" / "gpu.json")
    parser.add_argument("--no-cache", action="store_true", help="skip the cache_images measurements")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "loader.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    counts = [int(v) for v in args.images.split(",")]
    inputs = [int(v) for v in args.inputs.split(",")]
    sets = {f"{w}x{h}": make_set(args.data_dir, (w, h), n) for (w, h), n in zip(sizes, counts)}
    one_cpu = sorted(os.sched_getaffinity(0))[-1]
    official_ok = Path(args.ref_python).is_file()
    ref_env = {**os.environ, "PYTHONPATH": args.ref_pythonpath, "OMP_NUM_THREADS": "1"}
    ours_cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
    official_cmd = [args.ref_python, str(REPO / "bench" / "official_loader.py")]

    def jobs(mode: str, variants: list[str], cache: str = "none", only_416: bool = False) -> list[dict]:
        out = []
        for name, facts in sets.items():
            for size in inputs:
                if only_416 and size != 416:
                    continue
                for variant in variants:
                    out.append(
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
                    )
        return out

    env_ours = {**os.environ, "OMP_NUM_THREADS": "1"}
    rounds: list[dict] = []
    pairs = [(name, size) for name in sets for size in inputs]
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}")
        result: dict = {}
        for mode in ("single", "loader"):
            # one core: each set and input on its own, the two sides back to back (the machine's load
            # drifts over minutes); all cores: every set and input in one go per side
            for g, group in enumerate(pairs if mode == "single" else [None]):
                order = ("official", "ours") if (r + g) % 2 == 0 else ("ours", "official")
                for side in order:
                    start = time.perf_counter()
                    if side == "official" and official_ok:
                        todo = jobs(mode, ["official"])
                    elif side == "ours":
                        todo = jobs(mode, SINGLE_VARIANTS if mode == "single" else ["gpu", "cpu"])
                    else:
                        continue
                    todo = [j for j in todo if group is None or (j["set"], j["input"]) == group]
                    cmd, env = (official_cmd, ref_env) if side == "official" else (ours_cmd, env_ours)
                    result.setdefault(f"{side}_{mode}", []).extend(run_jobs(cmd, todo, env))
                    log(f"  {side} {mode} {group or 'all'}: {time.perf_counter() - start:.1f}s")
        if not args.no_cache:
            start = time.perf_counter()
            cache_jobs = jobs("single", ["gpu"], "ram", True) + jobs("single", ["gpu"], "disk", True)
            cache_jobs += jobs("loader", ["gpu"], "ram", True)
            result["ours_cache"] = run_jobs(ours_cmd, cache_jobs, env_ours)
            log(f"  ours cache: {time.perf_counter() - start:.1f}s")
        rounds.append(result)
    report = {
        "benchmark": "training input pipeline, ours against the official NanoDet's, to the batch the trainer receives",
        "cpu_model": cpu_model(),
        **host_info(),
        "batch": args.batch,
        "workers_all_cores": args.workers,
        "sets": sets,
        "configs": {str(k): str(v.relative_to(REPO)) for k, v in CONFIGS.items() if k in inputs},
        "official": "measured, interleaved" if official_ok else f"not measured: no {args.ref_python}",
        "gpu_side": gpu_rate(args.gpu_result),
        "summary": summarize(rounds, sets, inputs),
        "rounds": rounds,
    }
    text = json.dumps(report, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


def _find(results: list[dict] | None, **keys) -> dict | None:
    for item in results or []:
        if all(item.get(k) == v for k, v in keys.items()):
            return item
    return None


def _rate(item: dict | None, epoch: int | None = None, field: str = "images_per_s") -> float | None:
    """images/s of a job (``field``: by the wall clock, or ``cpu_images_per_s`` by the process's CPU
    time): of the run (one-core jobs) or of one of its epochs."""
    if item is None or "error" in item:
        return None
    if epoch is None:
        return item.get(field)
    return item["epochs"][epoch][field] if "epochs" in item else None


def _compare(ours: list[float | None], official: list[float | None], label: str) -> dict:
    """Medians over rounds, and ours / official within each round then its median."""
    ratios = [o / f for o, f in zip(ours, official) if o and f]
    return {
        f"{label}_images_per_s": median(ours),
        f"{label}_vs_official": median(ratios),
        f"{label}_vs_official_per_round": [round(x, 3) for x in ratios],
    }


def summarize(rounds: list[dict], sets: dict, inputs: list[int]) -> dict:
    """Per set and input: one core (the run) and all cores (the second epoch), each variant against
    the official in the same round; the cache's first and second epoch (input 416)."""
    summary = {}
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
                for variant in SINGLE_VARIANTS:
                    ours = [_rate(_find(r.get(f"ours_{mode}"), variant=variant, **key), epoch, field) for r in rounds]
                    if any(v is not None for v in ours):
                        part.update(_compare(ours, official, f"ours_{variant}"))
                if "ours_decode_images_per_s" in part:  # the decode alone: the most any pipeline on it can reach
                    part["ceiling_at_decode_floor_vs_official"] = part.pop("ours_decode_vs_official")
                    part["ceiling_at_decode_floor_vs_official_per_round"] = part.pop(
                        "ours_decode_vs_official_per_round"
                    )
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
            summary[f"{name}@{size}"] = row
    return summary


if __name__ == "__main__":
    main()
