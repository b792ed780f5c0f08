"""Does the fast training input pipeline train as well as the official one (``before``, the baseline)?

    .venv/bin/python bench/train_pipeline_accuracy.py [--epochs 30] [--val-intervals 10] [--train 96] [--val 48]
        [--seeds 0 1 2] [--threads 2]

Whole Plus-m-320-recipe runs at input 128 on generated 480x480..960x720 shapes, same seeds, only the making of
the samples differing (``reference=True`` or not), each in its own process. Prints ONE JSON object.
"""

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import host_info, log, make_dataset, print_report, synthetic_config  # noqa: E402

BATCH, INPUT = 16, 128
SIDES = ("before", "fast")
IMAGE_SIZE = [[480, 480], [960, 720]]
DATA_DIR = Path(tempfile.gettempdir()) / "nanodet-bench-accuracy"  # generated once, reused


def child(spec: dict) -> dict:
    import torch

    from nanodet.data.coco_dataset import build_dataset
    from nanodet.engine.distributed import DistContext
    from nanodet.engine.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    epochs, seed = spec["epochs"], spec["seed"]
    steps = epochs * max(spec["train"] // BATCH, 1)
    schedule = {"total_epochs": epochs, "val_intervals": spec["val_intervals"], "lr_schedule": {"T_max": epochs}}
    overrides = {"model": {"arch": {"backbone": {"pretrain": False}, "detach_epoch": max(epochs // 3, 1)}}}
    overrides["schedule"] = schedule | {"warmup": {"steps": max(steps // 10, 1)}}
    sets, work = (spec["train_set"], spec["val_set"]), Path(spec["work"])
    cfg = synthetic_config("nanodet-plus-m_320.yml", *sets, (INPUT, INPUT), BATCH, 1, work, overrides)
    train_set = build_dataset(cfg.data.train, train=True, seed=seed, reference=spec["side"] == "before")
    start = time.perf_counter()
    trainer = Trainer.from_config(cfg, work, DistContext(device=torch.device("cpu")), seed=seed, train_set=train_set)
    state = trainer.train()
    out = {"side": spec["side"], "seed": seed, "seconds": round(time.perf_counter() - start, 1), "steps": state.step}
    out["evaluations"] = [
        {"epoch": e.epoch, "mAP": round(e.metrics["mAP"], 4), "AP_50": round(e.metrics.get("AP_50", math.nan), 4)}
        for e in state.evaluations
    ]
    return out | {
        "best_mAP": round(state.best_metric, 4),
        "data_wait_share": round(trainer.data_wait.run_share or 0.0, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--val-intervals", type=int, default=10)
    parser.add_argument("--train", type=int, default=96, help="training images")
    parser.add_argument("--val", type=int, default=48, help="validation images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    shapes = dict(image_size=IMAGE_SIZE, min_size=40, max_size=320)
    train_set = make_dataset(DATA_DIR, "train", args.train, seed=0, **shapes)
    val_set = make_dataset(DATA_DIR, "val", args.val, seed=1000, **shapes)
    runs = []
    with tempfile.TemporaryDirectory(prefix="nanodet-pipeline-accuracy-") as tmp:
        for seed in args.seeds:
            for side in SIDES if seed % 2 == 0 else SIDES[::-1]:
                spec = {k: getattr(args, k) for k in ("epochs", "val_intervals", "train", "threads")}
                spec |= {"side": side, "seed": seed, "train_set": train_set, "val_set": val_set}
                log(f"seed {seed}: {side} ...")
                command = [sys.executable, __file__, "--child", json.dumps(spec | {"work": f"{tmp}/{side}_{seed}"})]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                proc = subprocess.run(command, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    runs.append({"side": side, "seed": seed, "error": proc.stderr[-2000:]})
                    continue
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                log(f"  best mAP {runs[-1]['best_mAP']} in {runs[-1]['seconds']} s")
    best = {side: {r["seed"]: r["best_mAP"] for r in runs if r["side"] == side and "best_mAP" in r} for side in SIDES}
    paired = [best["fast"][s] - best["before"][s] for s in args.seeds if s in best["fast"] and s in best["before"]]
    report = {"benchmark": "training pipeline accuracy: the fast samples against the official ones, same seeds"}
    images = f"{args.train} train / {args.val} val, {IMAGE_SIZE[0]} to {IMAGE_SIZE[1]} px, generated shapes"
    setup = {"config": "config/nanodet-plus-m_320.yml recipe, 3 classes, random init", "input": INPUT, "images": images}
    report |= host_info() | {"setup": setup | {"epochs": args.epochs, "batch": BATCH, "seeds": args.seeds}}
    report["best_mAP_per_seed"] = {side: {str(s): v for s, v in b.items()} for side, b in best.items()}
    report["best_mAP_mean"] = {side: round(statistics.mean(b.values()), 4) if b else None for side, b in best.items()}
    report["fast_minus_before_per_seed"] = [round(d, 4) for d in paired]
    report["fast_minus_before_mean"] = round(statistics.mean(paired), 4) if paired else None
    error = round(statistics.stdev(paired) / math.sqrt(len(paired)), 4) if len(paired) > 1 else None
    report |= {"fast_minus_before_standard_error": error, "runs": runs}
    print_report(report)


if __name__ == "__main__":
    main()
