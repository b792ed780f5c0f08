"""The training task's dataset conversion: image sizes from file headers (the executor) against a full decode
of every image, one by one (the baseline).

    .venv/bin/python bench/dataset_conversion.py [--n 2000] [--rows 100000] [--threads 16]

``--n`` generated 1920x1080 JPEGs with ark annotations; each mode in a fresh subprocess (its own peak RSS), the
files in the page cache; ``--rows`` rows over hard links (0 skips). Prints ONE JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import available_cores, host_info, log, peak_rss_mib, print_report  # noqa: E402

CLASSES = ["person", "car", "dog"]
WIDTH, HEIGHT = 1920, 1080
DISTINCT = 40


def photo(rng: np.random.Generator) -> np.ndarray:
    """A photo-like 1080p picture: gradient sky and ground, filled shapes, sensor noise."""
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :]
    base = rng.uniform(40, 200, 3).astype(np.float32)
    image = np.stack([base[c] + 50 * np.sin(3 * x + c) * y + 30 * x for c in range(3)], axis=-1)
    for _ in range(12):
        centre = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.circle(image, centre, int(rng.integers(20, 200)), colour, -1)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEGs with ark annotations and ``index.tsv`` (absolute paths) under ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    pictures = [cv2.imencode(".jpg", photo(rng), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for _ in range(DISTINCT)]
    lines = []
    for i in range(n):
        image, ann = root / "images" / f"{i:06d}.jpg", root / "annotations" / f"{i:06d}.txt"
        image.write_bytes(pictures[i % DISTINCT])
        boxes = []
        for _ in range(int(rng.integers(3, 9))):
            x1, y1 = int(rng.integers(0, WIDTH - 100)), int(rng.integers(0, HEIGHT - 100))
            x2, y2 = x1 + int(rng.integers(20, 100)), y1 + int(rng.integers(20, 100))
            boxes.append(f"{rng.integers(0, 3)}, {x1}, {y1}, {x2}, {y2}")
        ann.write_text("\n".join(boxes) + "\n")
        lines.append(f"{image}\t{ann}")
    (root / "index.tsv").write_text("\n".join(lines) + "\n")
    return root / "index.tsv"


def linked_index(root: Path, rows: int) -> Path:
    """An index of ``rows`` rows over hard links to the generated files (distinct paths)."""
    sources, links, lines = sorted((root / "images").glob("*.jpg")), root / "links", []
    links.mkdir(exist_ok=True)
    for i in range(rows):
        source, link = sources[i % len(sources)], links / f"{i:07d}.jpg"
        if not link.exists():
            os.link(source, link)
        lines.append(f"{link}\t{root / 'annotations' / (source.stem + '.txt')}")
    (root / "index_linked.tsv").write_text("\n".join(lines) + "\n")
    return root / "index_linked.tsv"


def child(index: Path, mode: str, threads: int) -> dict:
    """One conversion in this process (a subprocess of ``main``)."""
    import executor.dataset as dataset
    from executor.paths import PathMapper
    from nanodet.data.image_io import read_image

    if mode == "full_decode":
        dataset.image_size = lambda path: read_image(path).shape[1::-1]
    rss_before = peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pool = {"header_pool": True, "full_decode": False}.get(mode)
        out = Path(tmp) / "out.json"
        report = dataset.convert_split(index, PathMapper(), CLASSES, "ark", out, "bench", threads=threads, pool=pool)
        seconds, json_mib = time.perf_counter() - start, out.stat().st_size / 2**20
    out = {"images": report.images, "boxes": report.boxes, "seconds": round(seconds, 3)}
    out |= {"images_per_s": round(report.images / seconds, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}
    return out | {"rss_before_mib": round(rss_before, 1), "json_mib": round(json_mib, 2)}


def run_child(index: Path, mode: str, threads: int) -> dict:
    """After reading every file once, so that every mode finds them in the page cache."""
    for line in index.read_text().splitlines():
        for path in line.split("\t"):
            Path(path).read_bytes()
    command = [sys.executable, __file__, "--child", str(index), "--mode", mode, "--threads", str(threads)]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    log(f"{mode} ({threads} threads): {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="JPEGs to generate (1920x1080)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the hard-linked index (0: skip)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="header", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.mode, args.threads)))
        return
    with tempfile.TemporaryDirectory(prefix="conversion-bench-") as tmp:
        root, start = Path(tmp), time.perf_counter()
        index = generate(root, args.n)
        log(f"generated {args.n} JPEGs in {time.perf_counter() - start:.1f} s")
        runs = {
            "full_decode_serial": run_child(index, "full_decode", 1),
            "header": run_child(index, "header", args.threads),
            "header_pool": run_child(index, "header_pool", args.threads),
        }
        if args.rows:
            runs["header_100k"] = run_child(linked_index(root, args.rows), "header", args.threads)
        file_mib = sum(p.stat().st_size for p in (root / "images").glob("*.jpg")) / 2**20
    base, ours = runs["full_decode_serial"], runs["header"]
    report = {"bench": "dataset_conversion", "images": args.n, "image_size": [WIDTH, HEIGHT]}
    report |= {"mean_file_kib": round(file_mib * 1024 / args.n, 1), "threads": args.threads, "cores": available_cores()}
    report |= {"runs": runs, "speedup_header_vs_full_decode": round(base["seconds"] / ours["seconds"], 1)}
    report["speedup_header_pool_vs_full_decode"] = round(base["seconds"] / runs["header_pool"]["seconds"], 1)
    per_100k = {
        k: round(r["seconds"] / r["images"] * 100_000, 1) for k, r in (("full_decode_serial", base), ("header", ours))
    }
    report |= {"extrapolated_100k_s": per_100k, "host": host_info()}
    if "header_100k" in runs:
        report["measured_100k_rows_s"] = runs["header_100k"]["seconds"]
    print_report(report)


if __name__ == "__main__":
    main()
