"""Fine-tuning onto another class set: what carrying the class convs' rows over is worth.

    .venv/bin/python bench/class_transfer.py [--quick] [--seeds 0 1 2] [--epochs 4] [--threads N]

A source model (circle, square, triangle) fine-tuned onto square, circle, cross: ``whole_tensor_skip`` (the
baseline: class convs skipped whole) against ``partial_keep`` (box rows and matched class rows kept). Prints
one JSON object: AP50 and mAP after each epoch per seed and variant (``runs``), mean +- std over seeds.
"""

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
SIZE, BATCH, LR = 160, 16, 3e-3  # source training peak lr; fine-tuning: a third
# (default, --quick)
SIZES = {"epochs": (4, 1), "source_epochs": (10, 1), "source_images": (320, 32), "train_images": (96, 16)}
SIZES["val_images"] = (64, 16)


def train(root: Path, name: str, data: dict, classes: list[str], epochs: int, lr: float, seed: int, load=None):
    """The library's training run; AP50, mAP and per-class AP of the EMA model after each epoch."""
    from nanodet.engine.run import train as run_training
    from nanodet.engine.trainer import Callback

    schedule = {"load_model": load, "optimizer": {"lr": lr}, "warmup": {"steps": 10, "ratio": 0.01}}
    schedule |= {"total_epochs": epochs, "val_intervals": 1}
    schedule["lr_schedule"] = {"name": "CosineAnnealingLR", "T_max": epochs, "eta_min": lr / 20}
    # no ImageNet file here: both variants start from the same source weights anyway
    plan = {"model": {"arch": {"detach_epoch": max(epochs // 2, 1), "backbone": {"pretrain": False}}}}
    cfg = synthetic_config(CONFIG, *data, [SIZE, SIZE], BATCH, 0, root / name, plan | {"schedule": schedule}, classes)
    rows: list[dict] = []

    class History(Callback):
        def on_eval_end(self, trainer, result, is_best) -> None:
            metrics = {k: round(result.metrics[k], 4) for k in ("AP_50", "mAP")}
            per_class = {k: round(v, 4) for k, v in result.per_class_AP.items()}
            rows.append({"epoch": result.epoch, **metrics, "per_class_AP": per_class})

    run_training(cfg, work_dir=root / name, seed=seed, callbacks=[History()], device="cpu", progress=False)
    return rows


def main() -> None:
    from nanodet.data.synthetic import make_synthetic_coco
    from nanodet.weights.checkpoint import read_checkpoint, save_pth
    from nanodet.weights.class_transfer import CLASS_CONV

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sets and 1+1 epochs (smoke test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default 4, quick 1)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    n = {name: pair[args.quick] for name, pair in SIZES.items()} | ({"epochs": args.epochs} if args.epochs else {})
    threads = set_threads(args.threads or default_threads()[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-transfer-") as tmp:
        root = Path(tmp)

        def data(name: str, classes: list[str], images: int, seed: int) -> dict[str, str]:
            kw = dict(image_size=[SIZE, SIZE], class_names=classes, seed=seed, max_objects=4, min_size=24, max_size=72)
            make_synthetic_coco(root / name, images, **kw)
            return {"img_path": str(root / name / "images"), "ann_path": str(root / name / "annotations.json")}

        source_data = data("source-train", SOURCE_CLASSES, n["source_images"], 100)
        source_data = source_data, data("source-val", SOURCE_CLASSES, n["val_images"], 101)
        target_data = data("target-train", TARGET_CLASSES, n["train_images"], 200)
        target_data = target_data, data("target-val", TARGET_CLASSES, n["val_images"], 201)
        t0 = time.perf_counter()
        source_rows = train(root, "source", source_data, SOURCE_CLASSES, n["source_epochs"], LR, seed=0)
        source = root / "source" / "nanodet_model_best.pth"  # records its class names
        log(f"source model: AP50 {source_rows[-1]['AP_50']:.3f} after {n['source_epochs']} epochs")
        source_s = time.perf_counter() - t0
        # the baseline's file: the source less the class convs (they stay at the model's initial values)
        state = read_checkpoint(source)["state_dict"]
        save_pth({k: v for k, v in state.items() if not CLASS_CONV.match(k)}, root / "skip.pth")
        files = {"partial_keep": source, "whole_tensor_skip": root / "skip.pth"}
        runs: dict[str, list[list[dict]]] = {v: [] for v in VARIANTS}
        for seed in args.seeds:
            for variant in VARIANTS:
                load = str(files[variant])
                rows = train(root, f"{variant}-{seed}", target_data, TARGET_CLASSES, n["epochs"], LR / 3, seed, load)
                runs[variant].append(rows)
                log(f"seed {seed} {variant}: AP50 per epoch {[r['AP_50'] for r in rows]}")

    def mean_std(values: list[float]) -> dict:
        std = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        return {"mean": round(statistics.fmean(values), 4), "std": std, "runs": values}

    epochs = range(n["epochs"])
    summary = {
        v: {f"epoch_{e + 1}": {m: mean_std([r[e][m] for r in runs[v]]) for m in ("AP_50", "mAP")} for e in epochs}
        for v in VARIANTS
    }
    report = {
        "benchmark": "class_transfer_fine_tuning",
        "quick": args.quick,
        "model": f"nanodet-plus-m (config/{CONFIG})",
    }
    report["source"] = {"classes": SOURCE_CLASSES, "epochs": n["source_epochs"], "images": n["source_images"]}
    report["source"]["final"] = source_rows[-1]
    report["target"] = {"classes": TARGET_CLASSES, "epochs": n["epochs"]} | {
        k: n[k] for k in ("train_images", "val_images")
    }
    report["settings"] = {"input_size": SIZE, "batch": BATCH, "lr_source": LR, "lr_fine_tune": LR / 3}
    report |= {"seeds": args.seeds, "summary": summary, "runs": runs, "source_train_s": round(source_s, 1)}
    report |= {"wall_s": round(time.perf_counter() - started, 1), "threads": threads, "host": host_info()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
