"""Fine-tuning onto another class set: what carrying the class convs' rows over is worth.

    .venv/bin/python bench/class_transfer.py [--quick] [--seeds 0 1 2] [--epochs 4] [--threads N]

A source model is trained once from random init on three shape classes (circle, square, triangle),
then fine-tuned for ``--epochs`` onto two of them and a new one (square, circle, cross: a new order),
from the same file in two ways, everything else (data, seeds, schedule) identical:

- ``whole_tensor_skip`` (the baseline: the behaviour before): the class convs (``head.gfl_cls.*``,
  ``aux_head.gfl_cls``), whose shapes change with the class count, are skipped whole, so the
  box-distribution rows they also hold restart from random init;
- ``partial_keep`` (now, ``nanodet.weights.class_transfer``): the box-distribution rows and the rows of
  the classes matched by name are carried over; only the new class starts from its initial rows.

Prints one JSON object: AP50 and mAP of the EMA model after each epoch, per seed and variant, and the
mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import default_threads, host_info, log, set_threads, synthetic_config  # noqa: E402

CONFIG = "nanodet-plus-m_320.yml"
SOURCE_CLASSES = ["circle", "square", "triangle"]
TARGET_CLASSES = ["square", "circle", "cross"]
VARIANTS = ("whole_tensor_skip", "partial_keep")


def dataset(root: Path, name: str, classes: list[str], images: int, size: int, seed: int) -> dict[str, str]:
    from nanodet.data.synthetic import make_synthetic_coco

    out = root / name
    make_synthetic_coco(
        out, images, image_size=[size, size], class_names=classes, seed=seed, max_objects=4, min_size=24, max_size=72
    )
    return {"img_path": str(out / "images"), "ann_path": str(out / "annotations.json")}


def schedule(epochs: int, lr: float, load_model: str | None = None) -> dict:
    return {
        # no ImageNet file here: both variants start from the same source weights anyway
        "model": {"arch": {"detach_epoch": max(epochs // 2, 1), "backbone": {"pretrain": False}}},
        "schedule": {
            "load_model": load_model,
            "optimizer": {"lr": lr},
            "warmup": {"steps": 10, "ratio": 0.01},
            "total_epochs": epochs,
            "lr_schedule": {"name": "CosineAnnealingLR", "T_max": epochs, "eta_min": lr / 20},
            "val_intervals": 1,
        },
    }


def without_class_convs(source: Path, out: Path) -> Path:
    """The source weights less the class-conv tensors: what a loader that skips tensors of
    another shape ends up with (they stay at the model's initial values)."""
    from nanodet.weights.checkpoint import read_checkpoint, save_pth
    from nanodet.weights.class_transfer import CLASS_CONV

    state = read_checkpoint(source)["state_dict"]
    save_pth({k: v for k, v in state.items() if not CLASS_CONV.match(k)}, out)
    return out


def train(cfg, work: Path, seed: int) -> list[dict]:
    """The library's training run; AP50, mAP and per-class AP of the EMA model at each evaluation."""
    from nanodet.engine.run import train as run_training
    from nanodet.engine.trainer import Callback

    rows: list[dict] = []

    class History(Callback):
        def on_eval_end(self, trainer, result, is_best) -> None:
            metrics = {k: round(result.metrics[k], 4) for k in ("AP_50", "mAP")}
            per_class = {k: round(v, 4) for k, v in result.per_class_AP.items()}
            rows.append({"epoch": result.epoch, **metrics, "per_class_AP": per_class})

    run_training(cfg, work_dir=work, seed=seed, callbacks=[History()], device="cpu", progress=False)
    return rows


def mean_std(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "runs": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sets and 1+1 epochs (smoke test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 4, quick 1)")
    parser.add_argument("--source-epochs", type=int, default=None, help="source training epochs (default 10)")
    parser.add_argument("--source-images", type=int, default=None, help="default 320")
    parser.add_argument("--train-images", type=int, default=None, help="fine-tuning set (default 96)")
    parser.add_argument("--val-images", type=int, default=None, help="default 64")
    parser.add_argument("--input-size", type=int, default=160)
    parser.add_argument("--lr", type=float, default=3e-3, help="source training peak lr (fine-tuning: a third)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    fine_epochs = args.epochs or (1 if args.quick else 4)
    source_epochs = args.source_epochs or (1 if args.quick else 10)
    n_source = args.source_images or (32 if args.quick else 320)
    n_train = args.train_images or (16 if args.quick else 96)
    n_val = args.val_images or (16 if args.quick else 64)
    threads = set_threads(args.threads or default_threads()[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    size = args.input_size

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-transfer-") as tmp:
        root = Path(tmp)
        source_train = dataset(root, "source-train", SOURCE_CLASSES, n_source, size, 100)
        source_val = dataset(root, "source-val", SOURCE_CLASSES, n_val, size, 101)
        target_train = dataset(root, "target-train", TARGET_CLASSES, n_train, size, 200)
        target_val = dataset(root, "target-val", TARGET_CLASSES, n_val, size, 201)

        def config(train_set: dict, val_set: dict, work: Path, plan: dict, classes: list[str]):
            return synthetic_config(CONFIG, train_set, val_set, [size, size], args.batch, 0, work, plan, classes)

        t0 = time.perf_counter()
        cfg = config(source_train, source_val, root / "source", schedule(source_epochs, args.lr), SOURCE_CLASSES)
        source_rows = train(cfg, root / "source", seed=0)
        source = root / "source" / "nanodet_model_best.pth"  # records its class names
        log(f"source model: AP50 {source_rows[-1]['AP_50']:.3f} after {source_epochs} epochs")
        source_s = time.perf_counter() - t0
        files = {"partial_keep": source, "whole_tensor_skip": without_class_convs(source, root / "skip.pth")}

        runs: dict[str, list[list[dict]]] = {v: [] for v in VARIANTS}
        for seed in args.seeds:
            for variant in VARIANTS:
                work = root / f"{variant}-{seed}"
                plan = schedule(fine_epochs, args.lr / 3, str(files[variant]))
                rows = train(config(target_train, target_val, work, plan, TARGET_CLASSES), work, seed=seed)
                runs[variant].append(rows)
                log(f"seed {seed} {variant}: AP50 per epoch {[r['AP_50'] for r in rows]}")

    summary = {
        variant: {
            f"epoch_{e + 1}": {
                "AP_50": mean_std([rows[e]["AP_50"] for rows in runs[variant]]),
                "mAP": mean_std([rows[e]["mAP"] for rows in runs[variant]]),
            }
            for e in range(fine_epochs)
        }
        for variant in VARIANTS
    }
    report = {
        "benchmark": "class_transfer_fine_tuning",
        "quick": args.quick,
        "model": f"nanodet-plus-m (config/{CONFIG})",
        "source": {"classes": SOURCE_CLASSES, "epochs": source_epochs, "images": n_source, "final": source_rows[-1]},
        "target": {"classes": TARGET_CLASSES, "epochs": fine_epochs, "train_images": n_train, "val_images": n_val},
        "settings": {"input_size": size, "batch": args.batch, "lr_source": args.lr, "lr_fine_tune": args.lr / 3},
        "seeds": args.seeds,
        "summary": summary,
        "runs": runs,
        "source_train_s": round(source_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": threads,
        "host": host_info(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
