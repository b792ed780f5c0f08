"""A whole training run, ours against the official trainer, side by side on the same data.

    .venv/bin/python bench/train_whole_run.py [--epochs 30] [--train 128] [--val 32] [--val-intervals 10]
                                              [--runs 1] [--threads 2] [--ref-dir ../shared/ref] [--out FILE]

What a user waits for: process start to the last evaluation (data loading, augmentation, evaluation every
``--val-intervals`` epochs and checkpoints included). Both sides train NanoDet-Plus-m-320 from random weights
(``backbone.pretrain: false``) on the same generated 3-class COCO set (320x320) with the same schedule:
batch 16, AdamW lr 0.001, warmup a tenth of the steps, cosine, ``detach_epoch`` at a third, EMA, grad clip
35, 2 loader workers, ``--threads`` threads. Ours: ``python -m nanodet train CONFIG``; the official (the
baseline): ``<ref-dir>/run.sh tools/train.py CONFIG`` in the official checkout (Lightning 1.9, CPU). Runs
alternate (ours, official, official, ours, ...) so the machine's drift hits both. Each side's mAP is its
best COCO mAP over the run's evaluations, as each trainer reports it. Prints ONE JSON object on stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import host_info, log, print_report  # noqa: E402

CONFIG = "nanodet-plus-m_320.yml"
CLASSES = ["circle", "square", "triangle"]
SIZE = 320
BATCH = 16


def make_data(root: Path, train: int, val: int) -> dict[str, dict]:
    from nanodet.data.synthetic import make_synthetic_coco

    splits = {}
    for name, count, seed in (("train", train, 0), ("val", val, 1000)):
        ann = make_synthetic_coco(
            root / name, count, image_size=(SIZE, SIZE), class_names=CLASSES, seed=seed, min_size=32, max_size=140
        )
        splits[name] = {"img_path": str(root / name / "images"), "ann_path": str(ann)}
    return splits


def schedule(epochs: int, train: int, val_intervals: int) -> dict:
    steps = epochs * max(train // BATCH, 1)
    return {
        "warmup_steps": max(steps // 10, 1),
        "detach_epoch": max(epochs // 3, 1),
        "total_epochs": epochs,
        "val_intervals": val_intervals,
    }


def official_config(base: Path, data: dict, plan: dict, save_dir: Path) -> dict:
    """The official nanodet-plus-m_320.yml with our data and schedule, on the CPU."""
    cfg = yaml.safe_load(base.read_text())
    arch = cfg["model"]["arch"]
    arch["detach_epoch"] = plan["detach_epoch"]
    arch["backbone"]["pretrain"] = False
    arch["head"]["num_classes"] = arch["aux_head"]["num_classes"] = len(CLASSES)
    for split in ("train", "val"):
        cfg["data"][split].update(data[split])
    cfg["device"] = {"gpu_ids": -1, "workers_per_gpu": 2, "batchsize_per_gpu": BATCH, "precision": 32}
    sch = cfg["schedule"]
    sch["total_epochs"], sch["val_intervals"] = plan["total_epochs"], plan["val_intervals"]
    sch["warmup"]["steps"] = plan["warmup_steps"]
    sch["lr_schedule"]["T_max"] = plan["total_epochs"]
    cfg["class_names"] = CLASSES
    cfg["save_dir"] = str(save_dir)
    cfg["log"] = {"interval": 1000}
    return cfg


def our_config(base: Path, data: dict, plan: dict, save_dir: Path) -> dict:
    cfg = official_config(base, data, plan, save_dir)
    cfg["device"] = {"workers_per_gpu": 2, "batchsize_per_gpu": BATCH}
    return cfg


def run(cmd: list[str], cwd: Path, threads: int) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def ours(config: Path, work: Path, threads: int) -> dict:
    code = f"import torch; torch.set_num_threads({threads}); from nanodet.cli import main; raise SystemExit(main())"
    cmd = [sys.executable, "-c", code, "train", str(config), "--no-progress", "--work-dir", str(work)]
    seconds, text = run(cmd, REPO, threads)
    maps = [float(m) for m in re.findall(r"eval: mAP ([0-9.]+)", text)]
    return {"seconds": round(seconds, 1), "evaluations": maps, "best_mAP": max(maps) if maps else None}


def official(ref_dir: Path, code: Path, config: Path, save_dir: Path, threads: int) -> dict:
    script = save_dir.parent / "official_train.py"
    script.write_text(
        # numpy 2 dropped np.Inf, which Lightning 1.9's ModelCheckpoint still reads: the alias back
        f"import sys, torch, numpy\nnumpy.Inf = numpy.inf\ntorch.set_num_threads({threads})\n"
        f"sys.argv = ['train.py', {str(config)!r}]\n"
        f"import runpy\nrunpy.run_path({str(code / 'tools' / 'train.py')!r}, run_name='__main__')\n"
    )
    seconds, text = run([str(ref_dir / "run.sh"), str(script)], code, threads)
    results = save_dir / "model_best" / "eval_results.txt"
    maps = [float(m) for m in re.findall(r"^mAP: ([0-9.]+)", results.read_text(), re.M)] if results.is_file() else []
    return {"seconds": round(seconds, 1), "best_mAP_improvements": maps, "best_mAP": max(maps) if maps else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--val-intervals", type=int, default=10)
    parser.add_argument("--train", type=int, default=128, help="training images")
    parser.add_argument("--val", type=int, default=32, help="validation images")
    parser.add_argument("--runs", type=int, default=1, help="runs per side (alternating)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ref-dir", type=Path, default=Path(os.environ.get("NANODET_REF", REPO.parent / "shared" / "ref"))
    )
    parser.add_argument("--ref-code", type=Path, default=Path(os.environ.get("REF_DIR", "/tmp/nanodet-ref")))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict = {"bench": "train_whole_run", "host": host_info(), "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="whole-run-") as tmp_name:
        tmp = Path(tmp_name)
        data = make_data(tmp / "data", args.train, args.val)
        plan = schedule(args.epochs, args.train, args.val_intervals)
        report["setup"] = {"train_images": args.train, "val_images": args.val, "size": SIZE, "batch": BATCH, **plan}
        has_ref = (args.ref_dir / "run.sh").is_file() and (args.ref_code / "tools" / "train.py").is_file()
        if not has_ref:
            report["official_skipped"] = f"no {args.ref_dir}/run.sh or {args.ref_code}/tools/train.py"
        runs: dict[str, list[dict]] = {"ours": [], "official": []}
        order = ["ours", "official"]
        for i in range(args.runs):
            for side in order if i % 2 == 0 else order[::-1]:
                if side == "official" and not has_ref:
                    continue
                work = tmp / f"{side}-{i}"
                work.mkdir()
                config = work / "config.yml"
                if side == "ours":
                    config.write_text(yaml.safe_dump(our_config(REPO / "config" / CONFIG, data, plan, work)))
                    result = ours(config, work / "out", args.threads)
                else:
                    cfg = official_config(args.ref_code / "config" / CONFIG, data, plan, work / "out")
                    config.write_text(yaml.safe_dump(cfg))
                    result = official(args.ref_dir, args.ref_code, config, work / "out", args.threads)
                log(f"{side} run {i}: {result}")
                runs[side].append(result)
    report["runs"] = runs
    summary = {}
    for side, results in runs.items():
        if results:
            summary[side] = {
                "seconds_median": statistics.median(r["seconds"] for r in results),
                "best_mAP_mean": round(statistics.mean(r["best_mAP"] or 0.0 for r in results), 4),
            }
    if "official" in summary:
        summary["speedup"] = round(summary["official"]["seconds_median"] / summary["ours"]["seconds_median"], 2)
    report["summary"] = summary
    print_report(report, args.out)


if __name__ == "__main__":
    main()
