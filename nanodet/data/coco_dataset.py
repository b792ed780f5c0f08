"""A COCO-format detection dataset for training and evaluation.

Each sample is augmented with its own random generator, seeded from (seed, epoch, index):
the augmentation of an image does not depend on which worker process loads it or on
what ran before, so a resumed run sees exactly the data a straight run would have.

A training sample is made the fast way (:meth:`~nanodet.data.transforms.TrainTransform.sample_drawn`):
the sample is drawn first (on the size in the JPEG's header), the image decoded at the reduced size
that draw needs (:func:`~nanodet.data.transforms.draw_decode_factor`; with ``cache_images``, taken
from the cache, :mod:`.image_cache`, at the size every draw allows), warped to ``uint8``; the batch carries each
sample's colour factors and :meth:`TrainBatch.inputs` makes the network's input from it (in the
DataLoader workers for a CPU run, on the GPU for a CUDA one). ``reference=True`` makes the
samples the official way instead (whole decode, colour and normalisation per image): the
baseline of the tests and benchmarks.
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
from .image_cache import CacheMode, ImageCache, make_image_cache
from .image_io import ImageReadError, read_image, read_image_scaled
from .transforms import (
    Draw,
    EvalTransform,
    TrainTransform,
    batch_buffer,
    batch_shape_hwc,
    colour_and_normalize,
    colour_and_normalize_hwc,
    draw_decode_factor,
    stack_batch,
    stack_uint8,
)

JPEG_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}

log = logging.getLogger(__name__)


def load_coco(ann_path: str | Path) -> COCO:
    """pycocotools' COCO without its prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_path))


class CocoDetection(Dataset):
    """Images and boxes of a COCO json; labels are 0-based in category-id order.

    Items are indexed by ``(index, epoch)`` pairs (see :class:`EpochSampler`) so that the
    random augmentation of every sample is reproducible.

    Fast training samples decode each JPEG at their own draw's reduction (``decode_per_draw``),
    or, with ``decode_per_draw=False`` and always with a ``cache_images`` cache, at the image's:
    the reduction every draw allows, so that one stored decode serves every epoch. The two give
    the same draws and boxes; their pixels differ by resampling only, where a draw's zoom allows a
    further reduction (both within the official samples' tolerance, ``tests/test_training_samples.py``).
    """

    def __init__(
        self,
        ann_path: str | Path,
        img_dir: str | Path,
        transform,
        seed: int = 0,
        cache_images: CacheMode = "none",
        reference: bool = False,
        cache_budget: int | None = None,
        decode_per_draw: bool = True,
    ) -> None:
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
        self.fast = isinstance(transform, TrainTransform) and not reference
        self.decode_per_draw = decode_per_draw
        self.cache: ImageCache | None = None
        if cache_images != "none" and not self.fast:
            log.warning("cache_images: %s is for the training set (fast samples): not caching", cache_images)
        elif cache_images != "none":
            self.cache = make_image_cache(
                cache_images, [self._cached_shape(i) for i in self.img_ids], None, cache_budget
            )

    def _cached_shape(self, img_id: int) -> tuple[int, int, int] | None:
        """(height, width, factor) an image decodes to for training, from the annotation file's
        size (None without one: such an image is never cached)."""
        info = self.coco.imgs[img_id]
        width, height = info.get("width"), info.get("height")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            return None
        jpeg = Path(info["file_name"]).suffix.lower() in JPEG_SUFFIXES
        factor = self.transform.decode_factor(width, height) if jpeg else 1
        return -(-height // factor), -(-width // factor), factor

    def _read_for_training(
        self, index: int, path: Path, seed: list[int]
    ) -> tuple[np.ndarray, int, tuple[int, int], Draw]:
        """(image at 1/k, k, original (w, h), this sample's draw).

        Uncached (and ``decode_per_draw``), the draw comes first (on the size in the JPEG's header)
        and the image is decoded at that draw's own factor (:func:`draw_decode_factor`). With a
        cache the image is the one decoded at the image's factor (:meth:`TrainTransform.decode_factor`,
        what every draw allows), from the cache or decoded and stored. The draw is always made on
        the size the image decoded as, with a generator seeded by ``seed``: the same draw either way."""
        info = self.coco.imgs[self.img_ids[index]]
        draws: dict[tuple[int, int], Draw] = {}

        def draw_on(width: int, height: int) -> Draw:
            if (width, height) not in draws:
                draws[width, height] = self.transform.draw(np.random.default_rng(seed), width, height)
            return draws[width, height]

        if self.cache is None and self.decode_per_draw:
            image, factor, size = read_image_scaled(path, lambda w, h: draw_decode_factor(draw_on(w, h).matrix))
            return image, factor, size, draw_on(*size)
        image = self.cache.get(index) if self.cache is not None else None
        if image is not None:
            size = (info["width"], info["height"])
            return image, self.cache.slot(index).factor, size, draw_on(*size)
        image, factor, size = read_image_scaled(path, self.transform.decode_factor)
        if self.cache is not None and size == (info.get("width"), info.get("height")):
            self.cache.put(index, image, factor)
        return image, factor, size, draw_on(*size)

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
        seed = [self.seed, epoch, index]
        try:
            if self.fast:
                image, factor, size, draw = self._read_for_training(index, path, seed)
            else:
                image = read_image(path)
                size = (image.shape[1], image.shape[0])
        except ImageReadError as err:
            self._skip(index, f"skipping unreadable image {err}")
            return None
        if (info.get("width"), info.get("height")) not in ((None, None), size):  # the header lied: boxes don't fit
            self._skip(
                index,
                f"skipping {path}: decoded as {size[0]}x{size[1]}, "
                f"{info['width']}x{info['height']} in {self.ann_path.name}",
            )
            return None
        boxes, labels = self.annotations(img_id)
        extra = {}
        if self.fast:
            hwc, boxes, labels, matrix, colour = self.transform.sample_drawn(image, boxes, labels, draw, factor)
            img = torch.from_numpy(hwc)
            extra = {"colour": torch.from_numpy(colour.as_array()), "normalize": self.transform.normalize}
        else:
            chw, boxes, labels, matrix = self.transform(image, boxes, labels, np.random.default_rng(seed))
            img = torch.from_numpy(chw)
        return {
            "img": img,
            "gt_bboxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "gt_labels": torch.from_numpy(labels),
            "warp_matrix": matrix,
            "img_id": img_id,
            "size": size,
            "path": str(path),
            **extra,
        }


@dataclass
class TrainBatch:
    """A batch: ``images`` are the network's input (NCHW float32), or, for fast training samples,
    the warped images (NCHW ``uint8``) with each sample's ``colour`` row, the ``normalize`` (mean,
    std) and, when padded, each sample's (h, w) in ``image_hw``: :meth:`inputs` finishes them."""

    images: torch.Tensor
    gt_bboxes: list[torch.Tensor]
    gt_labels: list[torch.Tensor]
    warp_matrices: list[np.ndarray]
    img_ids: list[int]
    sizes: list[tuple[int, int]]
    paths: list[str]
    skipped: int = 0
    colour: torch.Tensor | None = None
    normalize: tuple | None = None
    image_hw: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.img_ids)

    def pin_memory(self) -> TrainBatch:
        self.images = self.images.pin_memory()
        return self

    def inputs(
        self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
    ) -> torch.Tensor:
        """The network's input on ``device``: the images moved (``non_blocking``: pinned batches
        overlap the copy), then for ``uint8`` images the colour and normalisation computed there."""
        images = self.images.to(device, non_blocking=True)
        if self.colour is not None:
            images = colour_and_normalize(images, self.colour, *self.normalize, self.image_hw)
        return images.contiguous(memory_format=memory_format)


def collate_detection(items: list[dict | None]) -> TrainBatch | None:
    """One batch of the loaded samples (unreadable ones, ``None``, counted in ``skipped``).

    Images of different sizes (``multi_scale``) are padded right and bottom to the largest,
    rounded up to a multiple of 32 (:func:`stack_batch`); boxes keep their coordinates. Fast
    training samples stay ``uint8`` with their colour factors (:meth:`TrainBatch.inputs`)."""
    ok = [it for it in items if it is not None]
    if not ok:
        return None
    if "colour" not in ok[0]:
        return _batch(items, ok, stack_batch([it["img"] for it in ok]))
    hw = [tuple(it["img"].shape[:2]) for it in ok]
    images = stack_uint8([it["img"] for it in ok])
    padded = any(size != tuple(images.shape[2:]) for size in hw)
    colour = torch.stack([it["colour"] for it in ok])
    return _batch(items, ok, images, colour=colour, normalize=ok[0]["normalize"], image_hw=hw if padded else None)


def collate_finished(items: list[dict | None]) -> TrainBatch | None:
    """:func:`collate_detection` with the network's input made here, on the CPU: the collate of a
    CPU trainer's loader, whose workers do that work (:func:`colour_and_normalize_hwc`, the same
    values as :meth:`TrainBatch.inputs`; NCHW in the channels-last layout)."""
    ok = [it for it in items if it is not None]
    if not ok or "colour" not in ok[0]:
        return collate_detection(items)
    colour = np.stack([it["colour"].numpy() for it in ok])
    images = [it["img"].numpy() for it in ok]
    nhwc = batch_buffer(batch_shape_hwc(images), torch.float32)
    colour_and_normalize_hwc(images, colour, *ok[0]["normalize"], out=nhwc.numpy())
    return _batch(items, ok, nhwc.permute(0, 3, 1, 2))


def _batch(items: list[dict | None], ok: list[dict], images: torch.Tensor, **extra) -> TrainBatch:
    return TrainBatch(
        images=images,
        gt_bboxes=[it["gt_bboxes"] for it in ok],
        gt_labels=[it["gt_labels"] for it in ok],
        warp_matrices=[it["warp_matrix"] for it in ok],
        img_ids=[it["img_id"] for it in ok],
        sizes=[it["size"] for it in ok],
        paths=[it["path"] for it in ok],
        skipped=len(items) - len(ok),
        **extra,
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


def build_dataset(
    cfg: DatasetConfig,
    train: bool,
    seed: int = 0,
    cache_images: CacheMode = "none",
    reference: bool = False,
    decode_per_draw: bool = True,
) -> CocoDetection:
    """The dataset of ``cfg``; ``cache_images`` (training set only), ``reference`` and
    ``decode_per_draw`` as :class:`CocoDetection` takes them."""
    return CocoDetection(
        cfg.ann_path,
        cfg.img_path,
        build_transform(cfg, train),
        seed=seed,
        cache_images=cache_images,
        reference=reference,
        decode_per_draw=decode_per_draw,
    )
