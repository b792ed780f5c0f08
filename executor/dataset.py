"""The platform's dataset (index tsv + annotation files) → a COCO json for the engine.

Index lines are ``<image>\\t<annotation>``. Annotations come as ark txt
(``class_idx, x1, y1, x2, y2[, quality, angle]``, inclusive corners, ``,`` or ``, ``
separated) or VOC xml (class *names*, inclusive corners). What can be repaired is repaired
and counted (boxes clipped to the image, CRLF, blank lines, extra columns); what cannot is
skipped and counted (degenerate boxes, unknown classes, missing or unreadable images); a split
left empty is a dataset error (300002), also when none of its image files exists, or an
image-format error (300003) when its image files are there but none of them can be decoded.
"""

from __future__ import annotations

import json
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from math import isfinite
from pathlib import Path
from typing import TypeVar

from nanodet.data.image_io import ImageReadError, image_size
from nanodet.utils.io import atomic_write_text

from .errors import DatasetError, ImageFormatError
from .paths import PathMapper

log = logging.getLogger("executor.dataset")
T = TypeVar("T")
R = TypeVar("R")

MISSING = "missing image files (skipped)"  # a problem of its own: the assets are not where the index says
MISSING_WARNINGS = 5  # missing or unreadable files listed one by one per split or task; the count covers the rest


@dataclass
class Box:
    label: int
    x1: float
    y1: float
    x2: float  # exclusive pixel edge (inclusive corner + 1)
    y2: float


@dataclass
class ConversionReport:
    images: int = 0
    boxes: int = 0
    problems: Counter = field(default_factory=Counter)

    def log(self, split: str) -> None:
        details = ", ".join(f"{n} {what}" for what, n in sorted(self.problems.items())) or "no problems"
        log.info("%s set: %d images, %d boxes (%s)", split, self.images, self.boxes, details)


def read_index(path: Path, mapper: PathMapper, columns: int) -> list[list[Path]]:
    """Rows of an index tsv, paths mapped; blank lines and CRLF ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: index file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read index file ({err})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < columns or not all(parts[:columns]):
            raise DatasetError(f"{path}:{number}: expected {columns} tab-separated path(s), got {line[:120]!r}")
        rows.append([mapper(p) for p in parts[:columns]])
    return rows


def parse_ark(path: Path, num_classes: int, report: ConversionReport) -> list[Box]:
    """ark txt: ``class_idx, x1, y1, x2, y2[, ...]`` per line; corners inclusive."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        report.problems["missing annotation files (no boxes)"] += 1
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read annotation file ({err})") from None
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line.isspace():
            continue
        fields = line.split(",")  # float() ignores the spaces around a field
        if len(fields) < 5:
            raise DatasetError(f"{path}:{number}: expected 'class_idx, x1, y1, x2, y2', got {line.strip()[:120]!r}")
        if len(fields) > 7:
            report.problems["lines with extra columns (ignored)"] += 1
        try:
            label = int(float(fields[0]))
            x1, y1, x2, y2 = float(fields[1]), float(fields[2]), float(fields[3]), float(fields[4])
        except ValueError:
            raise DatasetError(f"{path}:{number}: non-numeric box field in {line.strip()[:120]!r}") from None
        if not 0 <= label < num_classes:
            report.problems["boxes of unknown class (skipped)"] += 1
            continue
        boxes.append(Box(label, x1, y1, x2 + 1, y2 + 1))
    return boxes


def parse_voc(path: Path, class_names: list[str], report: ConversionReport) -> list[Box]:
    """VOC xml: ``<object><name>`` and ``<bndbox>`` with inclusive corners."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        report.problems["missing annotation files (no boxes)"] += 1
        return []
    except ET.ParseError as err:
        raise DatasetError(f"{path}: line {err.position[0]}: not valid VOC xml ({err})") from None
    index = {name: i for i, name in enumerate(class_names)}
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if name not in index:
            report.problems["boxes of unknown class (skipped)"] += 1
            continue
        if bnd is None:
            report.problems["objects without bndbox (skipped)"] += 1
            continue
        try:
            x1, y1, x2, y2 = (float(bnd.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DatasetError(f"{path}: non-numeric bndbox for object {name!r}") from None
        boxes.append(Box(index[name], x1, y1, x2 + 1, y2 + 1))
    return boxes


def clean_boxes(boxes: list[Box], width: int, height: int, report: ConversionReport) -> list[Box]:
    """Clip to the image; drop boxes that are degenerate or entirely outside."""
    kept = []
    for b in boxes:
        finite = isfinite(b.x1) and isfinite(b.y1) and isfinite(b.x2) and isfinite(b.y2)
        if not finite or b.x2 <= b.x1 or b.y2 <= b.y1:
            report.problems["degenerate boxes (dropped)"] += 1
            continue
        c = Box(
            b.label,
            min(max(b.x1, 0), width),
            min(max(b.y1, 0), height),
            min(max(b.x2, 0), width),
            min(max(b.y2, 0), height),
        )
        if c.x2 - c.x1 < 1 or c.y2 - c.y1 < 1:
            report.problems["boxes outside the image (dropped)"] += 1
            continue
        if (c.x1, c.y1, c.x2, c.y2) != (b.x1, b.y1, b.x2, b.y2):
            report.problems["boxes clipped to the image"] += 1
        kept.append(c)
    return kept


def is_missing(path: Path) -> bool:
    """True when no file is at ``path`` (a dangling link included). Other failures to look
    (permissions, a loop of links) are not 'missing': reading the image reports them."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def warn_capped(logger: logging.Logger, count: int, message: str, more: str) -> None:
    """The ``count``-th warning of one kind: the first MISSING_WARNINGS in full (``message``),
    then ``more`` once (it says the rest is counted, not named), then nothing."""
    if count <= MISSING_WARNINGS:
        logger.warning("%s", message)
    elif count == MISSING_WARNINGS + 1:
        logger.warning("%s", more)


def warn_missing(what: str, path: str | Path, count: int) -> None:
    """Warn about the ``count``-th missing image file of ``what``, the first few by name only."""
    more = f"{what}: more image files are missing; only the first {MISSING_WARNINGS} are named"
    warn_capped(log, count, f"{what}: {path}: image file not found", more)


def warn_unreadable(what: str, reason: str, count: int) -> None:
    """Warn about the ``count``-th unreadable image of ``what``, the first few by name only."""
    more = f"{what}: more images cannot be read; only the first {MISSING_WARNINGS} are named"
    warn_capped(log, count, f"{what}: {reason}", more)


@dataclass
class Row:
    """What one index row becomes: its image's size and boxes, or why it is skipped."""

    image: Path
    file_name: str = ""  # the image's real path, links resolved
    width: int = 0
    height: int = 0
    boxes: list[Box] = field(default_factory=list)
    problems: Counter = field(default_factory=Counter)
    missing: bool = False
    unreadable: str = ""  # the reason, naming the file


def convert_row(image_path: Path, ann_path: Path, class_names: list[str], annotation_format: str) -> Row:
    """One row: the image's size from its header (no decode), its annotation parsed and clipped."""
    row = Row(image_path)
    if is_missing(image_path):
        row.missing = True
        return row
    try:
        row.width, row.height = image_size(image_path)
    except ImageReadError as err:
        row.unreadable = str(err)
        return row
    report = ConversionReport()
    if annotation_format in ("voc", "det-voc"):
        boxes = parse_voc(ann_path, class_names, report)
    else:
        boxes = parse_ark(ann_path, len(class_names), report)
    row.boxes = clean_boxes(boxes, row.width, row.height, report)
    row.problems = report.problems
    row.file_name = os.path.realpath(image_path)
    return row


def in_order(pool: Executor, fn: Callable[[T], R], items: list[T], chunk: int = 32, window: int = 64) -> Iterator[R]:
    """``fn`` over ``items`` in ``pool``, results in order. Items go to the pool ``chunk`` at a
    time (a future per row would cost more than reading a header) and at most ``window`` chunks
    are in flight (a 100k-row index does not become 100k pending futures). An exception comes
    out in order."""

    def run(part: list[T]) -> list[R]:
        return [fn(item) for item in part]

    pending: deque[Future[list[R]]] = deque()
    for start in range(0, len(items), chunk):
        pending.append(pool.submit(run, items[start : start + chunk]))
        if len(pending) >= window:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


CONVERSION_THREADS = 16  # when the files are slow to reach (network storage), this many read at once
PROBE_ROWS = 256  # rows read in the calling thread to learn whether a pool would help
PROGRESS_EVERY = 256  # rows between two progress calls


def reading_waits(wall: float, cpu: float, threads: int) -> bool:
    """Whether rows that took ``wall`` seconds, ``cpu`` of them on the CPU, should go to a pool
    of ``threads``: when reading them mostly waited (wall time more than twice the CPU time)."""
    return threads > 1 and wall > 2 * cpu


def read_rows(
    fn: Callable[[T], R],
    items: list[T],
    threads: int,
    pool: bool | None = None,
    wall_clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.thread_time,
) -> Iterator[R]:
    """``fn`` over ``items``, results in order: in this thread, or in a pool of ``threads``.

    A header read is ~0.1 ms of Python; with the files in the page cache (a dataset the
    platform has just exported) a pool only adds GIL contention (measured here: 0.52 against
    0.32 ms per row). On storage where a read waits (a network file system), a pool hides the
    waits. ``pool=None`` decides from the first PROBE_ROWS rows, read in this thread and timed
    with ``wall_clock`` and ``cpu_clock`` (this thread's CPU time): :func:`reading_waits`."""
    probe = items[: PROBE_ROWS if pool is None else 0]
    wall, cpu = wall_clock(), cpu_clock()
    for item in probe:
        yield fn(item)
    wall, cpu = wall_clock() - wall, cpu_clock() - cpu
    rest = items[len(probe) :]
    if pool is None:
        pool = reading_waits(wall, cpu, threads)
        if pool and rest:
            log.info(
                "files slow to reach (%.2f s for %d rows, %.2f s of it CPU): %d threads read them",
                wall,
                len(probe),
                cpu,
                threads,
            )
    if not pool or threads <= 1:
        for item in rest:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="convert") as executor:
        yield from in_order(executor, fn, rest)


def convert_split(
    index_file: Path,
    mapper: PathMapper,
    class_names: list[str],
    annotation_format: str,
    out_json: Path,
    split: str,
    progress: Callable[[float], None] | None = None,
    threads: int = CONVERSION_THREADS,
    pool: bool | None = None,
) -> ConversionReport:
    """Write a COCO json (absolute image paths as file names) for one split. Image sizes come
    from file headers; rows are read in order, in a thread pool when the storage makes that
    pay (:func:`read_rows`); ``progress`` gets the fraction of rows done as they complete."""
    report = ConversionReport()
    images, annotations = [], []
    rows = read_index(index_file, mapper, columns=2)
    first_missing, first_unreadable = "", ""
    done = read_rows(lambda r: convert_row(r[0], r[1], class_names, annotation_format), rows, threads, pool)
    try:
        for number, row in enumerate(done, start=1):
            if progress is not None and (number % PROGRESS_EVERY == 0 or number == len(rows)):
                progress(number / len(rows))
            if row.missing:
                report.problems[MISSING] += 1
                first_missing = first_missing or str(row.image)
                warn_missing(f"{split} set", row.image, report.problems[MISSING])
                continue
            if row.unreadable:
                report.problems["unreadable images (skipped)"] += 1
                unreadable = report.problems["unreadable images (skipped)"]
                first_unreadable = first_unreadable or row.unreadable
                warn_unreadable(f"{split} set", row.unreadable, unreadable)
                continue
            report.problems.update(row.problems)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": row.file_name, "width": row.width, "height": row.height})
            for b in row.boxes:
                w, h = b.x2 - b.x1, b.y2 - b.y1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": b.label + 1,
                        "bbox": [b.x1, b.y1, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
    finally:
        done.close()  # a failure midway stops the pool before it is reported
    report.images, report.boxes = len(images), len(annotations)
    report.log(split)
    check_split(index_file, split, len(rows), report, first_missing, first_unreadable)
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(class_names)],
    }
    atomic_write_text(out_json, json.dumps(coco))
    return report


def check_split(
    index_file: Path, split: str, rows: int, report: ConversionReport, first_missing: str, first_unreadable: str
) -> None:
    """A split without images or boxes cannot be trained on; the error says why it is empty:
    no file exists (the dataset, 300002), the files exist but none decodes (image format,
    300003), nothing listed or nothing left after skipping (the dataset, 300002)."""
    missing = report.problems[MISSING]
    if rows and missing == rows:
        raise DatasetError(
            f"{index_file}: none of the {rows} images of the {split} set exists (first: {first_missing})"
        )
    if rows and not report.images:
        also = f"; {missing} of them missing" if missing else ""
        raise ImageFormatError(
            f"{index_file}: none of the {rows} images of the {split} set can be decoded "
            f"(first: {first_unreadable}{also})"
        )
    if not report.images:
        raise DatasetError(f"{index_file}: the {split} set has no usable image")
    if not report.boxes:
        raise DatasetError(f"{index_file}: the {split} set has no usable box ({report.images} images)")


def annotation_format_of(export_format: str) -> str:
    anno = (export_format or "ark:raw").split(":")[0].strip().lower()
    if anno not in {"ark", "det-ark", "voc", "det-voc"}:
        raise DatasetError(f"export_format {export_format!r}: this executor reads ark or voc annotations")
    return anno
