"""Does the fast training input pipeline train as well as the official one? Two whole runs, same seeds.

    .venv/bin/python bench/train_pipeline_accuracy.py [--epochs 30] [--train 96] [--val 48] [--input 128]
                                                      [--seeds 0] [--threads 2] [--out FILE]

Both runs train NanoDet-Plus-m (``config/nanodet-plus-m_320.yml``'s recipe, 3 classes,
``backbone.pretrain`` off: random init from the same seed) on the same generated COCO set (shapes
on textured backgrounds with sensor noise, ``nanodet.data.synthetic``) whose images are 3.6-7.5x
the input (480x480 to 960x720 at input 128): the fast pipeline decodes them at 1/2 or 1/4. The only
difference is how the training samples are made from the same draws:

* ``before``: the official way (``reference=True``): whole decode, perspective warp, colour and
  normalisation per image in float32;
* ``fast``: the reduced decode, the affine warp, the colour and normalisation of the batch.

Batch 16, AdamW 0.001 with a warmup of a tenth of the steps and a cosine over the epochs,
``detach_epoch`` at a third, EMA, evaluation (COCO mAP of the EMA model, ``evaluator.save_key``)
every ``--val-intervals`` epochs; each run in its own process, one after the other, ``--threads``
threads and one DataLoader worker. Reports each run's evaluations and best mAP, and the
difference. Prints ONE JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
    steps = spec["epochs"] * max(spec["train"] // BATCH, 1)
    overrides = {
        "model": {"arch": {"backbone": {"pretrain": False}, "detach_epoch": max(spec["epochs"] // 3, 1)}},
        "schedule": {
            "total_epochs": spec["epochs"],
            "val_intervals": spec["val_intervals"],
            "warmup": {"steps": max(steps // 10, 1)},
            "lr_schedule": {"T_max": spec["epochs"]},
        },
    }
    size = (spec["input"], spec["input"])
    cfg = synthetic_config(
        "nanodet-plus-m_320.yml", spec["train_set"], spec["val_set"], size, BATCH, 1, Path(spec["work"]), overrides
    )
    seed = spec["seed"]
    train_set = build_dataset(cfg.data.train, train=True, seed=seed, reference=spec["side"] == "before")
    start = time.perf_counter()
    trainer = Trainer.from_config(
        cfg, spec["work"], DistContext(device=torch.device("cpu")), seed=seed, train_set=train_set
    )
    state = trainer.train()
    return {
        "side": spec["side"],
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "steps": state.step,
        "evaluations": [
            {
                "epoch": e.epoch,
                "mAP": round(e.metrics["mAP"], 4),
                "AP_50": round(e.metrics.get("AP_50", float("nan")), 4),
            }
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
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "nanodet-bench-pipeline-accuracy"
    )
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
                spec = {
                    "side": side,
                    "seed": seed,
                    "epochs": args.epochs,
                    "val_intervals": args.val_intervals,
                    "train": args.train,
                    "input": args.input,
                    "threads": args.threads,
                    "train_set": train_set,
                    "val_set": val_set,
                    "work": str(Path(tmp) / f"{side}_{seed}"),
                }
                log(f"seed {seed}: {side} ...")
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                )
                if proc.returncode != 0:
                    runs.append({"side": side, "seed": seed, "error": proc.stderr[-2000:]})
                    continue
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                log(f"  best mAP {runs[-1]['best_mAP']} in {runs[-1]['seconds']} s")
    best = {side: [r["best_mAP"] for r in runs if r.get("side") == side and "best_mAP" in r] for side in SIDES}
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
        "best_mAP": {side: statistics.mean(v) if v else None for side, v in best.items()},
        "fast_minus_before": (
            round(statistics.mean(best["fast"]) - statistics.mean(best["before"]), 4)
            if best["fast"] and best["before"]
            else None
        ),
        "runs": runs,
    }
    print_report(report, args.out)


if __name__ == "__main__":
    main()
