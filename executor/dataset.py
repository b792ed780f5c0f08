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
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nanodet.data.image_io import ImageReadError, read_image
from nanodet.utils.io import atomic_write_text

from .errors import DatasetError, ImageFormatError
from .paths import PathMapper

log = logging.getLogger("executor.dataset")

MISSING = "missing image files (skipped)"  # a problem of its own: the assets are not where the index says
MISSING_WARNINGS = 5  # missing files listed one by one per split or task; the count covers the rest


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
        fields = [f.strip() for f in line.split(",")]
        if not line.strip():
            continue
        if len(fields) < 5:
            raise DatasetError(f"{path}:{number}: expected 'class_idx, x1, y1, x2, y2', got {line.strip()[:120]!r}")
        if len(fields) > 7:
            report.problems["lines with extra columns (ignored)"] += 1
        try:
            label = int(float(fields[0]))
            x1, y1, x2, y2 = (float(v) for v in fields[1:5])
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
        if not all(np.isfinite([b.x1, b.y1, b.x2, b.y2])) or b.x2 <= b.x1 or b.y2 <= b.y1:
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


def warn_missing(what: str, path: str | Path, count: int) -> None:
    """Warn about the ``count``-th missing image file of ``what``, the first few by name only."""
    if count <= MISSING_WARNINGS:
        log.warning("%s: %s: image file not found", what, path)
    elif count == MISSING_WARNINGS + 1:
        log.warning("%s: more image files are missing; only the first %d are named", what, MISSING_WARNINGS)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a readable image; ImageReadError otherwise."""
    image = read_image(path)
    return image.shape[1], image.shape[0]


def convert_split(
    index_file: Path,
    mapper: PathMapper,
    class_names: list[str],
    annotation_format: str,
    out_json: Path,
    split: str,
) -> ConversionReport:
    """Write a COCO json (absolute image paths as file names) for one split."""
    report = ConversionReport()
    images, annotations = [], []
    rows = read_index(index_file, mapper, columns=2)
    first_missing, first_unreadable = "", ""
    for image_path, ann_path in rows:
        if is_missing(image_path):
            report.problems[MISSING] += 1
            first_missing = first_missing or str(image_path)
            warn_missing(f"{split} set", image_path, report.problems[MISSING])
            continue
        try:
            width, height = image_size(image_path)
        except ImageReadError as err:
            report.problems["unreadable images (skipped)"] += 1
            first_unreadable = first_unreadable or str(err)
            log.warning("%s set: %s", split, err)
            continue
        if annotation_format in ("voc", "det-voc"):
            boxes = parse_voc(ann_path, class_names, report)
        else:
            boxes = parse_ark(ann_path, len(class_names), report)
        boxes = clean_boxes(boxes, width, height, report)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": str(image_path.resolve()), "width": width, "height": height})
        for b in boxes:
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
