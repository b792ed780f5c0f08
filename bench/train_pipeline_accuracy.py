"""Does the fast training input pipeline train as well as the official one? Whole runs, same seeds.

    .venv/bin/python bench/train_pipeline_accuracy.py [--epochs 30] [--train 96] [--val 48] [--input 128]
                                                      [--seeds 0 1 2] [--sides before fast] [--threads 2] [--out FILE]

Each run trains NanoDet-Plus-m (``config/nanodet-plus-m_320.yml``'s recipe, 3 classes, random init
from the seed) on the same generated COCO shapes set, whose images are 3.6-7.5x the input (480x480
to 960x720 at 128), so the fast pipeline decodes them at 1/2 or 1/4. Only the making of the
training samples from the same draws differs: ``before`` is the official way (``reference=True``:
whole decode, perspective warp, colour per image in float32), ``fast`` the reduced decode, affine
warp and colour of the batch. Batch 16, a warmup of a tenth of the steps, cosine over the epochs,
``detach_epoch`` at a third, EMA evaluated (COCO mAP) every ``--val-intervals`` epochs; each run in
its own process, one after the other. Reports each run, the best mAP per seed and side, and the
paired difference fast - before (mean and standard error over the seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import host_info, log, make_dataset, print_report, synthetic_config  # noqa: E402

BATCH = 16
SIDES = ("before", "fast")


def child(spec: dict) -> dict:
    import torch

    from nanodet.data.coco_dataset import build_dataset
    from nanodet.engine.distributed import DistContext
    from nanodet.engine.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    epochs = spec["epochs"]
    steps = epochs * max(spec["train"] // BATCH, 1)
    overrides = {
        "model": {"arch": {"backbone": {"pretrain": False}, "detach_epoch": max(epochs // 3, 1)}},
        "schedule": {
            "total_epochs": epochs,
            "val_intervals": spec["val_intervals"],
            "warmup": {"steps": max(steps // 10, 1)},
            "lr_schedule": {"T_max": epochs},
        },
    }
    size = (spec["input"], spec["input"])
    cfg = synthetic_config(
        "nanodet-plus-m_320.yml", spec["train_set"], spec["val_set"], size, BATCH, 1, Path(spec["work"]), overrides
    )
    seed = spec["seed"]
    train_set = build_dataset(cfg.data.train, train=True, seed=seed, reference=spec["side"] == "before")
    start = time.perf_counter()
    device = DistContext(device=torch.device("cpu"))
    trainer = Trainer.from_config(cfg, spec["work"], device, seed=seed, train_set=train_set)
    state = trainer.train()
    return {
        "side": spec["side"],
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "steps": state.step,
        "evaluations": [
            {"epoch": e.epoch, "mAP": round(e.metrics["mAP"], 4), "AP_50": round(e.metrics.get("AP_50", math.nan), 4)}
            for e in state.evaluations
        ],
        "best_mAP": round(state.best_metric, 4),
        "data_wait_share": round(trainer.data_wait.run_share or 0.0, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--val-intervals", type=int, default=10)
    parser.add_argument("--train", type=int, default=96, help="training images")
    parser.add_argument("--val", type=int, default=48, help="validation images")
    parser.add_argument("--input", type=int, default=128, help="square input size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES), help="which runs (default both)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "nanodet-bench-accuracy")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    image_size = [[480, 480], [960, 720]]
    train_set = make_dataset(args.data_dir, "train", args.train, image_size, seed=0, min_size=40, max_size=320)
    val_set = make_dataset(args.data_dir, "val", args.val, image_size, seed=1000, min_size=40, max_size=320)
    runs = []
    with tempfile.TemporaryDirectory(prefix="nanodet-pipeline-accuracy-") as tmp:
        for seed in args.seeds:
            for side in [s for s in (SIDES if seed % 2 == 0 else SIDES[::-1]) if s in args.sides]:
                spec = vars(args) | {"side": side, "seed": seed, "train_set": train_set, "val_set": val_set}
                spec |= {"work": str(Path(tmp) / f"{side}_{seed}"), "data_dir": None, "out": None}
                log(f"seed {seed}: {side} ...")
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                )
                if proc.returncode != 0:
                    runs.append({"side": side, "seed": seed, "error": proc.stderr[-2000:]})
                    continue
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                log(f"  best mAP {runs[-1]['best_mAP']} in {runs[-1]['seconds']} s")
    best = {side: {r["seed"]: r["best_mAP"] for r in runs if r["side"] == side and "best_mAP" in r} for side in SIDES}
    paired = [best["fast"][s] - best["before"][s] for s in args.seeds if s in best["fast"] and s in best["before"]]
    report = {
        "benchmark": "training pipeline accuracy: the fast samples against the official ones, same seeds",
        **host_info(),
        "setup": {
            "config": "config/nanodet-plus-m_320.yml recipe, 3 classes, random init",
            "input": args.input,
            "images": f"{args.train} train / {args.val} val, {image_size[0]} to {image_size[1]} px, generated shapes",
            "epochs": args.epochs,
            "batch": BATCH,
            "seeds": args.seeds,
        },
        "best_mAP_per_seed": {side: {str(s): v for s, v in b.items()} for side, b in best.items()},
        "best_mAP_mean": {side: round(statistics.mean(b.values()), 4) if b else None for side, b in best.items()},
        "fast_minus_before_per_seed": [round(d, 4) for d in paired],
        "fast_minus_before_mean": round(statistics.mean(paired), 4) if paired else None,
        "fast_minus_before_standard_error": (
            round(statistics.stdev(paired) / math.sqrt(len(paired)), 4) if len(paired) > 1 else None
        ),
        "runs": runs,
    }
    print_report(report, args.out)


if __name__ == "__main__":
    main()
