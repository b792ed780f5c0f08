"""CUDA measurements of NanoDet-Plus-m-416, each beside its same-run baseline (run through bench/gpu.sh).

    bench/gpu.sh [--quick] [--out bench/results/gpu.json]   # a CUDA machine: a few minutes on one H100
    bench/gpu.sh --device cpu --quick                       # the same code on the CPU (tests/test_bench_gpu.py)

``train``: fp32 (baseline) against AMP training steps (``compute_images_per_s``: what bench/loader.py must feed);
``infer``: the executor's folder path, pin_memory off (baseline) against on. Prints ONE JSON object; ``--out`` is
rewritten after every measurement. Exit 2: no CUDA.
"""

import argparse
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from functools import partial
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench._common import CLASSES, available_cores, host_info, log, make_dataset, synthetic_config  # noqa: E402

CONFIG = "nanodet-plus-m_416.yml"
CONF_THRES = 0.35  # the executor's default conf_thres for infer results
NO_PRETRAIN = {"model": {"arch": {"backbone": {"pretrain": False}}}}
FOLDER_SIZES = ((640, 480), (1280, 960))
PLAN = {"train_batches": [32, 96], "warmup": 5, "steps": 15, "train_images": 512, "folder_images": 512}
QUICK = {"train_batches": [32], "warmup": 2, "steps": 3, "train_images": 160, "folder_images": 64, "repeats": 1}
QUICK_CPU = QUICK | {"train_batches": [2], "warmup": 1, "steps": 2, "train_images": 8, "folder_images": 8}
QUICK_CPU |= {"folder_batch": 4, "workers": 1}


def header(device: str) -> dict:
    """Versions, GPUs and CPUs (``gpus`` is read by ``bench/loader.py``)."""
    cuda = torch.cuda.is_available()
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())] if cuda else []
    try:
        nccl = torch.cuda.nccl.version() if cuda else None  # a tuple; an int in old releases
    except Exception:  # noqa: BLE001 - a build without NCCL
        nccl = None
    out = host_info() | {"device_asked": device, "cuda": torch.version.cuda}
    out |= {"cudnn": torch.backends.cudnn.version() if cuda else None}
    out |= {"nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl, "cpu_count": os.cpu_count()}
    out |= {"gpu_count": len(props), "gpus": [p.name for p in props]}
    out["gpu_memory_gib"] = [round(p.total_memory / 2**30, 1) for p in props]
    return out | {"bf16_supported": torch.cuda.is_bf16_supported() if cuda else None}


def guarded(what: str, fn) -> dict:
    """``fn()``, or ``{"error": ...}`` with the tail of its traceback: the other measurements still run."""
    log(f"[gpu.py] {what} ...")
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001
        log(f"[gpu.py] {what} failed: {type(err).__name__}: {err}")
        tail = "".join(traceback.format_exception(err)[-3:])[-2000:]
        result = {"error": f"{type(err).__name__}: {err}"[:2000], "traceback_tail": tail}
    gc.collect()  # the trainer's loader workers go now, not during the next measurement
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result | {"elapsed_s": round(time.perf_counter() - start, 1)}


def rate(count: float, seconds: float) -> float:
    return float(f"{count / seconds:.4g}")  # 4 significant digits: 0.75 images/s does not read 0.7


def ratio(a: dict, b: dict, key: str = "images_per_s") -> float | None:
    x, y = a.get(key), b.get(key)
    return round(x / y, 3) if isinstance(x, int | float) and isinstance(y, int | float) and y > 0 else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_train(plan: dict, tmp: Path, device: torch.device, batch: int, amp: bool) -> dict:
    from nanodet.engine.distributed import DistContext
    from nanodet.engine.trainer import Trainer

    shapes = {"image_size": [[480, 360], [640, 480]], "min_size": 24, "max_size": 200, "max_objects": 6}
    train = make_dataset(tmp, "train", plan["train_images"], seed=0, **shapes)
    val = make_dataset(tmp, "val", 4, seed=999, **shapes)
    overrides = {"device": {"precision": 16 if amp else 32}} | NO_PRETRAIN
    cfg = synthetic_config(CONFIG, train, val, (416, 416), batch, plan["workers"], tmp / "work", overrides)
    trainer = Trainer.from_config(cfg, tmp / "work", DistContext(device=device), seed=0)

    def endless_batches(loader):
        for epoch in range(10**9):
            loader.sampler.set_epoch(epoch)
            yield from (batch for batch in loader if batch is not None)

    batches, waits, computes, losses = endless_batches(trainer.train_loader), [], [], []
    for i in range(plan["warmup"] + plan["steps"]):
        if i == plan["warmup"]:
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
        t0 = time.perf_counter()
        item = next(batches)
        t1 = time.perf_counter()
        losses.append(trainer.run_step(item, 0)["loss"])  # epoch 0 < detach_epoch: the aux branch trains too
        sync(device)
        if i >= plan["warmup"]:
            waits.append(t1 - t0)
            computes.append(time.perf_counter() - t1)
    wall, steps = time.perf_counter() - start, plan["steps"]
    batches.close()
    out = {"batch": batch, "precision": cfg.device.precision}
    out["amp_dtype"] = str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else None
    out |= {"pin_memory": trainer.train_loader.pin_memory, "workers": plan["workers"]}
    out |= {"images_per_s": rate(batch * steps, wall), "ms_per_step": round(1e3 * wall / steps, 2)}
    out |= {"compute_images_per_s": rate(batch * steps, sum(computes))}
    out |= {"compute_ms_per_step_median": round(1e3 * statistics.median(computes), 2)}
    out |= {"data_wait_share": round(sum(waits) / wall, 4), "timed_steps": steps}
    out["loss_first_last"] = [round(losses[0], 4), round(losses[-1], 4)]
    cuda = device.type == "cuda"
    return out | {"peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None}


def part_train(plan: dict, tmp: Path, device: torch.device, save) -> dict:
    out = {"config": f"config/{CONFIG}, {len(CLASSES)} classes, random init, official augmentations", "runs": {}}
    for batch in plan["train_batches"]:
        for amp in (False, True):
            key = f"{'amp' if amp else 'fp32'}_b{batch}"
            if amp and device.type != "cuda":
                out["runs"][key] = {"skipped": "not applicable on cpu: AMP is CUDA-only here"}
                continue
            out["runs"][key] = guarded(f"train {key}", partial(measure_train, plan, tmp, device, batch, amp))
            save()
    runs = out["runs"]
    out["amp_speedup"] = {f"b{b}": ratio(runs[f"amp_b{b}"], runs[f"fp32_b{b}"]) for b in plan["train_batches"]}
    return out


def _folder_chunk(job: tuple[str, int, int]) -> None:
    from nanodet.data.synthetic import make_synthetic_coco

    root, index, count = job
    make_synthetic_coco(Path(root) / f"c{index}", count, FOLDER_SIZES, CLASSES, seed=4242 + index, max_size=320)


def folder_pass(predictor, paths: list[Path], batch: int, workers: int, pin: bool) -> dict:
    """The executor's path over the folder (``ImageFileDataset``, ``predict_batch``), loader start-up included."""
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches

    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    done, found, waited = 0, 0, 0.0
    start = tick = time.perf_counter()
    for item in inference_batches(dataset, batch, workers, pin_memory=pin):
        waited += time.perf_counter() - tick
        if item.images is not None:
            dets = predictor.predict_batch(item.images, item.warp_matrices, item.sizes)
            done, found = done + len(item.paths), found + sum(len(d.above(CONF_THRES)) for d in dets)
        tick = time.perf_counter()
    sync(predictor.device)
    elapsed = time.perf_counter() - start
    out = {"images": done, "images_per_s": rate(done, elapsed), "data_wait_share": round(waited / elapsed, 4)}
    return out | {"detections_per_image": round(found / max(done, 1), 2)}


def part_infer(plan: dict, tmp: Path, device: torch.device, save) -> dict:
    from bench._common import random_detector
    from nanodet.config import load_config
    from nanodet.inference.predictor import Predictor
    from nanodet.weights.checkpoint import save_pth

    cfg = load_config(REPO / "config" / CONFIG).with_classes(list(CLASSES)).merged(NO_PRETRAIN)
    save_pth(random_detector(cfg), tmp / "weights.pth")
    predictor = Predictor(cfg, tmp / "weights.pth", device=device, backend="torch")
    count = plan["folder_images"]
    chunks = max(1, min(available_cores(), math.ceil(count / 16)))  # generated in parallel
    with Pool(chunks) as pool:
        pool.map(_folder_chunk, [(str(tmp / "folder"), i, math.ceil(count / chunks)) for i in range(chunks)])
    paths = sorted((tmp / "folder").glob("c*/images/*.jpg"))[:count]
    settings = {"pin_off": False, "pin_on": True} if device.type == "cuda" else {"pin_off": False}
    passes: dict[str, list[dict]] = {key: [] for key in settings}
    for _ in range(plan["repeats"]):
        for key, pin in settings.items():
            passes[key].append(folder_pass(predictor, paths, plan["folder_batch"], plan["workers"], pin))
    out = {"backend": predictor.backend, "device": str(predictor.device), "input_size": list(predictor.input_wh)}
    out |= {"batch": plan["folder_batch"], "workers": plan["workers"], "conf_thres_for_counts": CONF_THRES}
    for key, got in passes.items():
        best = max(got, key=lambda r: r["images_per_s"])
        out[key] = best | {"images_per_s_all_passes": [r["images_per_s"] for r in got]}
    out.setdefault("pin_on", {"skipped": "not applicable on cpu: pin_memory speeds host-to-GPU copies only"})
    out["pin_on_over_off"] = ratio(out["pin_on"], out["pin_off"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps and images (a smoke run)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--out", type=Path, help="also write the report here, after every measurement")
    args = parser.parse_args()
    parts = {"train": part_train, "infer": part_infer}
    report = {"benchmark": "bench/gpu.py", "quick": args.quick, "parts": list(parts), "header": header(args.device)}

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            (temp := args.out.with_suffix(".tmp")).write_text(json.dumps(report, indent=1) + "\n")
            temp.replace(args.out)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps(report | {"error": "CUDA not available"}, indent=1))
        return 2
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    start = time.perf_counter()
    plan = PLAN | {"folder_batch": 16, "repeats": 2, "workers": max(1, min(10, available_cores() - 2))}
    report["plan"] = plan | ((QUICK_CPU if device.type == "cpu" else QUICK) if args.quick else {})
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-gpu-") as tmp:
        for name, part in parts.items():
            report[name] = guarded(f"part {name}", partial(part, report["plan"], Path(tmp), device, save))
            save()
    report["wall_s"] = round(time.perf_counter() - start, 1)
    save()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
