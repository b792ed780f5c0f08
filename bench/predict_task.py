"""End-to-end images/s of the mining or infer task through start.py (files read included),
for 1 and 2 processes on CPU (GPUs when present), with the forward streams each process
ran. Shared by bench/infer_task.py and bench/mining_task.py; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATE = re.compile(r"rank (\d+): (\d+) images in ([\d.]+) s \(([\d.]+) images/s\), (\d+) stream\(s\)")


def trained_models(root: Path, input_size: int) -> Path:
    """A models folder as training leaves it (random weights: speed does not depend on them)."""
    from nanodet.config import load_config, save_config
    from nanodet.model import build_model
    from nanodet.weights.checkpoint import save_pth

    cfg = load_config(ROOT / "config" / "nanodet-plus-m_320.yml").with_classes(["circle", "square", "triangle"])
    size = [input_size, input_size]
    cfg = cfg.merged({"data": {"train": {"input_size": size}, "val": {"input_size": size}}})
    models = root / "models"
    models.mkdir(parents=True)
    save_pth(build_model(cfg.model.arch), models / "nanodet_model_best.pth", inference_only=True)
    save_config(cfg, models / "train_cfg.yml")
    return models


def measure(task: str, candidates: int, input_size: int, processes: list[int], batch: int, workers: int) -> dict:
    import torch
    import yaml

    from executor.workspace import make_predict_workspace

    gpus = torch.cuda.device_count()
    results = {
        "task": task,
        "candidates": candidates,
        "input_size": input_size,
        "batch_size_per_gpu": batch,
        "workers_per_gpu": workers,
        "device": "cuda" if gpus else "cpu",
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = trained_models(root, input_size)
        in_dir = make_predict_workspace(
            root / "in",
            models,
            candidates=candidates,
            mining=task == "mining",
            infer=task == "infer",
            batch_size_per_gpu=batch,
            workers_per_gpu=workers,
            size=((640, 480), (1280, 960)),
        )
        for n in processes:
            cfg = yaml.safe_load((in_dir / "config.yaml").read_text())
            if gpus:
                if n > gpus:
                    continue
                cfg.update(gpu_count=n, gpu_id=",".join(map(str, range(n))))
            else:
                cfg.update(cpu_processes=n)
            (in_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
            out = root / f"out{n}"
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // n))}
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, str(ROOT / "start.py"), "--in", str(in_dir), "--out", str(out)],
                capture_output=True,
                text=True,
                env=env,
            )
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
            ranks = [m.groups() for m in RATE.finditer(proc.stdout + proc.stderr)]
            loop = max(float(r[2]) for r in ranks)
            results["runs"].append(
                {
                    "processes": n,
                    "wall_s": round(wall, 2),
                    "images_per_s_end_to_end": round(candidates / wall, 2),
                    "images_per_s_loop": round(candidates / loop, 2),
                    "streams_per_process": int(ranks[0][4]),
                }
            )
    base = results["runs"][0]["images_per_s_loop"]
    for r in results["runs"]:
        r["speedup_vs_1_process"] = round(r["images_per_s_loop"] / base, 2)
    results["note"] = (
        "wall_s includes process start-up and model loading (~5 s per process set); "
        "images_per_s_loop is the steady-state batch loop, files read and decoded included"
    )
    return results


def run_task(in_dir: Path, out: Path, mining: bool, infer: bool, algorithm: str) -> tuple[float, float]:
    """One task through start.py: (wall seconds, batch-loop seconds)."""
    import yaml

    from executor.workspace import write_env

    write_env(in_dir, mining=mining, infer=infer)
    cfg = yaml.safe_load((in_dir / "config.yaml").read_text())
    cfg.update(run_mining=mining, run_infer=infer, mining_algorithm=algorithm)
    (in_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "start.py"), "--in", str(in_dir), "--out", str(out)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return wall, sum(float(m.group(3)) for m in RATE.finditer(proc.stdout + proc.stderr))


def measure_combined(candidates: int, input_size: int, batch: int, workers: int, algorithm: str, repeats: int) -> dict:
    """Mining alone, infer alone, and both in one task, on the same candidates; best of ``repeats``."""
    from executor.workspace import make_predict_workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        in_dir = make_predict_workspace(
            root / "in",
            trained_models(root, input_size),
            candidates=candidates,
            batch_size_per_gpu=batch,
            workers_per_gpu=workers,
            size=((640, 480), (1280, 960)),
        )
        runs: dict[str, list[tuple[float, float]]] = {"mining": [], "infer": [], "mining+infer": []}
        for r in range(repeats):
            for name, mining, infer in (("mining", True, False), ("infer", False, True), ("mining+infer", True, True)):
                runs[name].append(run_task(in_dir, root / f"out-{name}-{r}", mining, infer, algorithm))
    best = {name: (min(w for w, _ in v), min(loop for _, loop in v)) for name, v in runs.items()}
    separate_wall = best["mining"][0] + best["infer"][0]
    separate_loop = best["mining"][1] + best["infer"][1]
    return {
        "candidates": candidates,
        "input_size": input_size,
        "batch_size_per_gpu": batch,
        "workers_per_gpu": workers,
        "mining_algorithm": algorithm,
        "repeats": repeats,
        "wall_s": {name: round(b[0], 2) for name, b in best.items()},
        "loop_s": {name: round(b[1], 2) for name, b in best.items()},
        "baseline_wall_s (mining alone + infer alone)": round(separate_wall, 2),
        "combined_over_baseline_wall": round(best["mining+infer"][0] / separate_wall, 3),
        "combined_over_baseline_loop": round(best["mining+infer"][1] / separate_loop, 3),
        "note": "wall_s: the whole start.py process (start-up, model load, files read); loop_s: the batch loop",
    }


def main(task: str) -> None:
    parser = argparse.ArgumentParser(description=f"{task} task throughput")
    parser.add_argument("--candidates", type=int, default=128)
    parser.add_argument("--input-size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--quick", action="store_true", help="32 candidates")
    args = parser.parse_args()
    candidates = 32 if args.quick else args.candidates
    print(
        json.dumps(
            measure(
                task, candidates, args.input_size, [int(p) for p in args.processes.split(",")], args.batch, args.workers
            ),
            indent=1,
        )
    )
