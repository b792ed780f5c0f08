#!/usr/bin/env python
"""Peak memory and time of one COCO evaluation on a large validation set, old path vs new.

Prints ONE JSON object on stdout (progress goes to stderr) and writes it to ``--out``::

    .venv/bin/python bench/eval_memory.py                      # sizes 1000 and 5000, ~4 min on 2 cores
    .venv/bin/python bench/eval_memory.py --sizes 1000 --out /tmp/eval_memory.json

For each size a synthetic ground truth (3 classes, 3-7 boxes per 640×480 image, on average
5) and synthetic detections as the post-processing leaves them (``Detections`` per image:
100 boxes, float32, sorted by score; jittered copies of the true boxes, some with a wrong
class, plus random boxes; random scores) are generated from a fixed seed. Each (size, path)
then runs in a fresh subprocess that builds both, measures its resident set size (the
baseline: interpreter, torch, numpy, the ground truth and the ``Detections``, all of which
the trainer holds anyway), resets the kernel's RSS high-water mark (``/proc/self/clear_refs``)
and runs one evaluation, from the ``Detections`` to the metrics:

* ``baseline``: the path before this change, re-implemented here: ``as_coco_detections``
  (a list of ``(box list, float, int)`` tuples per image, alive during the whole evaluation
  as the argument of ``evaluate``), then the COCO results as a list of dicts, ``loadRes``
  (which adds a polygon to each), ``COCOeval`` evaluate / accumulate / summarize with its
  per-image results still alive through any second run for an off-grid ``iou_thrs`` value.
* ``new``: ``CocoEvaluator.evaluate(detections)`` on the ``Detections`` as they are.
* ``ndarray`` (only with ``--paths``): one ``[N, 7]`` float64 array handed to ``loadRes``,
  which converts it row by row to dicts of numpy scalars (for comparison).

Memory is peak RSS (Linux ``VmHWM`` after the reset, i.e. ``ru_maxrss`` of the child
without the peak it inherits from its parent) minus the RSS just before the evaluation,
in MiB; tracemalloc is not used (it would slow the timing and miss C allocations). Time
is the wall time of that one evaluation, and its CPU time (less disturbed by other load).
The parent checks that every path gives exactly the same metrics and per-class AP.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from nanodet.config import METRIC_NAMES, ap_key, recall_key  # noqa: E402
from nanodet.evaluation.coco import CocoEvaluator  # noqa: E402
from nanodet.inference.detections import Detections  # noqa: E402

WIDTH, HEIGHT = 640, 480
NUM_CLASSES = 3
PATHS = ("baseline", "new", "ndarray")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- synthetic data ----------------------------------------------------------------------


def make_ground_truth(num_images: int, seed: int) -> COCO:
    """3 classes (ids 1-3), 3-7 boxes per image, sizes from 8 to 300 px (all three COCO area ranges)."""
    rng = np.random.default_rng([seed, 0])
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": WIDTH, "height": HEIGHT})
        count = int(rng.integers(3, 8))
        wh = np.exp(rng.uniform(np.log(8), np.log(300), size=(count, 2)))
        xy = rng.uniform(0, 1, size=(count, 2)) * ([WIDTH, HEIGHT] - wh)
        labels = rng.integers(1, NUM_CLASSES + 1, size=count)
        for (x, y), (w, h), cat in zip(xy.tolist(), wh.tolist(), labels.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": f"class{i}"} for i in range(NUM_CLASSES)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def make_detections(coco: COCO, per_image: int, seed: int) -> dict[int, Detections]:
    """``per_image`` detections per image: 3 jittered copies of each true box (one in 10 with
    a wrong class), the rest random boxes; scores uniform, higher on average for the copies."""
    rng = np.random.default_rng([seed, 1])
    cat_ids = sorted(coco.getCatIds())
    detections: dict[int, Detections] = {}
    for image_id in coco.getImgIds():
        anns = coco.imgToAnns[image_id]
        gt = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        gt_labels = np.array([cat_ids.index(a["category_id"]) for a in anns], dtype=np.int64)
        copies = np.repeat(gt, 3, axis=0)[:per_image]
        jitter = rng.normal(0, 0.1, size=copies.shape) * copies[:, [2, 3, 2, 3]]
        xywh = copies + jitter
        labels = np.repeat(gt_labels, 3)[: len(copies)]
        wrong = rng.random(len(labels)) < 0.1
        labels[wrong] = rng.integers(0, NUM_CLASSES, size=int(wrong.sum()))
        scores = rng.uniform(0.2, 1.0, size=len(copies))
        extra = per_image - len(copies)
        wh = np.exp(rng.uniform(np.log(8), np.log(300), size=(extra, 2)))
        xy = rng.uniform(0, 1, size=(extra, 2)) * ([WIDTH, HEIGHT] - wh)
        xywh = np.concatenate([xywh, np.concatenate([xy, wh], axis=1)])
        labels = np.concatenate([labels, rng.integers(0, NUM_CLASSES, size=extra)])
        scores = np.concatenate([scores, rng.uniform(0.05, 0.7, size=extra)])
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes = np.clip(boxes, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
        order = np.argsort(-scores, kind="stable")
        detections[image_id] = Detections(
            boxes=boxes[order].astype(np.float32),
            scores=scores[order].astype(np.float32),
            labels=labels[order].astype(np.int64),
        )
    return detections


# --- the evaluation paths ------------------------------------------------------------------


def baseline_evaluate(evaluator: CocoEvaluator, detections: dict[int, Detections]) -> dict:
    """The path before the change: ``CocoEvaluator.evaluate(as_coco_detections(dets))`` with
    the old tuple and dict conversions and the old order of releases, re-implemented."""
    tuples = {  # as_coco_detections
        img_id: [(box.tolist(), float(s), int(lab)) for box, s, lab in zip(d.boxes, d.scores, d.labels)]
        for img_id, d in detections.items()
    }
    coco_gt, cat_ids = evaluator.coco_gt, evaluator.cat_ids
    known_images = set(coco_gt.getImgIds())
    results = []  # the old CocoEvaluator._to_coco_results
    for image_id, image_detections in tuples.items():
        if int(image_id) not in known_images:
            raise KeyError(image_id)
        for box, score, label in image_detections:
            if not 0 <= int(label) < len(cat_ids):
                raise ValueError(label)
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": cat_ids[int(label)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = _old_run(coco_gt, results)
        coco_eval.summarize()
        metrics = {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats) if v > -1}
        for thr in evaluator.iou_thrs:
            hits = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, thr))
            at, row = (coco_eval.eval, hits[0]) if hits.size else (_old_run(coco_gt, results, [thr]).eval, 0)
            precision = at["precision"][row, :, :, 0, -1]
            values = precision[precision > -1]
            metrics[ap_key(thr)] = float(values.mean()) if values.size else 0.0
            recall = at["recall"][row, :, 0, -1]
            metrics[recall_key(thr)] = float(recall[recall > -1].mean()) if (recall > -1).any() else 0.0
    return {"metrics": metrics, "per_class_AP": evaluator._per_class_ap(coco_eval.eval["precision"])}


def _old_run(coco_gt: COCO, results: list[dict] | np.ndarray, iou_thrs: list[float] | None = None) -> COCOeval:
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
    if iou_thrs is not None:
        coco_eval.params.iouThrs = np.array(iou_thrs, dtype=np.float64)
    coco_eval.evaluate()
    coco_eval.accumulate()
    return coco_eval


def ndarray_evaluate(evaluator: CocoEvaluator, detections: dict[int, Detections]) -> dict:
    """One ``[N, 7]`` array (image id, x, y, w, h, score, category id) handed to ``loadRes``."""
    cat_ids = np.asarray(evaluator.cat_ids, dtype=np.float64)
    blocks = []
    for image_id, d in detections.items():
        block = np.empty((len(d), 7), dtype=np.float64)
        block[:, 0] = image_id
        block[:, 1:5] = d.boxes
        block[:, 3:5] -= block[:, 1:3]
        block[:, 5] = d.scores
        block[:, 6] = cat_ids[d.labels]
        blocks.append(block)
    data = np.concatenate(blocks)
    del blocks
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = _old_run(evaluator.coco_gt, data)
        del data
        coco_eval.summarize()
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats) if v > -1}
    for thr in evaluator.iou_thrs:  # on-grid thresholds only in this comparison path
        row = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, thr))[0]
        precision = coco_eval.eval["precision"][row]
        values = precision[:, :, 0, -1][precision[:, :, 0, -1] > -1]
        metrics[ap_key(thr)] = float(values.mean()) if values.size else 0.0
        recall = coco_eval.eval["recall"][row, :, 0, -1]
        metrics[recall_key(thr)] = float(recall[recall > -1].mean()) if (recall > -1).any() else 0.0
    return {"metrics": metrics, "per_class_AP": evaluator._per_class_ap(coco_eval.eval["precision"])}


# --- memory probes -------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Set the kernel's RSS high-water mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_mib() -> float:
    kib = _proc_status_kib("VmRSS")
    return float("nan") if kib is None else kib / 1024


def peak_rss_mib() -> float:
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


# --- child and parent ----------------------------------------------------------------------


def child(size: int, path: str, per_image: int, seed: int, iou_thrs: list[float]) -> dict:
    coco = make_ground_truth(size, seed)
    detections = make_detections(coco, per_image, seed)
    evaluator = CocoEvaluator(coco, iou_thrs=iou_thrs)
    run = {"baseline": baseline_evaluate, "new": evaluator.evaluate, "ndarray": ndarray_evaluate}[path]
    args = (detections,) if path == "new" else (evaluator, detections)
    gc.collect()
    baseline = rss_mib()
    reset = reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run(*args)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_rss_mib()
    return {
        "images": size,
        "ground_truth_boxes": len(coco.dataset["annotations"]),
        "detections": sum(len(d) for d in detections.values()),
        "rss_before_mib": round(baseline, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_above_baseline_mib": round(peak - baseline, 1),
        "peak_reset": reset,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "metrics": result["metrics"],
        "per_class_AP": result["per_class_AP"],
    }


def run_child(size: int, path: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--size", str(size), "--path", path]
    command += ["--per-image", str(args.per_image), "--seed", str(args.seed), "--iou-thrs", args.iou_thrs]
    log(f"size {size}, path {path} ...")
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    out = json.loads(done.stdout)
    log(f"  peak +{out['peak_above_baseline_mib']} MiB, {out['seconds']} s ({out['cpu_seconds']} s CPU)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000", help="validation set sizes (images), comma-separated")
    parser.add_argument("--paths", default="baseline,new", help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--per-image", type=int, default=100, help="detections per image (postprocess max: 100)")
    parser.add_argument("--iou-thrs", default="", help="CocoEvaluator iou_thrs, comma-separated (default none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "eval_memory.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    iou_thrs = [float(t) for t in args.iou_thrs.split(",") if t]
    if args.child:
        print(json.dumps(child(args.size, args.path, args.per_image, args.seed, iou_thrs)))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    paths = [p for p in args.paths.split(",") if p]
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown paths {sorted(unknown)}")
    started = time.perf_counter()
    report: dict = {
        "what": "peak memory and wall time of one COCO evaluation (Detections -> metrics), one fresh process each",
        "memory_measure": "peak RSS (Linux VmHWM, reset via /proc/self/clear_refs just before the evaluation) "
        "minus the RSS at that point, MiB; not tracemalloc",
        "baseline_rss_holds": "interpreter, numpy, torch, pycocotools, the ground truth and the Detections",
        "setup": {
            "classes": NUM_CLASSES,
            "image_size": [WIDTH, HEIGHT],
            "gt_boxes_per_image": "3-7 (mean 5)",
            "detections_per_image": args.per_image,
            "iou_thrs": iou_thrs,
            "seed": args.seed,
        },
        "host": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        },
        "sizes": {},
    }
    for size in sizes:
        runs = {path: run_child(size, path, args) for path in paths}
        reference = runs[paths[0]]
        entry: dict = {
            "images": size,
            "detections": reference["detections"],
            "ground_truth_boxes": reference["ground_truth_boxes"],
            "identical_metrics": all(
                r["metrics"] == reference["metrics"] and r["per_class_AP"] == reference["per_class_AP"]
                for r in runs.values()
            ),
            "mAP": reference["metrics"]["mAP"],
        }
        for path, r in runs.items():
            entry[path] = {
                k: r[k] for k in ("peak_above_baseline_mib", "seconds", "cpu_seconds", "rss_before_mib", "peak_reset")
            }
        if "baseline" in runs:
            old = runs["baseline"]
            for path in paths:
                if path != "baseline":
                    entry[f"{path}_vs_baseline"] = {
                        "peak_memory_ratio": round(
                            runs[path]["peak_above_baseline_mib"] / old["peak_above_baseline_mib"], 3
                        ),
                        "time_ratio": round(runs[path]["seconds"] / old["seconds"], 3),
                        "cpu_time_ratio": round(runs[path]["cpu_seconds"] / old["cpu_seconds"], 3),
                    }
        report["sizes"][str(size)] = entry
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
