"""Images on disk → pre-processed, padded batches, decoded in threads ahead of the model.

OpenCV's decode and warp and NumPy's normalisation release the GIL, so worker threads decode
the next batches while the model runs on the current one, without the processes, pickling
and PyTorch import of a DataLoader. A file that cannot be read comes through as a failed item
(with the reason) instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.pipeline import overlapped
from .image_io import ImageReadError, read_image, read_image_reduced
from .preprocess import pad_batch, preprocess

AHEAD = 4  # batches decoded ahead of the model per worker (a DataLoader's prefetch_factor)


@dataclass
class InferenceBatch:
    images: Any  # [N, 3, H, W] float32 array (a pinned tensor with pin_memory); None when every item failed
    paths: list[Path]
    warp_matrices: list[np.ndarray]
    sizes: list[tuple[int, int]]  # original (width, height)
    originals: list[np.ndarray] | None = None
    failed: list[tuple[Path, str]] = field(default_factory=list)


class ImageFileDataset:
    def __init__(
        self,
        paths: Sequence[str | Path],
        input_wh: tuple[int, int],
        keep_ratio: bool,
        mean: Sequence[float],
        std: Sequence[float],
        keep_original: bool = False,
        reduced_decode: bool = False,
    ) -> None:
        """``reduced_decode``: decode JPEGs at 1/2, 1/4 or 1/8 of their size when that still
        covers the input (faster; the input differs slightly from a full decode's)."""
        self.paths = [Path(p) for p in paths]
        self.input_wh, self.keep_ratio = tuple(input_wh), keep_ratio
        self.mean, self.std = mean, std
        self.keep_original = keep_original
        self.reduced_decode = reduced_decode and not keep_original  # drawing needs the full image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            if self.reduced_decode:
                image, factor, size = read_image_reduced(path, self.input_wh)
            else:
                image = read_image(path)
                factor, size = 1, (image.shape[1], image.shape[0])
        except ImageReadError as err:
            return {"path": path, "error": str(err)}
        reduced = (factor, size) if factor > 1 else None
        array, matrix = preprocess(image, self.input_wh, self.keep_ratio, self.mean, self.std, reduced)
        return {
            "path": path,
            "array": array,
            "matrix": matrix,
            "size": size,
            "original": image if self.keep_original else None,
        }


def collate_inference(items: list[dict], pin_memory: bool = False) -> InferenceBatch:
    ok = [it for it in items if "error" not in it]
    images = pad_batch([it["array"] for it in ok]) if ok else None
    if images is not None and pin_memory:  # page-locked for an asynchronous copy to the GPU
        import torch

        images = torch.from_numpy(images).pin_memory()
    return InferenceBatch(
        images=images,
        paths=[it["path"] for it in ok],
        warp_matrices=[it["matrix"] for it in ok],
        sizes=[it["size"] for it in ok],
        originals=[it["original"] for it in ok] if ok and ok[0]["original"] is not None else None,
        failed=[(it["path"], it["error"]) for it in items if "error" in it],
    )


def inference_batches(
    dataset: ImageFileDataset, batch_size: int, workers: int, pin_memory: bool = False
) -> Iterator[InferenceBatch]:
    """The dataset's batches in order; each is read, pre-processed and padded by one of
    ``workers`` threads (0: in the calling thread), up to ``AHEAD`` batches per worker ahead of
    the consumer."""
    chunks = (range(start, min(start + batch_size, len(dataset))) for start in range(0, len(dataset), batch_size))

    def load(chunk: range) -> InferenceBatch:
        return collate_inference([dataset[i] for i in chunk], pin_memory)

    if workers <= 0:
        yield from map(load, chunks)
        return
    for _, batch in overlapped(load, chunks, workers, ahead=workers * AHEAD):
        yield batch
