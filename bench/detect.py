"""``nanodet detect`` on a folder (the whole process) against the official NanoDet demo Predictor's loop
alone (the baseline, ``bench/official_detect.py`` in its environment), same JPEGs and weights
(``bench._common.random_detector``, saved as an official ``.pth``).

    .venv/bin/python bench/detect.py [--images 1024] [--config nanodet-plus-m_416.yml] [--variants auto,...]
                                     [--min-wh 480x360] [--max-wh 1280x960] [--out FILE]

Variants: ``auto`` (first run: exports), ``auto_cached``, ``torch``, ``onnxruntime``, ``openvino``, ``onnx``
(the export as ``--weights``), ``one_stream``, ``reduced`` (``--reduced-decode``); 2 threads, batch 16.
``startup_seconds_one_image``; ``breakdown``: the stages one at a time in this process on 128 images;
``parity``: official detections matched (same class, box within 0.5 px, score within 1e-3). Prints ONE
JSON object (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _common as c  # noqa: E402

THREADS, BATCH = 2, 16
VARIANTS = ("auto", "auto_cached", "one_stream", "torch", "onnxruntime", "openvino", "onnx", "reduced")


def run_official(config: str, weights: Path, folder: Path, threads: int) -> dict | None:
    command = c.official_command(REPO / "bench" / "official_detect.py", c.REF_CODE / "config" / config, weights, folder)
    if command is None:
        return None
    env = {**os.environ, "THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    # its Logger writes logs.txt into the working directory: the temp folder, not the repository
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder.parent)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the official run failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # it prints "forward time: Xs | decode time: Ys" per image, the warm-up image first
    forward = [float(t) for t in re.findall(r"forward time: ([0-9.]+)s", proc.stdout)][1:]
    decode = [float(t) for t in re.findall(r"decode time: ([0-9.]+)s", proc.stdout)][1:]
    return (
        out
        | {"process_seconds": round(wall, 3), "forward_seconds": round(sum(forward), 3)}
        | {"decode_nms_seconds": round(sum(decode), 3)}
    )


def run_ours(variant: str, config: Path, weights: Path, onnx: Path, folder: Path, batch: int, cache: Path) -> dict:
    model = ["--weights", str(onnx)] if variant == "onnx" else ["--config", str(config), "--weights", str(weights)]
    backend = "auto" if variant in ("onnx", "reduced", "auto_cached", "one_stream") else variant
    cmd = [sys.executable, "-m", "nanodet", "detect", *model, "--backend", backend, "--threads", str(THREADS)]
    cmd += {"reduced": ["--reduced-decode"], "one_stream": ["--streams", "1"]}.get(variant, [])
    cmd += ["--conf", "0.05", "--batch-size", str(batch), "--no-progress", str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "NANODET_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}: {proc.stderr[-2000:]}")
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    detections = {
        Path(r["file"]).name: [[*d["bbox"], d["score"], d["class_id"]] for d in r["detections"]] for r in records
    }
    return {"images": len(records), "process_seconds": round(wall, 3), "detections": detections}


def breakdown(config: Path, weights: Path, folder: Path, threads: int, batch: int, cache: Path, count=128) -> dict:
    """Milliseconds per image of each stage of the default path, one stage at a time."""
    import torch

    from nanodet.data.image_io import read_image
    from nanodet.data.preprocess import pad_batch
    from nanodet.inference.detect import detection_record
    from nanodet.inference.predictor import Predictor

    code = "import time; t = time.perf_counter(); import nanodet.cli, nanodet.inference.detect, "
    code += "nanodet.inference.predictor, onnxruntime, openvino; print(time.perf_counter() - t)"
    imports = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout)
    torch.set_num_threads(threads)
    os.environ["NANODET_CACHE_DIR"] = str(cache)
    paths = sorted(folder.glob("*.jpg"))[:count]
    out: dict = {"images": len(paths), "imports_s": round(imports, 3)}

    def per_image(key: str, fn, items) -> list:
        t = time.perf_counter()
        results = [fn(item) for item in items]
        out[key] = round((time.perf_counter() - t) / len(paths) * 1e3, 2)
        return results

    start = time.perf_counter()
    p = Predictor(config, weights, threads=threads, streams=1)
    out["build_predictor_cached_export_s"] = round(time.perf_counter() - start, 3)
    out["backend"] = p.backend
    images = per_image("decode_ms", read_image, paths)
    inputs = per_image("warp_normalize_ms", p.preprocess, images)
    chunks = [range(i, min(i + batch, len(paths))) for i in range(0, len(paths), batch)]
    batches = [pad_batch([inputs[i][0] for i in c]) for c in chunks]
    p.run(batches[0])  # warm-up (OpenVINO compiles per batch size)
    raw = per_image("forward_ms_one_stream", p.run, batches)
    streamed = Predictor(config, weights, threads=threads, streams=threads)
    streamed.run(batches[0])
    with ThreadPoolExecutor(threads) as pool:  # `threads` batches at once, one thread each, as detect runs them
        per_image(f"forward_ms_{threads}_streams", lambda bs: list(pool.map(streamed.run, bs)), [batches])
    sizes = [(im.shape[1], im.shape[0]) for im in images]

    def nms(chunk_and_outputs) -> list:
        chunk, outputs = chunk_and_outputs
        return p.detections(outputs, [inputs[i][1] for i in chunk], [sizes[i] for i in chunk])

    dets = [d for batch_dets in per_image("nms_map_back_ms", nms, list(zip(chunks, raw))) for d in batch_dets]
    per_image(
        "json_line_ms",
        lambda i: json.dumps(detection_record(str(paths[i]), *sizes[i], dets[i].above(0.05), p.class_names)),
        range(len(paths)),
    )
    return out


def match(official: dict[str, list], ours: dict[str, list]) -> dict:
    """Official detections found in ours (same class, box within 0.5 px, score within 1e-3; ours
    rounds boxes to 0.01 px and scores to 1e-4 in its JSON lines)."""
    import numpy as np

    total = found = 0
    worst_box = worst_score = 0.0
    for name, theirs in official.items():
        mine = np.asarray(ours.get(name, []), dtype=np.float64).reshape(-1, 6)
        for det in theirs:
            total += 1
            same = mine[mine[:, 5] == det[5]]
            if not len(same):
                continue
            box_err = np.abs(same[:, :4] - det[:4]).max(axis=1)
            score_err = np.abs(same[:, 4] - det[4])
            best = int(np.argmin(box_err + score_err))
            if box_err[best] <= 0.5 and score_err[best] <= 1e-3:
                found += 1
                worst_box, worst_score = max(worst_box, box_err[best]), max(worst_score, score_err[best])
    extra = sum(len(v) for v in ours.values()) - total
    report = {"official_detections": total, "matched": found, "ours_minus_official_count": extra}
    return report | {"max_box_px": round(float(worst_box), 3), "max_score": round(float(worst_score), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--config", default="nanodet-plus-m_416.yml")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--min-wh", default="480x360", help="smallest generated picture, WxH")
    parser.add_argument("--max-wh", default="1280x960", help="largest generated picture, WxH")
    parser.add_argument("--out", type=Path, help="the JSON here too")
    args = parser.parse_args()

    from nanodet.config import load_config
    from nanodet.deploy.export import export_onnx
    from nanodet.weights.checkpoint import save_pth

    config = REPO / "config" / args.config
    cfg = load_config(config)
    report: dict = {"benchmark": "bench/detect.py", "host": c.host_info(), "config": args.config}
    report["threads"], report["batch_size"] = THREADS, BATCH
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-detect-") as tmp_name:
        tmp = Path(tmp_name)
        c.log(f"writing {args.images} JPEGs ...")
        min_wh, max_wh = ([int(v) for v in wh.split("x")] for wh in (args.min_wh, args.max_wh))
        sizes = c.shapes_jpegs(tmp / "images", args.images, 0, min_wh, max_wh)
        report["images"] = {
            "count": args.images,
            "min_wh": list(map(min, zip(*sizes))),
            "max_wh": list(map(max, zip(*sizes))),
        }
        weights = tmp / "weights.pth"
        save_pth(c.random_detector(cfg), weights)
        onnx = export_onnx(cfg, weights, tmp / "model.onnx", dynamic_batch=True)
        c.log("official demo Predictor ...")
        official = run_official(args.config, weights, tmp / "images", THREADS)
        if official is None:
            report["official"] = {"skipped": "no official harness (../shared/ref/README.md)"}
        else:
            rate = round(official["images"] / official["loop_seconds"], 2)
            report["official"] = {"loop_images_per_s": rate, "loop_seconds": official["loop_seconds"]} | {
                "of_which_forward_seconds": official["forward_seconds"],
                "of_which_decode_nms_seconds": official["decode_nms_seconds"],
                "process_seconds": official["process_seconds"],
                "nms": "OpenCV's C++ NMSBoxes as torchvision.ops.nms (../shared/ref/setup.sh's stand-in)",
            }
        (tmp / "one-image").mkdir()
        (tmp / "one-image" / "00000.jpg").symlink_to(tmp / "images" / "00000.jpg")
        startup = {}
        for variant, cache in (("auto", "cache-startup"), ("auto_cached", "cache-startup"), ("torch", "c")):
            run = run_ours(variant, config, weights, onnx, tmp / "one-image", 1, tmp / cache)
            startup[variant] = run["process_seconds"]
        report["startup_seconds_one_image"] = startup
        c.log(f"start-up: {startup}")
        report["breakdown"] = breakdown(config, weights, tmp / "images", THREADS, BATCH, tmp / "cache-startup")
        c.log(f"breakdown: {report['breakdown']}")
        report["ours"] = {}
        for variant in args.variants.split(","):
            c.log(f"ours: {variant} ...")
            result = run_ours(variant, config, weights, onnx, tmp / "images", BATCH, tmp / "cache")
            rate = result["images"] / result["process_seconds"]
            entry = {"process_images_per_s": round(rate, 2), "process_seconds": result["process_seconds"]}
            if official is not None:
                entry["speedup_vs_official_loop"] = round(rate / report["official"]["loop_images_per_s"], 2)
                entry["parity"] = match(official["detections"], result["detections"])
            report["ours"][variant] = entry
    c.print_report(report, args.out, indent=None)


if __name__ == "__main__":
    main()
