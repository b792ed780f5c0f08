"""A small platform-format workspace in the layout of the platform's own test sample.

Four images with ark annotations exactly as the YMIR SDK's sample writes them: flat
``/in/assets/<name>.jpg`` and ``/in/annotations/<name>.txt`` (no hash subfolders), fields
joined by ``,`` without spaces, inclusive corners, one file with a 6th column, two images with
two boxes, five classes of which one ("bottle") has no box. The pictures are generated (a
textured background with a filled shape in each box), so the repository carries no photos.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SAMPLE_CLASSES = ["bowl", "cat", "bottle", "cup", "spoon"]
SAMPLE_SIZES = {"bowl": (1280, 1120), "cat": (1200, 800), "cup": (1024, 1080), "spoon": (1160, 1140)}
SAMPLE_ANNOTATIONS = {
    "bowl": ["0,619,667,1030,1055"],
    "cat": ["1,128,105,1064,548"],
    "cup": ["2,630,577,876,926", "3,267,771,544,969"],
    "spoon": ["0,148,223,908,819,0", "4,270,770,1073,1068,0"],
}


def sample_image(name: str, seed: int) -> np.ndarray:
    """A BGR picture with a filled ellipse or rectangle inside each annotated box."""
    rng = np.random.default_rng(seed)
    width, height = SAMPLE_SIZES[name]
    gradient = np.linspace(0, 1, width)[None, :, None] * rng.uniform(40, 120, 3)
    image = (60 + gradient + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)
    for line in SAMPLE_ANNOTATIONS[name]:
        cls, x1, y1, x2, y2 = (int(v) for v in line.split(",")[:5])
        colour = tuple(int(c) for c in rng.integers(120, 255, 3))
        if cls % 2:
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness=-1)
        else:
            cv2.ellipse(image, (((x1 + x2) / 2, (y1 + y2) / 2), (x2 - x1, y2 - y1), 0.0), colour, thickness=-1)
    return image


def write_sample(in_dir: Path) -> Path:
    """Assets, annotations and the three index files under ``in_dir`` (paths as ``/in/...``)."""
    (in_dir / "assets").mkdir(parents=True, exist_ok=True)
    (in_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for seed, (name, lines) in enumerate(SAMPLE_ANNOTATIONS.items()):
        cv2.imwrite(str(in_dir / "assets" / f"{name}.jpg"), sample_image(name, seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
        (in_dir / "annotations" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    names = list(SAMPLE_ANNOTATIONS)
    rows = "".join(f"/in/assets/{n}.jpg\t/in/annotations/{n}.txt\n" for n in names)
    (in_dir / "train-index.tsv").write_text(rows)
    (in_dir / "val-index.tsv").write_text(rows)
    (in_dir / "candidate-index.tsv").write_text("".join(f"/in/assets/{n}.jpg\n" for n in names))
    return in_dir
