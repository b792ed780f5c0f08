"""Peak memory of a mining + infer task against the number of candidates, through start.py.

    python bench/candidates_memory.py [--sizes 1000,10000] [--out bench/results/candidates_memory.json]
                                      [--baseline-repo DIR]

For each size, a workspace of that many small JPEG candidates (96x72 shapes, a few of them
missing and a few corrupt) runs as one task (ALDD mining and infer, CPU, one process) in a
fresh process of its own; its peak RSS comes from ``wait4`` (the task process; with
``--workers`` > 0 the largest of it and its data-loader workers). The report puts the growth
of the peak RSS between the smallest and the largest size beside the growth of the result
files: what the task keeps per candidate should be of the order of what it writes per
candidate, not of the detector's outputs.

``--baseline-repo`` runs the same workspaces with another checkout's start.py as well (an
older version, say: ``git archive <commit> | tar -x -C DIR``) and reports both.

This script's own process imports nothing heavy (the workspaces are made in a subprocess), so
the children's peak is not floored by the parent's RSS at fork time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle"]
RATE = re.compile(r"rank 0: (\d+) images in ([\d.]+) s")
INFER = re.compile(r"infer: (\d+) images, (\d+) boxes, (\d+) unreadable, (\d+) missing")


# --- the workspaces (run in a subprocess: torch, cv2 and the model stay out of this process) -------


def prepare(root: Path, sizes: list[int], input_size: int, bad: int, batch: int, workers: int, conf: float) -> None:
    """``root/assets`` (max(sizes) - bad good images, ``bad`` corrupt ones), ``root/models``, and
    per size ``root/in-<size>``: env.yaml, config.yaml, the index and links to the shared folders."""
    sys.path.insert(0, str(ROOT))
    import cv2
    import numpy as np
    import yaml

    from bench._common import random_detector
    from executor.workspace import write_env
    from nanodet.config import load_config, save_config
    from nanodet.data.synthetic import synthetic_image
    from nanodet.weights.checkpoint import save_pth

    models = root / "models"
    models.mkdir(parents=True)
    cfg = load_config(ROOT / "config" / "nanodet-plus-m_320.yml").with_classes(CLASSES)
    size = [input_size, input_size]
    cfg = cfg.merged({"data": {"train": {"input_size": size}, "val": {"input_size": size}}})
    save_pth(random_detector(cfg, seed=0, candidate_rate=0.01), models / "nanodet_model_best.pth", inference_only=True)
    save_config(cfg, models / "train_cfg.yml")

    good: list[str] = []
    for k in range(max(sizes) - bad):
        rng = np.random.default_rng([7, k])
        image, _, _ = synthetic_image(rng, size=(96, 72), class_names=CLASSES, max_objects=3, min_size=16, max_size=48)
        name = f"{k % 256:02x}/cand-{k:06d}.jpg"
        (root / "assets" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "assets" / name).write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        good.append(f"/in/assets/{name}")
    corrupt: list[str] = []
    for k in range(bad):
        name = f"bad/corrupt-{k:03d}.jpg"
        (root / "assets" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "assets" / name).write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
        corrupt.append(f"/in/assets/{name}")

    for n in sizes:
        in_dir = root / f"in-{n}"
        in_dir.mkdir()
        (in_dir / "assets").symlink_to(root / "assets")
        (in_dir / "models").symlink_to(models)
        missing = [f"/in/assets/gone/missing-{k:03d}.jpg" for k in range(bad)]
        rows = good[: n - 2 * bad]
        step = max(1, len(rows) // (2 * bad + 1))
        for k, path in enumerate(corrupt + missing):  # spread over the index
            rows.insert((k + 1) * step + k, path)
        (in_dir / "candidate-index.tsv").write_text("".join(f"{row}\n" for row in rows))
        write_env(in_dir, mining=True, infer=True)
        config = {
            "task_id": "t0000001bench",
            "class_names": CLASSES,
            "gpu_id": "",
            "gpu_count": 0,
            "model_params_path": ["nanodet_model_best.pth", "train_cfg.yml"],
            "run_mining": True,
            "run_infer": True,
            "mining_algorithm": "aldd",
            "conf_thres": conf,
            "batch_size_per_gpu": batch,
            "workers_per_gpu": workers,
            "pin_memory": False,
        }
        (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


# --- one task in a process of its own --------------------------------------------------------


def run_task(repo: Path, in_dir: Path, out: Path, env: dict[str, str]) -> dict:
    """start.py of ``repo`` on ``in_dir``: peak RSS (wait4), wall time, result sizes, warnings."""
    out.mkdir(parents=True)
    with open(out.parent / f"{out.name}.stdout", "w+") as stdout, open(out.parent / f"{out.name}.stderr", "w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(repo / "start.py"), "--in", str(in_dir), "--out", str(out)],
            stdout=stdout,
            stderr=err,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        stdout.seek(0)
        err.seek(0)
        text = stdout.read() + err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{repo}/start.py failed on {in_dir}:\n{text[-3000:]}")
    rows = sum(1 for line in (in_dir / "candidate-index.tsv").read_text().splitlines() if line)
    loop = RATE.search(text)
    infer = INFER.search(text)
    files = {name: (out / name).stat().st_size for name in ("result.tsv", "infer-result.json")}
    return {
        "candidates": rows,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "wall_s": round(wall, 1),
        "batch_loop_s": float(loop.group(2)) if loop else None,
        "result_bytes": files,
        "result_bytes_total": sum(files.values()),
        "boxes_reported": int(infer.group(2)) if infer else None,
        "unreadable": int(infer.group(3)) if infer else None,
        "missing": int(infer.group(4)) if infer else None,
        "warning_lines": sum(" WARNING " in line for line in text.splitlines()),
        "log_lines": len(text.splitlines()),
    }


def growth(runs: list[dict]) -> dict:
    """Peak RSS and result files from the smallest size to the largest, in bytes and per candidate."""
    small, large = runs[0], runs[-1]
    more = large["candidates"] - small["candidates"]
    rss = (large["peak_rss_mib"] - small["peak_rss_mib"]) * 2**20
    results = large["result_bytes_total"] - small["result_bytes_total"]
    return {
        "from_to_candidates": [small["candidates"], large["candidates"]],
        "peak_rss_growth_mib": round(rss / 2**20, 1),
        "result_files_growth_mib": round(results / 2**20, 2),
        "peak_rss_growth_per_candidate_bytes": round(rss / more),
        "result_bytes_per_candidate": round(results / more),
        "rss_growth_over_result_growth": round(rss / results, 2) if results else None,
    }


def host() -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cores_available": cores, "python": platform.python_version(), "loadavg_1_5_15": list(os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="candidate counts, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "candidates_memory.json")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="0: one process, whose peak is the task's")
    parser.add_argument("--bad", type=int, default=10, help="corrupt files, and as many missing ones, per size")
    parser.add_argument("--conf-thres", type=float, default=0.3)
    parser.add_argument("--baseline-repo", type=Path, help="another checkout to run the same workspaces with")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)  # internal: make the workspaces there
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.prepare:
        prepare(args.prepare, sizes, args.input_size, args.bad, args.batch, args.workers, args.conf_thres)
        return
    repos = {"this checkout": ROOT}
    if args.baseline_repo:
        repos["baseline"] = args.baseline_repo.resolve()
    with tempfile.TemporaryDirectory(prefix="candidates-memory-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--prepare", str(root), *sys.argv[1:]],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        prepared = round(time.perf_counter() - start, 1)
        print(f"workspaces for {sizes} ready in {prepared} s", file=sys.stderr, flush=True)
        no_weights = root / "no-weights"
        no_weights.mkdir()
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "NANODET_WEIGHTS_DIR": str(no_weights),
            "TORCH_HOME": str(no_weights),
        }
        report: dict = {
            "task": "mining (aldd) + infer in one task, CPU, 1 process, through start.py",
            "images": "96x72 JPEG shapes",
            "input_size": args.input_size,
            "batch_size_per_gpu": args.batch,
            "workers_per_gpu": args.workers,
            "conf_thres": args.conf_thres,
            "corrupt_and_missing_per_size": [args.bad, args.bad],
            "workspaces_prepared_s": prepared,
            "host": host(),
            "runs": {},
            "growth": {},
        }
        for label, repo in repos.items():
            runs = []
            for n in sizes:
                run = run_task(repo, root / f"in-{n}", root / f"out-{len(report['runs'])}-{n}", env)
                print(f"{label}, {n} candidates: {json.dumps(run)}", file=sys.stderr, flush=True)
                runs.append(run)
            report["runs"][label] = runs
            if len(runs) > 1:
                report["growth"][label] = growth(runs)
    report["note"] = (
        "peak_rss_mib: ru_maxrss of the task's process tree (wait4), the largest single process; "
        "peak_rss_growth_per_candidate_bytes is what each extra candidate costs at the peak, "
        "index paths and results included"
    )
    text = json.dumps(report, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
