"""Generators of bad inputs: every case is built from code at test time (no binary fixtures).

A case starts from a tiny, valid workspace (4 training + 2 validation images, 64 px input,
one epoch, no data-loading workers) and damages one thing. The helpers here write the
damaged pieces: garbage bytes, PNG headers that lie about their size, weights files of the
wrong kind, a pickle that would run code when loaded.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from executor.workspace import CLASSES, make_predict_workspace, make_training_workspace
from nanodet.config import load_config, save_config
from nanodet.weights.checkpoint import save_pth

from ..conftest import CONFIG_DIR, randomized_model

# Small enough that a whole start.py training run costs ~5 s on one core.
TINY_TRAINING = dict(
    train_images=4, val_images=2, epochs=1, input_size=64, batch_size_per_gpu=2, workers_per_gpu=0, val_intervals=1
)

GARBAGE = bytes(range(256)) * 4 + b"\xff\xfe\x80\x81 not text \xc3\x28"  # invalid UTF-8, not an image


def tiny_training(in_dir: Path, **hyper) -> Path:
    return make_training_workspace(in_dir, **{**TINY_TRAINING, **hyper})


def tiny_models(folder: Path) -> Path:
    """A /out/models as a finished training leaves it (3 classes, 64 px), without training."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").with_classes(CLASSES)
    cfg = cfg.merged({"data": {"val": {"input_size": [64, 64]}, "train": {"input_size": [64, 64]}}})
    save_pth(randomized_model(cfg, cls_bias=-3.0), folder / "nanodet_model_best.pth", inference_only=True)
    save_config(cfg, folder / "train_cfg.yml")
    return folder


def tiny_predict(in_dir: Path, models: Path, mining: bool = True, infer: bool = True, **hyper) -> Path:
    return make_predict_workspace(
        in_dir,
        models,
        candidates=3,
        mining=mining,
        infer=infer,
        **{"batch_size_per_gpu": 2, "workers_per_gpu": 0, **hyper},
    )


def jpeg_bytes(width: int = 96, height: int = 80, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def _png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with (almost) no data."""
    return _png(width, height, 8, 2, zlib.compress(b"\0" * 64))


def png_bomb(side: int = 21000) -> bytes:
    """A real decompression bomb: a complete, valid 1-bit PNG of ``side``² black pixels, ~60 kB
    on disk, that decodes to ``3·side²`` bytes of BGR (1.3 GB for 21000)."""
    row = b"\0" + b"\0" * ((side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return _png(side, side, 1, 0, idat)


def index_rows(index: Path) -> list[str]:
    return [line for line in index.read_text(encoding="utf-8").splitlines() if line.strip()]


def add_item(
    in_dir: Path,
    index_name: str,
    image: bytes | None,
    annotation: str | bytes | None,
    name: str | None = None,
    ann_name: str | None = None,
) -> tuple[str, str]:
    """Write an asset and its annotation under /in and append ``<image>\\t<annotation>`` to the index.
    ``None`` leaves that file absent."""
    digest = hashlib.sha1((image or b"") + str(annotation).encode() + (name or "").encode()).hexdigest()
    name = name or f"{digest}.jpg"
    ann_name = ann_name or f"{Path(name).stem}.txt"
    asset, ann = in_dir / "assets" / "xx" / name, in_dir / "annotations" / "xx" / ann_name
    asset.parent.mkdir(parents=True, exist_ok=True)
    ann.parent.mkdir(parents=True, exist_ok=True)
    if image is not None:
        asset.write_bytes(image)
    if annotation is not None:
        ann.write_bytes(annotation if isinstance(annotation, bytes) else annotation.encode("utf-8"))
    row = (f"/in/assets/xx/{name}", f"/in/annotations/xx/{ann_name}")
    index = in_dir / index_name
    with index.open("a", encoding="utf-8") as f:
        f.write(f"{row[0]}\t{row[1]}\n")
    return row


def annotation_files(in_dir: Path, index_name: str) -> list[Path]:
    return [in_dir / line.split("\t")[1][len("/in/") :] for line in index_rows(in_dir / index_name)]


def image_files(in_dir: Path, index_name: str) -> list[Path]:
    return [in_dir / line.split("\t")[0][len("/in/") :] for line in index_rows(in_dir / index_name)]


def edit_config(in_dir: Path, **changes) -> None:
    path = in_dir / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def foreign_architecture_weights(path: Path) -> None:
    """A valid PyTorch checkpoint of some other network: no tensor fits NanoDet."""
    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 7, 5), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    torch.save({"state_dict": other.state_dict()}, path)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious 'weights' file does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def code_running_pickle(path: Path, sentinel: Path) -> None:
    """A .pth that creates ``sentinel`` when unpickled with weights_only=False."""
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(f"touch '{sentinel}'")}, path)


def tree_snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under ``root`` (``skip`` left out)."""
    snap = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file() or path.is_symlink():
            st = path.lstat()
            snap[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
        elif path.is_dir():
            snap[str(path.relative_to(root)) + "/"] = (0, 0)
    return snap
