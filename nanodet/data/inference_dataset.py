"""Images on disk → pre-processed, padded batches, decoded in DataLoader worker processes.

Decoding and warping run in workers so the model never waits on JPEG decoding; a file
that cannot be read comes through as a failed item (with the reason) instead of stopping
the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .image_io import ImageReadError, read_image, read_image_reduced
from .transforms import preprocess, stack_batch


@dataclass
class InferenceBatch:
    images: torch.Tensor | None  # [N, 3, H, W], None when every item in the batch failed
    paths: list[Path]
    warp_matrices: list[np.ndarray]
    sizes: list[tuple[int, int]]  # original (width, height)
    originals: list[np.ndarray] | None = None
    failed: list[tuple[Path, str]] = field(default_factory=list)


class ImageFileDataset(Dataset):
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
        tensor, matrix = preprocess(image, self.input_wh, self.keep_ratio, self.mean, self.std, reduced)
        return {
            "path": path,
            "tensor": torch.from_numpy(tensor),
            "matrix": matrix,
            "size": size,
            "original": image if self.keep_original else None,
        }


def collate_inference(items: list[dict]) -> InferenceBatch:
    ok = [it for it in items if "error" not in it]
    return InferenceBatch(
        images=stack_batch([it["tensor"] for it in ok]) if ok else None,
        paths=[it["path"] for it in ok],
        warp_matrices=[it["matrix"] for it in ok],
        sizes=[it["size"] for it in ok],
        originals=[it["original"] for it in ok] if ok and ok[0]["original"] is not None else None,
        failed=[(it["path"], it["error"]) for it in items if "error" in it],
    )


def inference_batches(
    dataset: ImageFileDataset, batch_size: int, workers: int, pin_memory: bool = False
) -> Iterator[InferenceBatch]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_inference,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    yield from loader
