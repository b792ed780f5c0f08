"""A COCO-format detection dataset for training and evaluation.

Each sample is augmented with its own random generator, seeded from (seed, epoch, index):
the augmentation of an image does not depend on which worker process loads it or on
what ran before, so a resumed run sees exactly the data a straight run would have.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset, Sampler

from ..config import DatasetConfig
from .image_io import ImageReadError, read_image
from .transforms import EvalTransform, TrainTransform, stack_batch

log = logging.getLogger(__name__)


def load_coco(ann_path: str | Path) -> COCO:
    """pycocotools' COCO without its prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_path))


class CocoDetection(Dataset):
    """Images and boxes of a COCO json; labels are 0-based in category-id order.

    Items are indexed by ``(index, epoch)`` pairs (see :class:`EpochSampler`) so that the
    random augmentation of every sample is reproducible.
    """

    def __init__(self, ann_path: str | Path, img_dir: str | Path, transform, seed: int = 0) -> None:
        self.coco = load_coco(ann_path)
        self.img_dir = Path(img_dir)
        self.transform = transform
        self.seed = seed
        self.cat_ids = sorted(self.coco.getCatIds())
        self.class_names = [c["name"] for c in self.coco.loadCats(self.cat_ids)]
        self.label_of = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.img_ids = sorted(self.coco.getImgIds())
        self.ann_path = Path(ann_path)
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.img_ids)

    def _skip(self, index: int, message: str) -> None:
        """Warn once per image (per loading process); the batch counts the skip every time."""
        if index not in self._warned:
            self._warned.add(index)
            log.warning("%s", message)

    def annotations(self, img_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (xyxy) and labels of an image, crowd regions left out."""
        anns = [a for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[img_id])) if not a.get("iscrowd", 0)]
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            dtype=np.float32,
        ).reshape(-1, 4)
        labels = np.array([self.label_of[a["category_id"]] for a in anns], dtype=np.int64)
        return boxes, labels

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        img_id = self.img_ids[index]
        info = self.coco.imgs[img_id]
        path = self.img_dir / info["file_name"]
        try:
            image = read_image(path)
        except ImageReadError as err:
            self._skip(index, f"skipping unreadable image {err}")
            return None
        size = (image.shape[1], image.shape[0])
        if (info.get("width"), info.get("height")) not in ((None, None), size):  # the header lied: boxes don't fit
            self._skip(
                index,
                f"skipping {path}: decoded as {size[0]}x{size[1]}, "
                f"{info['width']}x{info['height']} in {self.ann_path.name}",
            )
            return None
        boxes, labels = self.annotations(img_id)
        rng = np.random.default_rng([self.seed, epoch, index])
        chw, boxes, labels, matrix = self.transform(image, boxes, labels, rng)
        return {
            "img": torch.from_numpy(chw),
            "gt_bboxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "gt_labels": torch.from_numpy(labels),
            "warp_matrix": matrix,
            "img_id": img_id,
            "size": size,
            "path": str(path),
        }


@dataclass
class TrainBatch:
    images: torch.Tensor
    gt_bboxes: list[torch.Tensor]
    gt_labels: list[torch.Tensor]
    warp_matrices: list[np.ndarray]
    img_ids: list[int]
    sizes: list[tuple[int, int]]
    paths: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.img_ids)

    def pin_memory(self) -> TrainBatch:
        self.images = self.images.pin_memory()
        return self


def collate_detection(items: list[dict | None]) -> TrainBatch | None:
    """One batch of the loaded samples (unreadable ones, ``None``, counted in ``skipped``).

    Images of different sizes (``multi_scale``) are padded right and bottom to the largest,
    rounded up to a multiple of 32 (:func:`stack_batch`); boxes keep their coordinates."""
    ok = [it for it in items if it is not None]
    if not ok:
        return None
    return TrainBatch(
        images=stack_batch([it["img"] for it in ok]),
        gt_bboxes=[it["gt_bboxes"] for it in ok],
        gt_labels=[it["gt_labels"] for it in ok],
        warp_matrices=[it["warp_matrix"] for it in ok],
        img_ids=[it["img_id"] for it in ok],
        sizes=[it["size"] for it in ok],
        paths=[it["path"] for it in ok],
        skipped=len(items) - len(ok),
    )


class EpochSampler(Sampler):
    """Wraps an index sampler and yields ``(index, epoch)``; ``set_epoch`` reaches both."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((i, self.epoch) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def build_transform(cfg: DatasetConfig, train: bool) -> EvalTransform | TrainTransform:
    """The evaluation transform, or the training one (augmentation, and ``multi_scale`` if set).

    Evaluation always runs at ``input_size`` (a config refuses ``data.val.multi_scale``)."""
    p = cfg.pipeline
    if not train:
        return EvalTransform(tuple(cfg.input_size), cfg.keep_ratio, p.normalize)
    return TrainTransform(
        input_wh=tuple(cfg.input_size),
        keep_ratio=cfg.keep_ratio,
        perspective=p.perspective,
        scale=p.scale,
        stretch=p.stretch,
        rotation=p.rotation,
        shear=p.shear,
        translate=p.translate,
        flip=p.flip,
        brightness=p.brightness,
        contrast=p.contrast,
        saturation=p.saturation,
        normalize=p.normalize,
        multi_scale=cfg.multi_scale,
    )


def build_dataset(cfg: DatasetConfig, train: bool, seed: int = 0) -> CocoDetection:
    return CocoDetection(cfg.ann_path, cfg.img_path, build_transform(cfg, train), seed=seed)
