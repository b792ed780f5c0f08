"""The mining contact sheet: one PNG of what mining picked, for a person to look at.

The top-ranked candidates (what labelling would start with) and, for contrast, the
bottom-ranked ones, each as a tile with the model's boxes (score >= ``conf_thres``) and a
caption: rank, mining score, file name. Written to ``/out/mining-contact-sheet.png``, a file
the platform does not read (it reads ``result.tsv``, ``infer-result.json``, ``monitor.txt``,
``models/`` and ``tensorboard/``); ``mining_contact_sheet: false`` turns it off.

Only the pictured candidates go through the detector again (a few dozen images, decoded at a
reduced size): the mining pass itself keeps no boxes when infer does not run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from nanodet.data.image_io import ImageReadError, read_image_reduced
from nanodet.inference.predictor import Predictor
from nanodet.pictures.charts import contact_sheet, letterbox
from nanodet.pictures.draw import draw_boxes
from nanodet.utils.io import atomic_write

log = logging.getLogger("executor.contact_sheet")

SHEET_NAME = "mining-contact-sheet.png"
TOP, BOTTOM = 12, 6  # tiles: the first two rows and the last row of a 6-wide sheet
COLUMNS, TILE = 6, 240


def pick(order: list[int], read: np.ndarray, top: int = TOP, bottom: int = BOTTOM) -> tuple[list[int], list[int]]:
    """(the first ``top``, the last ``bottom``) decoded candidates of the ranking ``order``
    (positions, in ranking order); the two never share a candidate."""
    decoded = [i for i in order if read[i]]
    first = decoded[:top]
    last = decoded[max(len(first), len(decoded) - bottom) :]
    return first, last


def draw_tiles(predictor: Predictor, paths: list[Path], conf_thres: float) -> list[np.ndarray | None]:
    """Each candidate as a ``TILE`` x ``TILE`` picture with its boxes (None when it cannot be
    read): decoded at reduced size, through the detector in one batch."""
    images: list[np.ndarray | None] = []
    for path in paths:
        try:
            images.append(read_image_reduced(path, predictor.input_wh)[0])
        except ImageReadError:
            images.append(None)
    found = iter(predictor.predict([image for image in images if image is not None]))
    tiles: list[np.ndarray | None] = []
    for image in images:
        if image is None:
            tiles.append(None)
            continue
        dets = next(found).above(conf_thres)
        tile, scale, x, y = letterbox(image, TILE, TILE)
        boxes = dets.boxes.astype(np.float64) * scale + np.array([x, y, x, y], dtype=np.float64)
        tiles.append(draw_boxes(tile, boxes, dets.labels, predictor.class_names, dets.scores))
    return tiles


def write_contact_sheet(
    out_path: Path,
    predictor: Predictor,
    written: list[str],
    paths: list[Path],
    scores: np.ndarray,
    read: np.ndarray,
    algorithm: str,
    conf_thres: float,
    order: np.ndarray | None = None,
) -> Path | None:
    """The sheet of this ranking (``scores`` per candidate, ``read``: decoded in the mining
    pass; ``order``: the positions from first to last, by default by score) at ``out_path``;
    None when no candidate could be pictured."""
    start = time.perf_counter()
    order = (np.argsort(-scores, kind="stable") if order is None else order).tolist()
    rank = {pos: r for r, pos in enumerate(order, start=1)}
    first, last = pick(order, read)

    drawn = dict(zip(first + last, draw_tiles(predictor, [paths[pos] for pos in first + last], conf_thres)))

    def tiles(positions: list[int]) -> list[tuple[np.ndarray, str]]:
        return [
            (drawn[pos], f"#{rank[pos]} {scores[pos]:.4g} {Path(written[pos]).name}")
            for pos in positions
            if drawn[pos] is not None
        ]

    total = len(written)
    sections = [(f"top {len(first)} of {total} ({algorithm}): label these first", tiles(first))]
    if last:
        sections.append((f"bottom {len(last)} of {total}: ranked last, for contrast", tiles(last)))
    if not any(t for _, t in sections):
        return None
    sheet = contact_sheet(sections, COLUMNS, TILE)
    ok, png = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("the contact sheet could not be encoded as PNG")
    atomic_write(out_path, lambda f: f.write(png.tobytes()))
    log.info(
        "mining contact sheet: %s (%d + %d candidates, %.2f s)",
        out_path,
        len(first),
        len(last),
        time.perf_counter() - start,
    )
    return out_path
