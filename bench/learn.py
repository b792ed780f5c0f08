"""Learning-quality benchmark: NanoDet-Plus-m from random init on the synthetic shapes set.

    .venv/bin/python bench/learn.py [--quick] [--epochs 12] [--seed 0] [--threads N] ...

Trains with the library's own entry point, ``nanodet.engine.run.train(cfg, ...,
progress=False, device="cpu")``, for a fixed budget, evaluating (COCO mAP of the EMA model)
after every epoch, and prints ONE JSON object on stdout (progress on stderr): mAP / AP50
per epoch with the mean training loss and timings, the final and best values, and the wall
time, so that learning quality can be compared run to run (the same arguments, seed and
thread count give the same data and, on CPU, reproduced the per-epoch losses exactly).

The recipe is config/nanodet-plus-m_320.yml (official augmentations, AdamW, cosine, EMA,
grad clip 35) for the 3 shape classes, with these changes for a short CPU run from random
init: input ``--input-size`` (160), images generated at that size with objects of 32-80 px,
lr ``--lr`` (3e-3) with a 20-step linear warmup, cosine to lr/20 over the run, and
``detach_epoch`` half the epochs. The defaults take about 5-10 minutes on 2 CPU cores;
``--quick`` (3 epochs on 48 images) checks that everything runs in about a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import default_threads, host_info, log, make_dataset, set_threads, synthetic_config  # noqa: E402

CONFIG = "nanodet-plus-m_320.yml"
METRICS = ("mAP", "AP_50", "AP_75", "AP_small", "AP_m", "AP_l", "AR_100")


def _history_callback():
    from nanodet.engine.trainer import Callback

    class History(Callback):
        """Mean loss terms, lr and timings per epoch; the evaluation of each epoch."""

        def __init__(self) -> None:
            self.epochs: list[dict] = []
            self._losses: dict[str, list[float]] = {}
            self._lr = 0.0
            self._t_epoch = self._t_steps_end = 0.0

        def on_train_start(self, trainer) -> None:
            self._t_epoch = time.perf_counter()
            log(
                f"training: {trainer.steps_per_epoch} steps/epoch x {trainer.total_epochs} epochs, "
                f"batch {trainer.cfg.device.batchsize_per_gpu}, {len(trainer.train_set)} train / "
                f"{len(trainer.val_set)} val images"
            )

        def on_step_end(self, trainer, losses) -> None:
            for k, v in losses.items():
                if k != "lr":
                    self._losses.setdefault(k, []).append(v)
            self._lr = losses["lr"]
            self._t_steps_end = time.perf_counter()

        def on_eval_end(self, trainer, result, is_best) -> None:
            now = time.perf_counter()
            train_s = self._t_steps_end - self._t_epoch
            row = {
                "epoch": result.epoch,
                **{k: round(result.metrics[k], 4) for k in METRICS if k in result.metrics},
                "loss": round(statistics.fmean(self._losses.get("loss", [float("nan")])), 4),
                "loss_terms": {k: round(statistics.fmean(v), 4) for k, v in self._losses.items() if k != "loss"},
                "lr_last": float(f"{self._lr:.3g}"),
                "aux_detached": result.epoch - 1 >= trainer.model.detach_epoch,
                "train_s": round(train_s, 1),
                "eval_s": round(now - self._t_steps_end, 1),
                "ms_per_image": round(
                    1e3 * train_s / max(1, len(self._losses.get("loss", [])) * trainer.cfg.device.batchsize_per_gpu), 1
                ),
            }
            self.epochs.append(row)
            log(
                f"epoch {row['epoch']}: loss {row['loss']:.3f} mAP {row['mAP']:.4f} AP50 {row['AP_50']:.4f}"
                f" ({row['train_s']:.0f}s train, {row['eval_s']:.0f}s eval){' best' if is_best else ''}"
            )

        def on_epoch_end(self, trainer) -> None:
            self._losses = {}
            self._t_epoch = time.perf_counter()

    return History()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 epochs, 48 train / 16 val images (smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="default 12 (quick 3)")
    parser.add_argument("--train-images", type=int, default=None, help="default 320 (quick 48)")
    parser.add_argument("--val-images", type=int, default=None, help="default 64 (quick 16)")
    parser.add_argument("--input-size", type=int, default=160, help="square network input (multiple of 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="data, init and augmentation seed")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="loader workers (0: load in the training process)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--detach-epoch", type=int, default=None, help="default: half the epochs")
    parser.add_argument("--min-size", type=int, default=32, help="smallest object extent in pixels")
    parser.add_argument("--max-size", type=int, default=80, help="largest object extent in pixels")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS, else the idle cores)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the generated data here (default: temp dir)")
    args = parser.parse_args()

    epochs = args.epochs or (3 if args.quick else 12)
    n_train = args.train_images or (48 if args.quick else 320)
    n_val = args.val_images or (16 if args.quick else 64)
    detach_epoch = args.detach_epoch if args.detach_epoch is not None else epochs // 2
    if args.input_size % 32:
        parser.error("--input-size must be a multiple of 32")
    threads, threads_why = (args.threads, "--threads") if args.threads else default_threads()
    threads = set_threads(threads)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from nanodet.engine.run import train

    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-learn-") as tmp:
        root = args.data_dir or Path(tmp)
        size = [args.input_size, args.input_size]
        data = {"image_size": size, "min_size": args.min_size, "max_size": args.max_size, "max_objects": 4}
        train_set = make_dataset(root, f"train-s{args.seed}", n_train, size, args.seed, args.min_size, args.max_size)
        val_set = make_dataset(root, f"val-s{args.seed}", n_val, size, args.seed + 1000, args.min_size, args.max_size)
        overrides = {
            "model": {"arch": {"detach_epoch": detach_epoch}},
            "schedule": {
                "optimizer": {"lr": args.lr},
                "warmup": {"steps": args.warmup_steps, "ratio": 0.01},
                "total_epochs": epochs,
                "lr_schedule": {"name": "CosineAnnealingLR", "T_max": epochs, "eta_min": args.lr / 20},
                "val_intervals": 1,
            },
        }
        cfg = synthetic_config(
            CONFIG, train_set, val_set, size, args.batch, args.workers, Path(tmp) / "work", overrides
        )
        history = _history_callback()
        t0 = time.perf_counter()
        state = train(
            cfg, work_dir=Path(tmp) / "work", seed=args.seed, callbacks=[history], device="cpu", progress=False
        )
        train_wall = time.perf_counter() - t0

    rows = history.epochs
    best = max(rows, key=lambda r: r["mAP"]) if rows else None
    final = state.evaluations[-1] if state.evaluations else None
    report = {
        "benchmark": "learn_synthetic_shapes",
        "model": "nanodet-plus-m (config/nanodet-plus-m_320.yml, 3 classes), random init",
        "quick": args.quick,
        "settings": {
            "epochs": epochs,
            "train_images": n_train,
            "val_images": n_val,
            "input_size": args.input_size,
            "batch": args.batch,
            "steps": state.step,
            "lr": args.lr,
            "optimizer": cfg.schedule.optimizer.name,
            "weight_decay": cfg.schedule.optimizer.weight_decay,
            "warmup_steps": args.warmup_steps,
            "eta_min": args.lr / 20,
            "detach_epoch": detach_epoch,
            "ema_decay": cfg.model.weight_averager.decay,
            "seed": args.seed,
            "workers": args.workers,
            "threads": threads,
            "threads_from": threads_why,
            "dataset": data,
        },
        "per_epoch": rows,
        "final": {
            "epoch": final.epoch,
            **{k: round(final.metrics[k], 4) for k in METRICS if k in final.metrics},  # undefined ones are absent
            "per_class_AP": {k: round(v, 4) for k, v in final.per_class_AP.items()},
        }
        if final
        else None,
        "best": {"epoch": best["epoch"], "mAP": best["mAP"], "AP_50": best["AP_50"]} if best else None,
        "best_by_trainer": {"epoch": state.best_epoch, "mAP": round(state.best_metric, 4)},
        "loss_first_last_epoch": [rows[0]["loss"], rows[-1]["loss"]] if rows else None,
        "train_wall_s": round(train_wall, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "host": {**host_info(), "loadavg_before": load_before},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
