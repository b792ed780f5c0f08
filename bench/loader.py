"""The training input pipeline against the official NanoDet's (the baseline, same run), to the batch the
trainer receives: the same photo-like JPEGs (quality 90) and ``config/nanodet-plus-m_<input>.yml``.

    .venv/bin/python bench/loader.py [--rounds 2] [--sizes 1920x1080,4000x3000] [--inputs 416,320]
                                     [--images 96,48] [--no-cache] [--out FILE]

The official side is ``bench/official_loader.py`` in its environment. Ours: ``gpu`` (what a CUDA trainer
receives), ``cpu`` (the network's input), ``gpu_image`` (decoded at the image's reduction, as cached),
``before`` (the pipeline before the fast path) and ``decode`` (the decode alone: the floor). ``one_core``:
one process pinned to a CPU, the first batch untimed, by wall clock and CPU time (``one_core_cpu_time``);
``all_cores``: a DataLoader, one worker per CPU, the second epoch; ``cache_images_ours_gpu``: ram/disk at
416. Rounds alternate which side runs first; ratios are per round, their median reported. ``gpu_side``:
the rate a GPU trainer takes (``bench/results/gpu.json``). Prints the JSON report.
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

from bench import _common as c  # noqa: E402

CONFIGS = {416: REPO / "config" / "nanodet-plus-m_416.yml", 320: REPO / "config" / "nanodet-plus-m_320.yml"}
UNIQUE_IMAGES = 4  # per size; the rest of the set are copies (same decode cost, less to generate)
JPEG_QUALITY, BATCH = 90, 16  # BATCH: the training template's default
CLASSES = ("a", "b", "c")
VARIANTS = ["gpu", "cpu", "gpu_image", "before", "decode"]  # ours, on one core
CACHE_CASES = (
    ("one_core_ram", "single", "ram"),
    ("one_core_disk", "single", "disk"),
    ("all_cores_ram", "loader", "ram"),
)
DECODE_KEYS = [(k, f"ceiling_at_decode_floor_{k}") for k in ("vs_official", "vs_official_per_round")]
DECODE_KEYS += [("images_per_s", "decode_floor_images_per_s")]


def make_set(root: Path, size: tuple[int, int], count: int) -> dict:
    """``count`` JPEGs of ``size`` (``UNIQUE_IMAGES`` distinct, copied), 5 boxes each, COCO json; made
    once per recipe under ``root``."""
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
        image = c.photo_like(rng, width, height)
        cv2.imwrite(str(out / "images" / f"{i:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    images, annotations = [], []
    for i in range(count):
        if i >= UNIQUE_IMAGES:
            shutil.copyfile(out / "images" / f"{i % UNIQUE_IMAGES:04d}.jpg", out / "images" / f"{i:04d}.jpg")
        images.append({"id": i + 1, "file_name": f"{i:04d}.jpg", "width": width, "height": height})
        for j in range(5):
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1 + j % len(CLASSES)}
            bbox = [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]
            annotations.append(ann | {"bbox": bbox, "area": round(w * h, 2), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name, "supercategory": "thing"} for i, name in enumerate(CLASSES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(coco))
    files = sorted((out / "images").glob("*.jpg"))[:UNIQUE_IMAGES]
    mean_bytes = sum(f.stat().st_size for f in files) / len(files)
    facts = {"img_path": str(out / "images"), "ann_path": str(out / "annotations.json"), "size": list(size)}
    facts |= {"images": count, "distinct_images": len(files), "jpeg_quality": JPEG_QUALITY}
    facts |= {"mean_file_mib": round(mean_bytes / 2**20, 3)}
    facts |= {"bits_per_pixel": round(8 * mean_bytes / (width * height), 3)}
    (out / "facts.json").write_text(json.dumps(facts))
    (out / "recipe.json").write_text(json.dumps(recipe))
    c.log(f"generated {count} {width}x{height} images -> {out}")
    return facts


def rates(seconds: float, cpu_seconds: float, images: int) -> dict:
    per_s = {"images_per_s": round(images / seconds, 3), "ms_per_image": round(1e3 * seconds / images, 2)}
    per_cpu = {
        "cpu_images_per_s": round(images / cpu_seconds, 3),
        "cpu_ms_per_image": round(1e3 * cpu_seconds / images, 2),
    }
    return per_s | per_cpu | {"timed_images": images}


def decode_floor(job: dict, dataset) -> dict:
    """Read, header and decode at each draw's reduction: the one-core jobs' images and draws."""
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
        if i >= batch:  # the first batch untimed
            seconds += time.perf_counter() - begin
            cpu_seconds += time.process_time() - cpu_begin
            factors.append(factor)
    counts = {str(k): factors.count(k) for k in sorted(set(factors))}
    return rates(seconds, cpu_seconds, count - batch) | {"factors": counts}


def one_core(job: dict, dataset) -> dict:
    from nanodet.data.coco_dataset import collate_detection, collate_finished

    collate, batch, epochs = collate_detection, job["batch"], []
    collate = collate_finished if job["variant"] == "cpu" else collate_detection
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
        train = cfg.data.train.model_copy(update={"img_path": job["img_path"], "ann_path": job["ann_path"]})
        variant = job["variant"]
        flags = {"reference": variant == "before", "decode_per_draw": variant != "gpu_image"}
        dataset = build_dataset(train, train=True, seed=0, cache_images=job["cache"], **flags)
        if variant == "decode":
            out = decode_floor(job, dataset)
        else:
            out = one_core(job, dataset) if job["mode"] == "single" else all_cores(job, cfg, dataset)
        if dataset.cache is not None:
            out["cached_images"] = dataset.cache.stored()
            dataset.cache.close()
        results.append({**job, **out})
    print("\n" + json.dumps(results))


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
    key = "compute_images_per_s"
    got = {k: v[key] for k, v in runs.items() if isinstance(v, dict) and key in v}
    if not got:
        return {"not_measured": f"{path} has no train runs"}
    gpus, most = report.get("header", {}).get("gpus"), max(got.values())
    return {"source": str(path), "gpus": gpus, "compute_images_per_s": got, "must_feed_images_per_s": most}


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _find(results: list[dict] | None, **keys) -> dict | None:
    return next((it for it in results or [] if all(it.get(k) == v for k, v in keys.items())), None)


def _rate(item: dict | None, epoch: int | None = None, field: str = "images_per_s") -> float | None:
    """images/s of a job (by the wall clock, or ``cpu_images_per_s``): of the run or of one epoch."""
    if item is None or "error" in item:
        return None
    if epoch is None:
        return item.get(field)
    return item["epochs"][epoch][field] if "epochs" in item else None


def _compare(ours: list, official: list, label: str) -> dict:
    """The median over rounds, and ours / official within each round then its median."""
    ratios = [o / f for o, f in zip(ours, official) if o and f]
    out = {f"{label}_images_per_s": median(ours), f"{label}_vs_official": median(ratios)}
    return out | {f"{label}_vs_official_per_round": [round(x, 3) for x in ratios]}


def summary(rounds: list[dict], sets: dict, inputs: list[int]) -> dict:
    """Per set and input: one core and all cores (second epoch), each variant against the official
    of the same round; the cache's first and second epochs (input 416)."""
    out = {}
    for name in sets:
        for size in inputs:
            key, row, official_rates = {"set": name, "input": size}, {}, {}
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
                    for old, new in DECODE_KEYS:
                        part[new] = part.pop(f"ours_decode_{old}")
                row[label] = part
            if size == 416 and any("ours_cache" in r for r in rounds):
                cache: dict = {}
                for label, mode, kind in CACHE_CASES:
                    items = [_find(r.get("ours_cache"), mode=mode, cache=kind, **key) for r in rounds]
                    cache[label] = {"epoch1_images_per_s": median([_rate(it, 0) for it in items])}
                    cache[label] |= _compare([_rate(it, 1) for it in items], official_rates[mode], "epoch2")
                    cache[label]["cached_images"] = [it.get("cached_images") for it in items if it]
                row["cache_images_ours_gpu"] = cache
            out[f"{name}@{size}"] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="1920x1080,4000x3000")
    parser.add_argument("--inputs", default="416,320")
    parser.add_argument("--images", default="96,48", help="images per set, one count per size")
    parser.add_argument("--no-cache", action="store_true", help="skip the cache_images measurements")
    parser.add_argument("--out", type=Path, default=c.RESULTS / "loader.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args.child)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    inputs, workers, data_dir = (
        [int(v) for v in args.inputs.split(",")],
        c.available_cores(),
        Path(tempfile.gettempdir()),
    )
    counts = [int(n) for n in args.images.split(",")]
    sets = {f"{w}x{h}": make_set(data_dir / "nanodet-bench-loader", (w, h), n) for (w, h), n in zip(sizes, counts)}
    one_cpu = sorted(os.sched_getaffinity(0))[-1]
    commands = {
        "official": c.official_command(REPO / "bench" / "official_loader.py"),
        "ours": [sys.executable, str(Path(__file__).resolve()), "--child"],
    }

    def jobs(mode: str, variants: list[str], cache: str = "none", only: tuple | int | None = None) -> list[dict]:
        single, epochs = mode == "single", 2 if (mode == "loader" or cache != "none") else 1
        common = {
            "mode": mode,
            "workers": 0 if single else workers,
            "epochs": epochs,
            "cpu": one_cpu if single else None,
        }
        return [
            {"set": name, "input": size, "variant": variant, "config": str(CONFIGS[size])}
            | {"img_path": facts["img_path"], "ann_path": facts["ann_path"], "batch": BATCH, "images": facts["images"]}
            | common
            | {"cache": cache}
            for name, facts in sets.items()
            for size in inputs
            for variant in variants
            if only is None or only in ((name, size), size)
        ]

    rounds: list[dict] = []
    pairs = [(name, size) for name in sets for size in inputs]
    for r in range(args.rounds):
        c.log(f"round {r + 1}/{args.rounds}")
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
                c.log(f"  {side} {mode} {group or 'all'}: {time.perf_counter() - start:.1f}s")
        if not args.no_cache:
            start = time.perf_counter()
            todo = [j for cache in ("ram", "disk") for j in jobs("single", ["gpu"], cache, only=416)]
            result["ours_cache"] = run_jobs(commands["ours"], todo + jobs("loader", ["gpu"], "ram", only=416))
            c.log(f"  ours cache: {time.perf_counter() - start:.1f}s")
        rounds.append(result)
    report = {
        "benchmark": "training input pipeline, ours against the official NanoDet's, to the batch the trainer receives"
    }
    report |= c.host_info() | {"batch": BATCH, "workers_all_cores": workers, "sets": sets}
    report["configs"] = {str(k): str(v.relative_to(REPO)) for k, v in CONFIGS.items() if k in inputs}
    report["official"] = "measured, interleaved" if commands["official"] else "not measured: no official harness"
    report |= {"gpu_side": gpu_rate(c.RESULTS / "gpu.json"), "summary": summary(rounds, sets, inputs), "rounds": rounds}
    c.print_report(report, args.out, indent=1)


if __name__ == "__main__":
    main()
