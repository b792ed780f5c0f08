"""``nanodet detect`` on a folder against the official NanoDet demo Predictor, side by side.

    .venv/bin/python bench/detect.py [--images 1024] [--config nanodet-plus-m_416.yml] [--threads 2]
                                     [--ref ../shared/ref] [--variants auto,torch,openvino,onnx]
                                     [--min-wh 480x360] [--max-wh 1280x960]

The same generated JPEGs (shapes pictures of ``--min-wh`` to ``--max-wh``) and the same weights (fixed
random weights calibrated like a trained model, ``bench._common.random_detector``, saved as an
official ``.pth``) go through:

* the official demo Predictor's loop (``bench/official_detect.py`` in the official code's
  environment, ``--ref``: see ``../shared/ref/README.md``), one image at a time as its demo does:
  the baseline, timed over its loop only (process start and model load left out);
* our ``python -m nanodet detect`` as a whole process (start, imports, model load, ONNX export
  for the ONNX backends, decode, NMS, JSON lines out) for each variant: ``auto`` (the default:
  the fastest installed CPU backend; its first run, which exports the graph), ``auto_cached``
  (``auto`` again: the export comes from the cache, as on every later run with these weights),
  ``torch``, ``onnxruntime``, ``openvino``, ``onnx`` (the exported file as ``--weights``, no
  config), ``one_stream`` (``auto_cached`` with ``--streams 1``: one forward at a time on all the
  threads, as before streams), ``reduced`` (``auto_cached`` with ``--reduced-decode``), each
  with ``--threads``. The export cache is a
  folder of this run (``NANODET_CACHE_DIR``), empty at the start.

``startup`` times the same commands on one image: what a run costs before its first image
(interpreter, imports, config, weights, export or cache hit, runtime session).

``breakdown`` is where the default's time goes, measured in this process on the first 128
images one stage at a time (no overlap): imports, building the predictor from the cached export,
and per image decode, warp + normalise, forward (at ``--batch-size``, one stream on all threads and
one thread per stream), NMS + mapping back, and the JSON line.

Every variant's detections (score > 0.05) are matched to the official ones image by image:
same class, box within 0.5 px, score within 1e-3. Prints ONE JSON object (progress on stderr).
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

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, host_info, log, random_detector  # noqa: E402
from nanodet.config import load_config  # noqa: E402
from nanodet.data.synthetic import synthetic_image  # noqa: E402
from nanodet.deploy.export import export_onnx  # noqa: E402
from nanodet.weights.checkpoint import save_pth  # noqa: E402

VARIANTS = ("auto", "auto_cached", "one_stream", "torch", "onnxruntime", "openvino", "onnx", "reduced")


def write_images(
    folder: Path, count: int, seed: int = 0, min_wh: tuple[int, int] = (480, 360), max_wh: tuple[int, int] = (1280, 960)
) -> list[tuple[int, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        size = (int(rng.integers(min_wh[0], max_wh[0] + 1)), int(rng.integers(min_wh[1], max_wh[1] + 1)))
        image, _, _ = synthetic_image(rng, size, max_objects=6, min_size=32, max_size=256)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        sizes.append(size)
    return sizes


def run_official(ref: Path, config: str, weights: Path, folder: Path, threads: int) -> dict:
    env = {**os.environ, "THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    ref_config = Path(os.environ.get("REF_DIR", "/tmp/nanodet-ref")) / "config" / config
    cmd = [str(ref / "run.sh"), str(REPO / "bench" / "official_detect.py"), str(ref_config), str(weights), str(folder)]
    start = time.perf_counter()
    # its Logger writes logs.txt into the working directory: the temp folder, not the repository
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=folder.parent)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the official run failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = round(wall, 3)
    # its inference prints "forward time: Xs | decode time: Ys" per image (the warm-up image first)
    forward = [float(t) for t in re.findall(r"forward time: ([0-9.]+)s", proc.stdout)][1:]
    decode = [float(t) for t in re.findall(r"decode time: ([0-9.]+)s", proc.stdout)][1:]
    out["forward_seconds"], out["decode_nms_seconds"] = round(sum(forward), 3), round(sum(decode), 3)
    return out


def run_ours(
    variant: str, config: Path, weights: Path, onnx: Path, folder: Path, threads: int, batch: int, cache: Path
) -> dict:
    model = ["--weights", str(onnx)] if variant == "onnx" else ["--config", str(config), "--weights", str(weights)]
    backend = "auto" if variant in ("onnx", "reduced", "auto_cached", "one_stream") else variant
    cmd = [sys.executable, "-m", "nanodet", "detect", *model, "--backend", backend, "--threads", str(threads)]
    cmd += ["--reduced-decode"] if variant == "reduced" else []
    cmd += ["--streams", "1"] if variant == "one_stream" else []
    cmd += ["--conf", "0.05", "--batch-size", str(batch), "--no-progress", str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NANODET_CACHE_DIR": str(cache)}
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


def breakdown(
    config: Path, weights: Path, folder: Path, threads: int, batch: int, cache: Path, count: int = 128
) -> dict:
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

    def nms(chunk_and_outputs: tuple[range, object]) -> list:
        chunk, outputs = chunk_and_outputs
        return p.detections(outputs, [inputs[i][1] for i in chunk], [sizes[i] for i in chunk])

    per_batch = per_image("nms_map_back_ms", nms, list(zip(chunks, raw)))
    dets = [d for batch_dets in per_batch for d in batch_dets]
    per_image(
        "json_line_ms",
        lambda i: json.dumps(detection_record(str(paths[i]), *sizes[i], dets[i].above(0.05), p.class_names)),
        range(len(paths)),
    )
    return out


def match(official: dict[str, list], ours: dict[str, list]) -> dict:
    """Official detections found in ours (same class, box within 0.5 px, score within 1e-3).
    Ours rounds boxes to 0.01 px and scores to 1e-4 in its JSON lines."""
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
    return {
        "official_detections": total,
        "matched": found,
        "ours_minus_official_count": extra,
        "max_box_px": round(float(worst_box), 3),
        "max_score": round(float(worst_score), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--config", default="nanodet-plus-m_416.yml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ref", default=str(REPO.parent / "shared" / "ref"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--min-wh", default="480x360", help="smallest generated picture, WxH")
    parser.add_argument("--max-wh", default="1280x960", help="largest generated picture, WxH")
    args = parser.parse_args()
    cfg = load_config(REPO / "config" / args.config)
    report: dict = {"benchmark": "bench/detect.py", "host": host_info(), "config": args.config}
    report["threads"], report["batch_size"] = args.threads, args.batch_size
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-detect-") as tmp_name:
        tmp = Path(tmp_name)
        log(f"writing {args.images} JPEGs ...")
        min_wh, max_wh = (tuple(int(v) for v in wh.split("x")) for wh in (args.min_wh, args.max_wh))
        sizes = write_images(tmp / "images", args.images, min_wh=min_wh, max_wh=max_wh)
        report["images"] = {
            "count": args.images,
            "min_wh": list(map(min, zip(*sizes))),
            "max_wh": list(map(max, zip(*sizes))),
        }
        weights = tmp / "weights.pth"
        save_pth(random_detector(cfg), weights)
        onnx = export_onnx(cfg, weights, tmp / "model.onnx", dynamic_batch=True)
        official = None
        if (Path(args.ref) / "run.sh").is_file():
            log("official demo Predictor ...")
            official = run_official(Path(args.ref), args.config, weights, tmp / "images", args.threads)
            loop_rate = official["images"] / official["loop_seconds"]
            report["official"] = {
                "loop_images_per_s": round(loop_rate, 2),
                "loop_seconds": official["loop_seconds"],
                "of_which_forward_seconds": official["forward_seconds"],
                "of_which_decode_nms_seconds": official["decode_nms_seconds"],
                "process_seconds": official["process_seconds"],
                "nms": "OpenCV's C++ NMSBoxes as torchvision.ops.nms (../shared/ref/setup.sh's stand-in)",
            }
        else:
            report["official"] = {"skipped": f"no official harness at {args.ref} (see ../shared/ref/README.md)"}
        report["ours"] = {}
        one = tmp / "one-image"
        one.mkdir()
        (one / "00000.jpg").symlink_to(tmp / "images" / "00000.jpg")
        config = REPO / "config" / args.config
        startup = {}
        for variant, cache in (
            ("auto", tmp / "cache-startup"),
            ("auto_cached", tmp / "cache-startup"),
            ("torch", tmp / "c"),
        ):
            startup[variant] = run_ours(variant, config, weights, onnx, one, args.threads, 1, cache)["process_seconds"]
        report["startup_seconds_one_image"] = startup
        log(f"start-up: {startup}")
        report["breakdown"] = breakdown(
            config, weights, tmp / "images", args.threads, args.batch_size, tmp / "cache-startup"
        )
        log(f"breakdown: {report['breakdown']}")
        for variant in args.variants.split(","):
            log(f"ours: {variant} ...")
            result = run_ours(
                variant, config, weights, onnx, tmp / "images", args.threads, args.batch_size, tmp / "cache"
            )
            rate = result["images"] / result["process_seconds"]
            entry = {"process_images_per_s": round(rate, 2), "process_seconds": result["process_seconds"]}
            if official is not None:
                entry["speedup_vs_official_loop"] = round(rate / report["official"]["loop_images_per_s"], 2)
                entry["parity"] = match(official["detections"], result["detections"])
            report["ours"][variant] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
