"""Training throughput of NanoDet-Plus-m-320 (3 classes) on a synthetic shapes dataset.

    .venv/bin/python bench/train.py [--quick] [--workers 2] [--batches 8 32] [--threads N]

Prints ONE JSON object on stdout (progress on stderr). For each configuration (CPU fp32,
and CUDA with AMP ``device.precision: 16`` when CUDA is available) x batch size, a fresh
subprocess builds the library's ``Trainer`` (real 320x320 input, the official train
augmentations, ``workers_per_gpu`` loader workers) and drives the library's own
``Trainer.run_step(batch, epoch=0)``: epoch 0 is before ``detach_epoch`` (10), so the aux
branch (aux_fpn + aux_head) is active and back-propagates into the backbone as in the first
epochs of a real run. After ``--warmup`` steps (3; ``--quick``: 1), ``--steps`` steps (12;
``--quick``: 2, both batch sizes kept) are measured:

* ``images_per_s`` / ``ms_per_step``: wall time per step including waiting for data;
* ``compute_ms_per_step``: ``run_step`` alone (forward, loss, backward, clip, optimizer,
  EMA), split into forward / loss (assigner + loss terms) / optimizer / EMA / the rest
  (backward, grad clip, zero_grad, ``.item()``s) by timing wrappers around those calls;
* ``data_wait_share``: the time blocked in ``next(loader)`` over the total, and
  ``data_pipeline_cpu_ms_per_image``: the CPU cost of read + augment + collate per image
  (measured afterwards in the main process), the work the workers must hide;
* peak memory: ``ru_maxrss`` of the fresh subprocess (and of its largest loader worker)
  on CPU; ``torch.cuda.max_memory_allocated`` on CUDA;
* ``cpu_cores_used``: CPU time over wall time during the measured steps of the training
  process, of its loader workers and of every other process on the machine (from
  /proc/stat); on a 2-core machine shared with other jobs, ``other_processes`` near or
  above 1 means the numbers are contended and OpenMP threads were pre-empted (spin-waiting
  intra-op threads then make 2 threads much slower than 1: try ``OMP_NUM_THREADS=1``).

The official reference: one official training step of Plus-m-320 at batch 8 takes ~1160 ms
(forward+loss 390, backward 740), the official NanoDet code (RangiLyu/nanodet) measured on a
2-core CPU of this class with torch 2.13, as recorded in the project's model notes; it is a
fixed number, not measured in the same run as ours.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    available_cores,
    default_threads,
    host_info,
    log,
    make_dataset,
    set_threads,
    synthetic_config,
)

CONFIG = "nanodet-plus-m_320.yml"
INPUT = (320, 320)
OFFICIAL = {
    "source": "the official NanoDet code (RangiLyu/nanodet) measured on a 2-core CPU of this class with torch 2.13, "
    "from the project's model notes; a fixed number, not measured in the same run",
    "what": "one official training step, NanoDet-Plus-m-320, batch 8, CPU (2 cores), official PyTorch code",
    "ms_per_step": 1160.0,
    "forward_loss_ms": 390.0,
    "backward_ms": 740.0,
}


# --- the measuring subprocess ---------------------------------------------------------------


class _Timed:
    """Wraps a callable; accumulates its wall time (synchronising CUDA around it)."""

    def __init__(self, fn, sync) -> None:
        self.fn, self.sync, self.total = fn, sync, 0.0

    def __call__(self, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.sync()
        self.total += time.perf_counter() - start
        return out


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, from /proc (0 if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _system_busy_s() -> float | None:
    """CPU seconds all processes of the machine have used since boot (/proc/stat), or None."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _worker_pids(loader) -> list[int]:
    iterator = getattr(loader, "_iterator", None)
    return [w.pid for w in getattr(iterator, "_workers", []) if w.pid]


def _shutdown_workers(loader) -> None:
    """Stop persistent loader workers so their peak RSS shows in RUSAGE_CHILDREN."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()  # private API, but the only way to join persistent workers
    loader._iterator = None


def measure(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import torch

    from nanodet.config import parse_config
    from nanodet.engine.distributed import DistContext
    from nanodet.engine.trainer import Trainer

    threads = set_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    if cuda and device.index is None:
        device = torch.device("cuda", 0)
    if cuda:
        torch.cuda.set_device(device)
    cfg = parse_config(spec["config"], "<bench>")
    batch_size, warmup, steps = spec["batch"], spec["warmup"], spec["steps"]

    start = time.perf_counter()
    trainer = Trainer.from_config(cfg, spec["work_dir"], DistContext(device=device), seed=0)
    build_s = time.perf_counter() - start
    rss_after_build = _rss_mb()
    assert trainer.model.has_aux and 0 < trainer.model.detach_epoch, "aux branch must be active at epoch 0"

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    parts = {
        "forward": _Timed(trainer.train_module, sync),
        "loss": _Timed(trainer.criterion, sync),
        "optimizer": _Timed(trainer.scaler.step, sync),
    }
    trainer.train_module = parts["forward"]
    trainer.criterion = parts["loss"]
    trainer.scaler.step = parts["optimizer"]
    if trainer.ema is not None:
        parts["ema"] = _Timed(trainer.ema.update, sync)
        trainer.ema.update = parts["ema"]

    loader = trainer.train_loader
    epoch = 0
    loader.sampler.set_epoch(epoch)
    it = iter(loader)
    waits: list[float] = []
    computes: list[float] = []
    walls: list[float] = []
    losses: list[float] = []
    cpu0 = wall0 = sys0 = None
    workers0: dict[int, float] = {}
    snap: dict[str, float] = {}
    for i in range(warmup + steps):
        if i == warmup:  # measurement starts: reset the split timers and the CPU clock
            sync()
            snap = {k: t.total for k, t in parts.items()}
            workers0 = {pid: _proc_cpu_s(pid) for pid in _worker_pids(loader)}
            sys0 = _system_busy_s()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        batch = None
        while batch is None:
            try:
                batch = next(it)
            except StopIteration:  # dataset smaller than the run: next epoch (real training does that too)
                epoch += 1
                loader.sampler.set_epoch(epoch)
                it = iter(loader)
        t1 = time.perf_counter()
        out = trainer.run_step(batch, 0)  # epoch 0 for the model: aux branch attached
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            waits.append(t1 - t0)
            computes.append(t2 - t1)
            walls.append(t2 - t0)
        losses.append(out["loss"])
        log(
            f"  [{spec['device']} b{batch_size}] step {i + 1}/{warmup + steps}"
            f"{' (warm-up)' if i < warmup else ''}: data {1e3 * (t1 - t0):.0f} ms, step {1e3 * (t2 - t1):.0f} ms,"
            f" loss {out['loss']:.3f}"
        )
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    sys1 = _system_busy_s()
    worker_cpu = sum(_proc_cpu_s(pid) - c for pid, c in workers0.items())
    others = (sys1 - sys0 - cpu - worker_cpu) / wall if sys0 is not None and sys1 is not None else None
    split = {f"{k}_ms": 1e3 * (t.total - snap[k]) / steps for k, t in parts.items()}
    compute_ms = 1e3 * statistics.fmean(computes)
    split["backward_clip_other_ms"] = compute_ms - sum(split.values())

    result = {
        "device": spec["device"],
        "precision": cfg.device.precision,
        "amp_dtype": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else None,
        "batch": batch_size,
        "workers": cfg.device.workers_per_gpu,
        "threads": threads,
        "warmup_steps": warmup,
        "measured_steps": steps,
        "images_per_s": round(batch_size * steps / wall, 2),
        "ms_per_step": round(1e3 * wall / steps, 1),
        "ms_per_step_median": round(1e3 * statistics.median(walls), 1),
        "ms_per_step_min": round(1e3 * min(walls), 1),
        "ms_per_step_stdev": round(1e3 * statistics.stdev(walls), 1) if len(walls) > 1 else None,
        "compute_ms_per_step": round(compute_ms, 1),
        "compute_ms_per_step_min": round(1e3 * min(computes), 1),
        "compute_split_ms": {k: round(v, 1) for k, v in split.items()},
        "ms_per_image": round(1e3 * wall / steps / batch_size, 2),
        "data_wait_ms_per_step": round(1e3 * sum(waits) / steps, 1),
        "data_wait_share": round(sum(waits) / wall, 4),
        # CPU use during the measured steps, in cores: the training process, its loader workers,
        # and every other process of the machine (what this run competed with).
        "cpu_cores_used": {
            "main": round(cpu / wall, 2),
            "loader_workers": round(worker_cpu / wall, 2),
            "other_processes": round(max(others, 0.0), 2) if others is not None else None,
        },
        "loss_first_last": [round(losses[0], 3), round(losses[-1], 3)],
        "trainer_build_s": round(build_s, 2),
    }
    if cuda:
        result["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["peak_mem_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
        result["peak_mem_what"] = "torch.cuda.max_memory_allocated over the measured steps"
    del it
    _shutdown_workers(loader)
    # What the loader workers must hide: read + augment + collate of one batch, on one core here.
    from nanodet.data.coco_dataset import collate_detection

    t0 = time.process_time()
    n = min(batch_size, len(trainer.train_set))
    collate_detection([trainer.train_set[(i, 99)] for i in range(n)])
    result["data_pipeline_cpu_ms_per_image"] = round(1e3 * (time.process_time() - t0) / n, 2)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    key = "host_peak_rss_mb" if cuda else "peak_mem_mb"
    result[key] = round(self_peak, 1)
    if not cuda:
        result["peak_mem_what"] = "ru_maxrss of the fresh training process (model, EMA copy, optimizer, activations)"
    result["rss_after_build_mb"] = round(rss_after_build, 1) if rss_after_build else None
    result["worker_peak_rss_mb"] = round(worker_peak, 1) if cfg.device.workers_per_gpu > 0 else None
    return result


# --- the driver ------------------------------------------------------------------------------


def run_child(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child"],
        input=json.dumps(spec),
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"device": spec["device"], "batch": spec["batch"], "error": f"subprocess exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps (both batch sizes kept): < 2 min on 2 cores")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--workers", type=int, default=2, help="device.workers_per_gpu (loader worker processes)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured steps first (default 3, quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (default 12, quick 2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS, else the idle cores)"
    )
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the synthetic data here (default: temp dir)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(sys.stdin.read())
        print(json.dumps(measure(spec)), flush=True)
        return

    import torch

    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    steps = args.steps if args.steps is not None else (2 if args.quick else 12)
    if steps < 1:
        parser.error("--steps must be >= 1")
    threads, threads_why = (args.threads, "--threads") if args.threads else default_threads()
    set_threads(threads)
    devices = args.devices or (["cpu", "cuda:0"] if torch.cuda.is_available() else ["cpu"])
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    if threads > available_cores():
        log(f"warning: {threads} threads on {available_cores()} cores")

    with tempfile.TemporaryDirectory(prefix="nanodet-bench-train-") as tmp:
        root = args.data_dir or Path(tmp)
        # Enough images that no measured step repeats an epoch; COCO-like 480x360..640x480 JPEGs.
        num_train = max(args.batches) * (warmup + steps)
        data_spec = {"image_size": [[480, 360], [640, 480]], "min_size": 24, "max_size": 200, "max_objects": 6}
        train = make_dataset(
            root,
            "train",
            num_train,
            data_spec["image_size"],
            seed=0,
            min_size=data_spec["min_size"],
            max_size=data_spec["max_size"],
            max_objects=data_spec["max_objects"],
        )
        val = make_dataset(
            root,
            "val",
            8,
            data_spec["image_size"],
            seed=1000,
            min_size=data_spec["min_size"],
            max_size=data_spec["max_size"],
            max_objects=data_spec["max_objects"],
        )
        results = []
        for device in devices:
            for batch in args.batches:
                precision = 16 if device.startswith("cuda") else 32
                cfg = synthetic_config(
                    CONFIG,
                    train,
                    val,
                    INPUT,
                    batch,
                    args.workers,
                    Path(tmp) / "work",
                    {"device": {"precision": precision}},
                )
                spec = {
                    "device": device,
                    "batch": batch,
                    "warmup": warmup,
                    "steps": steps,
                    "threads": threads,
                    "work_dir": str(Path(tmp) / "work"),
                    "config": cfg.model_dump(mode="json"),
                }
                log(f"measuring {device} batch {batch} ({warmup} warm-up + {steps} steps, {args.workers} workers)")
                t0 = time.perf_counter()
                res = run_child(spec, timeout=3600)
                res["subprocess_s"] = round(time.perf_counter() - t0, 1)
                results.append(res)
                if "error" not in res:
                    log(
                        f"  -> {res['images_per_s']} img/s, {res['ms_per_step']} ms/step "
                        f"(compute {res['compute_ms_per_step']}), data wait {100 * res['data_wait_share']:.1f}%,"
                        f" peak {res.get('peak_mem_mb')} MB"
                    )

    ours = next((r for r in results if r.get("device") == "cpu" and r.get("batch") == 8 and "error" not in r), None)
    comparison = dict(OFFICIAL)
    if ours:
        comparison.update(
            {
                "ours_ms_per_step": ours["ms_per_step"],
                "ours_compute_ms_per_step": ours["compute_ms_per_step"],
                "ours_forward_loss_ms": round(
                    ours["compute_split_ms"]["forward_ms"] + ours["compute_split_ms"]["loss_ms"], 1
                ),
                "ours_threads": ours["threads"],
                "ratio_compute_vs_official": round(ours["compute_ms_per_step"] / OFFICIAL["ms_per_step"], 3),
                "ratio_wall_vs_official": round(ours["ms_per_step"] / OFFICIAL["ms_per_step"], 3),
            }
        )
    ok = [r for r in results if "error" not in r]
    summary = [
        {
            k: r[k]
            for k in (
                "device",
                "batch",
                "images_per_s",
                "ms_per_step",
                "compute_ms_per_step",
                "data_wait_share",
                "peak_mem_mb",
            )
            if k in r
        }
        for r in ok
    ]
    others = [r["cpu_cores_used"]["other_processes"] for r in ok if r["cpu_cores_used"]["other_processes"] is not None]
    noise = {
        "other_processes_cores_max": max(others) if others else None,
        "step_time_cv_max": max(
            (round(r["ms_per_step_stdev"] / r["ms_per_step"], 3) for r in ok if r["ms_per_step_stdev"] is not None),
            default=None,
        ),
        "note": "other_processes = cores used by other jobs while measuring; cv = stdev/mean of step times",
    }
    report = {
        "benchmark": "train_throughput",
        "model": "nanodet-plus-m_320",
        "config": f"config/{CONFIG} (3 classes, official augmentations)",
        "input_size": list(INPUT),
        "aux_branch": "active, not detached (run_step epoch 0 < detach_epoch 10)",
        "quick": args.quick,
        "settings": {
            "workers_per_gpu": args.workers,
            "threads": threads,
            "threads_from": threads_why,
            "warmup_steps": warmup,
            "measured_steps": steps,
            "batches": args.batches,
            "devices": devices,
            "dataset": {"train_images": num_train, **data_spec, "classes": 3, "format": "COCO json + JPEG"},
        },
        "summary": summary,
        "baseline_official_cpu_b8": comparison,
        "noise": noise,
        "results": results,
        "host": {**host_info(), "loadavg_before": load_before},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
