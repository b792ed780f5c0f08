"""Charts and picture layouts drawn with OpenCV (BGR uint8 arrays, no plotting library): a
confusion matrix, horizontal bar charts, precision/recall curves, images side by side and
contact sheets of captioned tiles."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .draw import FONT, class_color

WHITE = (255, 255, 255)
INK = (40, 40, 40)
GRID = (225, 225, 225)
MUTED = (120, 120, 120)


def _text(
    canvas: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45, color=INK, bold: bool = False
) -> None:
    cv2.putText(canvas, text, org, FONT, scale, color, 2 if bold else 1, cv2.LINE_AA)


def _text_width(text: str, scale: float = 0.45) -> int:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def _shorten(text: str, max_width: int, scale: float = 0.45) -> str:
    """``text``, cut with ``..`` so it is at most ``max_width`` pixels wide."""
    if _text_width(text, scale) <= max_width:
        return text
    while len(text) > 1 and _text_width(text + "..", scale) > max_width:
        text = text[:-1]
    return text + ".."


def _title(canvas: np.ndarray, title: str) -> None:
    _text(canvas, _shorten(title, canvas.shape[1] - 20, 0.55), (10, 24), 0.55, bold=True)


def confusion_matrix_chart(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> np.ndarray:
    """A ``[C + 1, C + 1]`` confusion matrix (rows true, columns predicted, the last of each
    "background"; :func:`nanodet.evaluation.confusion.confusion_matrix`) as a heat map: each
    cell shaded by its share of the row (of the true class's boxes, or of the false
    detections), its count written in it while cells are large enough."""
    matrix = np.asarray(matrix, dtype=np.int64)
    names = [*class_names, "background"]
    n = len(names)
    if matrix.shape != (n, n):
        raise ValueError(f"a {matrix.shape} matrix for {n - 1} classes (+ background)")
    cell = int(np.clip(640 // n, 6, 56))
    label_w = min(160, max(_text_width(name) for name in names) + 12) if cell >= 12 else 0
    top, left = 44 + (label_w if cell >= 12 else 0), 30 + label_w
    width, height = left + n * cell + 20, top + n * cell + 30
    canvas = np.full((max(height, 120), max(width, 440), 3), 255, np.uint8)
    _title(canvas, title or "confusion matrix (rows: true, columns: predicted)")
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    for r in range(n):
        for c in range(n):
            x, y = left + c * cell, top + r * cell
            level = int(round(255 - 200 * share[r, c]))
            color = (255, level, level) if r == c else (level, level, 255)
            cv2.rectangle(canvas, (x, y), (x + cell - 1, y + cell - 1), color, -1)
            cv2.rectangle(canvas, (x, y), (x + cell - 1, y + cell - 1), GRID, 1)
            if cell >= 24 and matrix[r, c]:
                count = str(int(matrix[r, c]))
                scale = 0.4 if cell >= 36 else 0.3
                tw = _text_width(count, scale)
                ink = WHITE if share[r, c] > 0.6 else INK
                _text(canvas, count, (x + (cell - tw) // 2, y + cell // 2 + 5), scale, ink)
    if cell >= 12:
        for i, name in enumerate(names):
            short = _shorten(name, label_w - 8)
            _text(canvas, short, (30, top + i * cell + cell // 2 + 5))
            # column names written upwards above their column
            patch = np.full((cell, label_w, 3), 255, np.uint8)
            _text(patch, short, (4, cell // 2 + 5))
            up = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)
            x = left + i * cell
            canvas[44 : 44 + label_w, x : x + cell] = np.minimum(canvas[44 : 44 + label_w, x : x + cell], up)
    _text(canvas, "true", (4, top + n * cell // 2), 0.4, MUTED)
    _text(canvas, "predicted", (left, height - 10), 0.4, MUTED)
    return canvas


def bar_chart(
    names: Sequence[str],
    values: Sequence[float],
    title: str = "",
    second: Sequence[float] | None = None,
    legend: tuple[str, str] = ("", ""),
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Horizontal bars of ``values`` in [0, 1], one row per name (any number of classes, names of
    any length), the value written beside each bar; ``second`` adds a thinner grey bar under
    each (another measure of the same thing), named by ``legend``."""
    row = 30 if second is not None else 22
    label_w = min(180, max((_text_width(n) for n in names), default=40) + 12)
    bar_w = 360
    left, top = 10 + label_w, 44 + (18 if second is not None else 0)
    canvas = np.full((top + row * max(len(names), 1) + 24, left + bar_w + 60, 3), 255, np.uint8)
    _title(canvas, title)
    if second is not None:
        cv2.rectangle(canvas, (left, 36), (left + 12, 46), class_color(0), -1)
        _text(canvas, legend[0], (left + 16, 46), 0.4)
        x = left + 24 + _text_width(legend[0], 0.4)
        cv2.rectangle(canvas, (x, 38), (x + 12, 44), (170, 170, 170), -1)
        _text(canvas, legend[1], (x + 16, 46), 0.4)
    for tick in np.linspace(0.0, 1.0, 5):
        x = left + int(round(tick * bar_w))
        cv2.line(canvas, (x, top - 4), (x, top + row * len(names)), GRID, 1)
        _text(canvas, f"{tick:.2f}".rstrip("0").rstrip(".") or "0", (x - 8, top + row * len(names) + 16), 0.35, MUTED)
    for i, (name, value) in enumerate(zip(names, values)):
        y = top + i * row
        _text(canvas, _shorten(name, label_w - 12), (10, y + 15))
        color = colors[i] if colors is not None else class_color(i)
        length = int(round(float(np.clip(value, 0.0, 1.0)) * bar_w))
        cv2.rectangle(canvas, (left, y + 4), (left + max(length, 1), y + 18), color, -1)
        _text(canvas, f"{value:.3f}", (left + length + 4, y + 15), 0.4)
        if second is not None:
            other = int(round(float(np.clip(second[i], 0.0, 1.0)) * bar_w))
            cv2.rectangle(canvas, (left, y + 20), (left + max(other, 1), y + 26), (170, 170, 170), -1)
    return canvas


def pr_curves_chart(
    recall: np.ndarray,
    precision: np.ndarray,
    max_recall: np.ndarray,
    class_names: Sequence[str],
    title: str = "",
) -> np.ndarray:
    """Precision against recall, one line per class (``precision [R, C]`` at the recall points
    ``recall [R]``, drawn up to the class's ``max_recall``; classes without ground truth, all
    -1, left out), with each class's AP (the mean precision over the recall points) in the
    legend."""
    size, left, top = 400, 50, 56
    legend_w = min(220, max((_text_width(n) for n in class_names), default=40) + 80)
    canvas = np.full((top + size + 44, left + size + 20 + legend_w, 3), 255, np.uint8)
    _title(canvas, title)

    def point(r: float, p: float) -> tuple[int, int]:
        return left + int(round(r * size)), top + int(round((1.0 - p) * size))

    for tick in np.linspace(0.0, 1.0, 6):
        cv2.line(canvas, point(tick, 0.0), point(tick, 1.0), GRID, 1)
        cv2.line(canvas, point(0.0, tick), point(1.0, tick), GRID, 1)
        _text(canvas, f"{tick:.1f}", (point(tick, 0.0)[0] - 10, top + size + 16), 0.35, MUTED)
        _text(canvas, f"{tick:.1f}", (left - 30, point(0.0, tick)[1] + 4), 0.35, MUTED)
    cv2.rectangle(canvas, point(0.0, 1.0), point(1.0, 0.0), MUTED, 1)
    _text(canvas, "recall", (left + size // 2 - 20, top + size + 36), 0.4, MUTED)
    _text(canvas, "precision", (4, top - 8), 0.4, MUTED)
    rows = 0
    for c, name in enumerate(class_names):
        column = precision[:, c]
        if column.size == 0 or column[0] <= -1:
            continue
        color = class_color(c)
        reached = recall <= max_recall[c] + 1e-9
        pts = np.array([point(r, p) for r, p in zip(recall[reached], column[reached])], dtype=np.int32)
        if len(pts) > 1:
            cv2.polylines(canvas, [pts], False, color, 2, cv2.LINE_AA)
        elif len(pts):
            cv2.circle(canvas, tuple(int(v) for v in pts[0]), 3, color, -1)
        ap = float(np.clip(column, 0.0, None).mean())
        y = top + 10 + rows * 18
        if y < top + size:
            cv2.line(canvas, (left + size + 14, y - 4), (left + size + 30, y - 4), color, 3)
            _text(canvas, _shorten(f"{name} {ap:.3f}", legend_w - 24, 0.4), (left + size + 34, y), 0.4)
        rows += 1
    return canvas


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str] = ("", ""), gap: int = 6) -> np.ndarray:
    """Two pictures of the same height next to each other, each with a title strip above it."""
    height = max(left.shape[0], right.shape[0])
    strip = 22
    canvas = np.full((height + strip, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[strip : strip + left.shape[0], : left.shape[1]] = left
    canvas[strip : strip + right.shape[0], left.shape[1] + gap :] = right
    _text(canvas, _shorten(titles[0], left.shape[1] - 8, 0.45), (4, 16))
    _text(canvas, _shorten(titles[1], right.shape[1] - 8, 0.45), (left.shape[1] + gap + 4, 16))
    return canvas


def letterbox(image: np.ndarray, width: int, height: int, fill: int = 235) -> tuple[np.ndarray, float, int, int]:
    """``image`` scaled to fit ``width`` x ``height`` (aspect kept) and centred on a ``fill``
    background: (tile, scale, x offset, y offset)."""
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (w, h), interpolation=interpolation)
    tile = np.full((height, width, 3), fill, np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    tile[y : y + h, x : x + w] = resized
    return tile, scale, x, y


def contact_sheet(
    sections: Sequence[tuple[str, Sequence[tuple[np.ndarray, str]]]], columns: int = 6, tile: int = 240
) -> np.ndarray:
    """Sections of captioned tiles, ``columns`` per row, each section under its heading: every
    tile is a ``tile`` x ``tile`` picture (already drawn, e.g. by :func:`letterbox`) with its
    caption in a strip below."""
    caption, heading, gap = 20, 30, 6
    width = columns * (tile + gap) + gap
    blocks = []
    for name, tiles in sections:
        rows = max(1, -(-len(tiles) // columns))
        block = np.full((heading + rows * (tile + caption + gap), width, 3), 255, np.uint8)
        _text(block, _shorten(name, width - 12, 0.55), (gap, 21), 0.55, bold=True)
        for i, (picture, text) in enumerate(tiles):
            x = gap + (i % columns) * (tile + gap)
            y = heading + (i // columns) * (tile + caption + gap)
            block[y : y + tile, x : x + tile] = picture[:tile, :tile]
            _text(block, _shorten(text, tile - 4, 0.4), (x + 2, y + tile + 15), 0.4)
        blocks.append(block)
    return np.concatenate(blocks, axis=0) if blocks else np.full((heading, width, 3), 255, np.uint8)


def stack_vertically(pictures: Sequence[np.ndarray], gap: int = 8) -> np.ndarray:
    """Pictures one under the other, left-aligned on white."""
    width = max(p.shape[1] for p in pictures)
    height = sum(p.shape[0] for p in pictures) + gap * (len(pictures) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    y = 0
    for p in pictures:
        canvas[y : y + p.shape[0], : p.shape[1]] = p
        y += p.shape[0] + gap
    return canvas


def grid(pictures: Sequence[np.ndarray], columns: int, gap: int = 8, title: str = "") -> np.ndarray:
    """Pictures in rows of ``columns``, each row as tall as its tallest picture, on white; a
    title strip above when ``title`` is given."""
    rows = [pictures[i : i + columns] for i in range(0, len(pictures), columns)]
    width = max(sum(p.shape[1] for p in row) + gap * (len(row) - 1) for row in rows)
    strips = []
    for row in rows:
        strip = np.full((max(p.shape[0] for p in row), width, 3), 255, np.uint8)
        x = 0
        for p in row:
            strip[: p.shape[0], x : x + p.shape[1]] = p
            x += p.shape[1] + gap
        strips.append(strip)
    if title:
        header = np.full((32, width, 3), 255, np.uint8)
        _title(header, title)
        strips.insert(0, header)
    return stack_vertically(strips, gap)
