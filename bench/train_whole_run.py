"""A whole training run, ours against the official trainer (the baseline), on the same data.

    .venv/bin/python bench/train_whole_run.py [--epochs 30] [--train 128] [--val 32] [--val-intervals 10]
        [--runs 1] [--threads 2]

Process start to the last evaluation, Plus-m-320 from random init, same schedule; the official: ``tools/train.py``
in ``$REF_DIR`` through ``$NANODET_REF/run.sh``. Runs alternate; mAP: each side's best. Prints ONE JSON object.
"""

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

from bench._common import REF_CODE, REF_HARNESS, host_info, log, print_report  # noqa: E402

CONFIG = "nanodet-plus-m_320.yml"
CLASSES = ["circle", "square", "triangle"]
SIZE, BATCH = 320, 16


def official_config(base: Path, data: dict, plan: dict, save_dir: Path, ours: bool) -> dict:
    """The official-format nanodet-plus-m_320.yml with our data and schedule, on the CPU."""
    cfg = yaml.safe_load(base.read_text())
    arch = cfg["model"]["arch"]
    arch["detach_epoch"], arch["backbone"]["pretrain"] = plan["detach_epoch"], False
    arch["head"]["num_classes"] = arch["aux_head"]["num_classes"] = len(CLASSES)
    for split in ("train", "val"):
        cfg["data"][split].update(data[split])
    cfg["device"] = {"workers_per_gpu": 2, "batchsize_per_gpu": BATCH}
    if not ours:
        cfg["device"] = {"gpu_ids": -1, **cfg["device"], "precision": 32}
    sch = cfg["schedule"]
    sch["total_epochs"], sch["val_intervals"] = plan["total_epochs"], plan["val_intervals"]
    sch["warmup"]["steps"], sch["lr_schedule"]["T_max"] = plan["warmup_steps"], plan["total_epochs"]
    return cfg | {"class_names": CLASSES, "save_dir": str(save_dir), "log": {"interval": 1000}}


def train_side(side: str, args, config: Path, save_dir: Path) -> dict:
    """Ours (``python -m nanodet train``) or the official ``tools/train.py`` (its ``run.sh``): seconds, mAPs."""
    if side == "ours":
        code = f"import torch; torch.set_num_threads({args.threads}); from nanodet.cli import main; "
        code += "raise SystemExit(main())"
        cmd, cwd = (
            [sys.executable, "-c", code, "train", str(config), "--no-progress", "--work-dir", str(save_dir)],
            REPO,
        )
    else:
        script = save_dir.parent / "official_train.py"
        script.write_text(
            # numpy 2 dropped np.Inf, which Lightning 1.9's ModelCheckpoint still reads: the alias back
            f"import sys, torch, numpy\nnumpy.Inf = numpy.inf\ntorch.set_num_threads({args.threads})\n"
            f"sys.argv = ['train.py', {str(config)!r}]\n"
            f"import runpy\nrunpy.run_path({str(REF_CODE / 'tools' / 'train.py')!r}, run_name='__main__')\n"
        )
        cmd, cwd = [str(REF_HARNESS / "run.sh"), str(script)], REF_CODE
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    if side == "ours":
        maps = [float(m) for m in re.findall(r"eval: mAP ([0-9.]+)", proc.stdout + proc.stderr)]
        return {"seconds": seconds, "evaluations": maps, "best_mAP": max(maps) if maps else None}
    results = save_dir / "model_best" / "eval_results.txt"
    maps = [float(m) for m in re.findall(r"^mAP: ([0-9.]+)", results.read_text(), re.M)] if results.is_file() else []
    return {"seconds": seconds, "best_mAP_improvements": maps, "best_mAP": max(maps) if maps else None}


def main() -> None:
    from nanodet.data.synthetic import make_synthetic_coco

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--val-intervals", type=int, default=10)
    parser.add_argument("--train", type=int, default=128, help="training images")
    parser.add_argument("--val", type=int, default=32, help="validation images")
    parser.add_argument("--runs", type=int, default=1, help="runs per side (alternating)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    report: dict = {"bench": "train_whole_run", "host": host_info(), "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="whole-run-") as tmp_name:
        tmp, data = Path(tmp_name), {}
        for name, count, seed in (("train", args.train, 0), ("val", args.val, 1000)):
            kw = dict(image_size=(SIZE, SIZE), class_names=CLASSES, seed=seed, min_size=32, max_size=140)
            ann = make_synthetic_coco(tmp / "data" / name, count, **kw)
            data[name] = {"img_path": str(tmp / "data" / name / "images"), "ann_path": str(ann)}
        steps = args.epochs * max(args.train // BATCH, 1)
        plan = {"warmup_steps": max(steps // 10, 1), "detach_epoch": max(args.epochs // 3, 1)}
        plan |= {"total_epochs": args.epochs, "val_intervals": args.val_intervals}
        report["setup"] = {"train_images": args.train, "val_images": args.val, "size": SIZE, "batch": BATCH, **plan}
        has_ref = (REF_HARNESS / "run.sh").is_file() and (REF_CODE / "tools" / "train.py").is_file()
        if not has_ref:
            report["official_skipped"] = f"no {REF_HARNESS}/run.sh or {REF_CODE}/tools/train.py"
        runs: dict[str, list[dict]] = {"ours": [], "official": []}
        for i in range(args.runs):
            for side in ("ours", "official")[:: 1 if i % 2 == 0 else -1]:
                if side == "official" and not has_ref:
                    continue
                work = tmp / f"{side}-{i}"
                work.mkdir()
                config, base = work / "config.yml", (REPO if side == "ours" else REF_CODE) / "config" / CONFIG
                config.write_text(yaml.safe_dump(official_config(base, data, plan, work / "out", side == "ours")))
                result = train_side(side, args, config, work / "out")
                log(f"{side} run {i}: {result}")
                runs[side].append(result)
    summary = {
        side: {"seconds_median": statistics.median(r["seconds"] for r in results)}
        | {"best_mAP_mean": round(statistics.mean(r["best_mAP"] or 0.0 for r in results), 4)}
        for side, results in runs.items()
        if results
    }
    if "official" in summary:
        summary["speedup"] = round(summary["official"]["seconds_median"] / summary["ours"]["seconds_median"], 2)
    report |= {"runs": runs, "summary": summary}
    print_report(report)


if __name__ == "__main__":
    main()
