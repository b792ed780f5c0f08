"""Peak memory against the size of the work, beside the baseline of the same run.

    .venv/bin/python bench/memory.py --target candidates [--sizes 1000,10000] [--baseline-repo DIR]
    .venv/bin/python bench/memory.py --target eval [--sizes 1000,5000]

``candidates``: per size, that many 96x72 JPEGs (``--bad`` corrupt and as many missing) as one ALDD mining
+ infer task through start.py (CPU, one process): its peak RSS (``wait4``), and the growth from the
smallest size to the largest beside the result files'; ``--baseline-repo``: another checkout's start.py
on the same workspaces (made in a subprocess: a child's peak starts at its parent's size at the fork).
``eval``: per size, ground truth (3 classes, 3-7 boxes per 640x480 image) and 100 ``Detections`` per
image; one fresh process per (size, path) runs one evaluation after resetting its RSS high-water mark:
``new`` (``CocoEvaluator``) or ``baseline`` (the path before it, re-implemented here: tuples, COCO dicts,
``loadRes``, ``COCOeval``). Peak RSS above the RSS before, wall and CPU seconds; same metrics required.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _common as c  # noqa: E402

INFER_LOG = re.compile(r"infer: (\d+) images, (\d+) boxes, (\d+) unreadable, (\d+) missing")
WIDTH, HEIGHT, NUM_CLASSES = 640, 480, 3
PATHS = ("baseline", "new")
INPUT_SIZE, BATCH, WORKERS, CONF_THRES = 96, 32, 0, 0.3  # candidates; 0 workers: one process, whose peak is the task's
PER_IMAGE, SEED = 100, 0  # eval: detections per image (the post-processing's most), the seed
RATIOS = {"peak_memory_ratio": "peak_above_baseline_mib", "time_ratio": "seconds", "cpu_time_ratio": "cpu_seconds"}


def prepare(root: Path, sizes: list[int], args: argparse.Namespace) -> None:
    """``root/assets`` (the good and corrupt candidates), ``root/models`` and per size
    ``root/in-<size>``: env.yaml, config.yaml, the index, links to the shared folders."""
    import yaml

    from executor.workspace import write_env

    c.models_folder(root / "models", INPUT_SIZE)
    bad = args.bad
    good = c.small_candidates(root, max(sizes) - bad, seed=7)
    corrupt = [f"/in/assets/bad/corrupt-{k:03d}.jpg" for k in range(bad)]
    (root / "assets" / "bad").mkdir(parents=True, exist_ok=True)
    for path in corrupt:
        (root / path.removeprefix("/in/")).write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    for n in sizes:
        in_dir = root / f"in-{n}"
        in_dir.mkdir()
        (in_dir / "assets").symlink_to(root / "assets")
        (in_dir / "models").symlink_to(root / "models")
        rows = good[: n - 2 * bad]
        step = max(1, len(rows) // (2 * bad + 1))
        missing = [f"/in/assets/gone/missing-{k:03d}.jpg" for k in range(bad)]
        for k, path in enumerate(corrupt + missing):  # spread over the index
            rows.insert((k + 1) * step + k, path)
        (in_dir / "candidate-index.tsv").write_text("".join(f"{row}\n" for row in rows))
        write_env(in_dir, mining=True, infer=True)
        config = {"task_id": "t0000001bench", "class_names": list(c.CLASSES), "gpu_id": "", "gpu_count": 0}
        config |= {"model_params_path": ["nanodet_model_best.pth", "train_cfg.yml"], "run_mining": True}
        config |= {"run_infer": True, "mining_algorithm": "aldd", "conf_thres": CONF_THRES}
        config |= {"batch_size_per_gpu": BATCH, "workers_per_gpu": WORKERS, "pin_memory": False}
        (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def candidates_task(repo: Path, in_dir: Path, out: Path, env: dict) -> dict:
    run = c.run_start_py(in_dir, out, env, repo)
    text = run.pop("log")
    infer = INFER_LOG.search(text)
    counts = [int(v) for v in infer.groups()[1:]] if infer else [None] * 3
    files = {name: (out / name).stat().st_size for name in ("result.tsv", "infer-result.json")}
    lines = text.splitlines()
    report = {"candidates": sum(1 for line in (in_dir / "candidate-index.tsv").read_text().splitlines() if line)}
    report |= {
        "peak_rss_mib": run["peak_rss_mib"],
        "wall_s": round(run["wall_s"], 1),
        "batch_loop_s": run["batch_loop_s"],
    }
    report |= {"result_bytes": files, "result_bytes_total": sum(files.values())}
    report |= dict(zip(("boxes_reported", "unreadable", "missing"), counts))
    return report | {"warning_lines": sum(" WARNING " in line for line in lines), "log_lines": len(lines)}


def growth(runs: list[dict]) -> dict:
    """Peak RSS and result files from the smallest size to the largest, in all and per candidate."""
    small, large = runs[0], runs[-1]
    more = large["candidates"] - small["candidates"]
    rss = (large["peak_rss_mib"] - small["peak_rss_mib"]) * 2**20
    results = large["result_bytes_total"] - small["result_bytes_total"]
    report = {"from_to_candidates": [small["candidates"], large["candidates"]]}
    report |= {"peak_rss_growth_mib": round(rss / 2**20, 1), "result_files_growth_mib": round(results / 2**20, 2)}
    report |= {
        "peak_rss_growth_per_candidate_bytes": round(rss / more),
        "result_bytes_per_candidate": round(results / more),
    }
    return report | {"rss_growth_over_result_growth": round(rss / results, 2) if results else None}


def measure_candidates(args: argparse.Namespace, sizes: list[int]) -> dict:
    repos = {"this checkout": REPO} | ({"baseline": args.baseline_repo.resolve()} if args.baseline_repo else {})
    report: dict = {"task": "mining (aldd) + infer in one task, CPU, 1 process, through start.py"}
    report |= {"images": "96x72 JPEG shapes", "input_size": INPUT_SIZE, "batch_size_per_gpu": BATCH}
    report |= {"workers_per_gpu": WORKERS, "conf_thres": CONF_THRES}
    report |= {"corrupt_and_missing_per_size": [args.bad, args.bad], "runs": {}, "growth": {}}
    with tempfile.TemporaryDirectory(prefix="candidates-memory-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, __file__, "--prepare", str(root), *sys.argv[1:]], check=True, env=env)
        report["workspaces_prepared_s"] = round(time.perf_counter() - start, 1)
        c.log(f"workspaces for {sizes} ready in {report['workspaces_prepared_s']} s")
        (root / "no-weights").mkdir()
        env |= {"NANODET_WEIGHTS_DIR": str(root / "no-weights"), "TORCH_HOME": str(root / "no-weights")}
        for label, repo in repos.items():
            runs = report["runs"][label] = []
            for n in sizes:
                runs.append(candidates_task(repo, root / f"in-{n}", root / f"out-{len(report['runs'])}-{n}", env))
                c.log(f"{label}, {n} candidates: {json.dumps(runs[-1])}")
            if len(runs) > 1:
                report["growth"][label] = growth(runs)
    report["host"] = c.host_info()  # torch imported only now, after the tasks
    report["note"] = (
        "peak_rss_mib: ru_maxrss of the task's process tree (wait4), the largest single process; "
        "peak_rss_growth_per_candidate_bytes is what each extra candidate costs at the peak, "
        "index paths and results included"
    )
    return report


def make_ground_truth(num_images: int, seed: int):
    """3 classes (ids 1-3), 3-7 boxes per image, 8 to 300 px (all three COCO area ranges)."""
    import numpy as np
    from pycocotools.coco import COCO

    rng = np.random.default_rng([seed, 0])
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": WIDTH, "height": HEIGHT})
        count = int(rng.integers(3, 8))
        wh = np.exp(rng.uniform(np.log(8), np.log(300), size=(count, 2)))
        xy = rng.uniform(0, 1, size=(count, 2)) * ([WIDTH, HEIGHT] - wh)
        labels = rng.integers(1, NUM_CLASSES + 1, size=count)
        for (x, y), (w, h), cat in zip(xy.tolist(), wh.tolist(), labels.tolist()):
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h]}
            annotations.append(ann | {"area": w * h, "iscrowd": 0})
    coco = COCO()
    categories = [{"id": i + 1, "name": f"class{i}"} for i in range(NUM_CLASSES)]
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def make_detections(coco, per_image: int, seed: int) -> dict:
    """``per_image`` detections per image: 3 jittered copies of each true box (one in 10 of a wrong
    class), the rest random boxes; scores uniform, higher on average for the copies."""
    import numpy as np

    from nanodet.inference.detections import Detections

    rng = np.random.default_rng([seed, 1])
    cat_ids = sorted(coco.getCatIds())
    detections = {}
    for image_id in coco.getImgIds():
        anns = coco.imgToAnns[image_id]
        gt = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        gt_labels = np.array([cat_ids.index(a["category_id"]) for a in anns], dtype=np.int64)
        copies = np.repeat(gt, 3, axis=0)[:per_image]
        xywh = copies + rng.normal(0, 0.1, size=copies.shape) * copies[:, [2, 3, 2, 3]]
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
        boxes = np.clip(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1), 0, [WIDTH, HEIGHT] * 2)
        order = np.argsort(-scores, kind="stable")
        detections[image_id] = Detections(
            boxes=boxes[order].astype(np.float32), scores=scores[order].astype(np.float32), labels=labels[order]
        )
    return detections


def baseline_evaluate(evaluator, detections: dict) -> dict:
    """The path before ``CocoEvaluator`` took ``Detections``: ``as_coco_detections`` (tuples per
    image, alive through the evaluation), COCO dicts, ``loadRes``, ``COCOeval``."""
    from pycocotools.cocoeval import COCOeval

    from nanodet.config import METRIC_NAMES

    tuples = {
        img_id: [(box.tolist(), float(s), int(lab)) for box, s, lab in zip(d.boxes, d.scores, d.labels)]
        for img_id, d in detections.items()
    }
    coco_gt, cat_ids = evaluator.coco_gt, evaluator.cat_ids
    known_images = set(coco_gt.getImgIds())
    results = []
    for image_id, image_detections in tuples.items():
        if int(image_id) not in known_images:
            raise KeyError(image_id)
        for box, score, label in image_detections:
            if not 0 <= int(label) < len(cat_ids):
                raise ValueError(label)
            x1, y1, x2, y2 = (float(v) for v in box)
            bbox = [x1, y1, x2 - x1, y2 - y1]
            results.append({"image_id": int(image_id), "category_id": cat_ids[label], "bbox": bbox, "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats) if v > -1}
    return {"metrics": metrics, "per_class_AP": evaluator._per_class_ap(coco_eval.eval["precision"])}


def eval_child(size: int, path: str, per_image: int, seed: int) -> dict:
    from nanodet.evaluation.coco import CocoEvaluator

    coco = make_ground_truth(size, seed)
    detections = make_detections(coco, per_image, seed)
    evaluator = CocoEvaluator(coco, iou_thrs=[])
    gc.collect()
    before = c.rss_mib()
    reset = c.reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = evaluator.evaluate(detections) if path == "new" else baseline_evaluate(evaluator, detections)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = c.peak_rss_mib()
    report = {"images": size, "ground_truth_boxes": len(coco.dataset["annotations"])}
    report |= {"detections": sum(len(d) for d in detections.values()), "rss_before_mib": round(before, 1)}
    report |= {"peak_rss_mib": round(peak, 1), "peak_above_baseline_mib": round(peak - before, 1), "peak_reset": reset}
    report |= {"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2)}
    return report | {"metrics": result["metrics"], "per_class_AP": result["per_class_AP"]}


def measure_eval(args: argparse.Namespace, sizes: list[int]) -> dict:
    started = time.perf_counter()
    report: dict = {
        "what": "peak memory and wall time of one COCO evaluation (Detections -> metrics), one fresh process each",
        "memory_measure": "peak RSS (Linux VmHWM, reset via /proc/self/clear_refs just before the evaluation) "
        "minus the RSS at that point, MiB; not tracemalloc",
        "baseline_rss_holds": "interpreter, numpy, torch, pycocotools, the ground truth and the Detections",
        "setup": {"classes": NUM_CLASSES, "image_size": [WIDTH, HEIGHT], "gt_boxes_per_image": "3-7 (mean 5)"}
        | {"detections_per_image": PER_IMAGE, "iou_thrs": [], "seed": SEED},
        "host": c.host_info(),
        "sizes": {},
    }
    for size in sizes:
        runs = {}
        for path in PATHS:
            command = [sys.executable, __file__, "--target", "eval", "--child-size", str(size), "--child-path", path]
            runs[path] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            c.log(f"size {size}, {path}: peak +{runs[path]['peak_above_baseline_mib']} MiB, {runs[path]['seconds']} s")
        old, new = runs["baseline"], runs["new"]
        same = new["metrics"] == old["metrics"] and new["per_class_AP"] == old["per_class_AP"]
        entry: dict = {"images": size, "detections": old["detections"], "ground_truth_boxes": old["ground_truth_boxes"]}
        entry |= {"identical_metrics": same, "mAP": old["metrics"]["mAP"]}
        for path, r in runs.items():
            keys = ("peak_above_baseline_mib", "seconds", "cpu_seconds", "rss_before_mib", "peak_reset")
            entry[path] = {k: r[k] for k in keys}
        ratio = {k: round(new[key] / old[key], 3) for k, key in RATIOS.items()}
        entry["new_vs_baseline"] = ratio
        report["sizes"][str(size)] = entry
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("candidates", "eval"), required=True)
    parser.add_argument("--sizes", help="candidates or images, comma-separated (default 1000,10000 / 1000,5000)")
    parser.add_argument("--out", type=Path, help="default: bench/results/candidates_memory.json / eval_memory.json")
    parser.add_argument("--bad", type=int, default=10, help="candidates: corrupt files, and as many missing, per size")
    parser.add_argument("--baseline-repo", type=Path, help="candidates: another checkout run on the same workspaces")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)  # internal: make the workspaces there
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)  # internal: one evaluation
    parser.add_argument("--child-path", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    default_sizes = "1000,10000" if args.target == "candidates" else "1000,5000"
    sizes = sorted(int(s) for s in (args.sizes or default_sizes).split(","))
    if args.prepare:
        prepare(args.prepare, sizes, args)
    elif args.child_size:
        print(json.dumps(eval_child(args.child_size, args.child_path, PER_IMAGE, SEED)))
    elif args.target == "candidates":
        c.print_report(measure_candidates(args, sizes), args.out or c.RESULTS / "candidates_memory.json", indent=1)
    else:
        c.print_report(measure_eval(args, sizes), args.out or c.RESULTS / "eval_memory.json")


if __name__ == "__main__":
    main()
