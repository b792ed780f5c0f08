"""Problems a task repairs or skips: it succeeds, says what it did (counts in the set's log
line, one warning per skipped image), and the good data still produces the results."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ..executor_helpers import assert_success, check_training_outputs, run_start
from .checks import assert_outputs_consistent
from .corpus import GARBAGE, add_item, annotation_files, image_files, jpeg_bytes, png_bomb, png_header, tiny_training

TRAIN = "train-index.tsv"
GOOD_BOX = "0, 10, 10, 40, 40, -1.0, 0.0\n"


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _unreadable_images(d: Path) -> None:
    add_item(d, TRAIN, GARBAGE, GOOD_BOX, name="garbage.jpg")
    add_item(d, TRAIN, b"", GOOD_BOX, name="empty.jpg")
    add_item(d, TRAIN, None, GOOD_BOX, name="missing.jpg")
    add_item(d, TRAIN, jpeg_bytes()[:200], GOOD_BOX, name="truncated.jpg")  # header only


def _bombs(d: Path) -> None:
    add_item(d, TRAIN, png_header(100000, 100000), GOOD_BOX, name="claims-100000x100000.png")
    add_item(d, TRAIN, png_bomb(21000), GOOD_BOX, name="bomb-21000x21000.png")


def _formatting(d: Path) -> None:
    """CRLF, blank lines, leading/trailing spaces and tabs in an annotation and in the index."""
    add_item(d, TRAIN, jpeg_bytes(seed=1), "\r\n0, 10, 10, 40, 40   \r\n\r\n  1 ,20 , 20,60 , 60 \t\r\n\n")
    index = d / TRAIN
    lines = index.read_text().splitlines()
    index.write_bytes(("\r\n".join(f"{line}  " for line in lines) + "\r\n\r\n \r\n").encode())


def _old_column_counts(d: Path) -> None:
    add_item(d, TRAIN, jpeg_bytes(seed=2), "0, 10, 10, 40, 40\n1,5,5,30,30,0.8\n2, 1, 1, 20, 20, -1.0, 0.0\n")


CASES = [
    # (id, damage, extra good training images, extra boxes, what the training-set line must say,
    #  warning fragments that must be logged)
    (
        # truncated.jpg keeps a valid header: the conversion (sizes from headers) takes it, the
        # training loader's decode fails and skips it with a warning
        "unreadable-images",
        _unreadable_images,
        1,
        1,
        ["2 unreadable images (skipped)", "1 missing image files (skipped)"],
        [
            "garbage.jpg: not a decodable image",
            "empty.jpg: empty file",
            "missing.jpg: image file not found",
            "truncated.jpg: not a decodable image",
        ],
    ),
    (
        "decompression-bombs",
        _bombs,
        0,
        0,
        ["2 unreadable images (skipped)"],
        [
            "claims-100000x100000.png: image too large (its header claims",
            "bomb-21000x21000.png: image too large (its header claims",
        ],
    ),
    (
        "boxes-partly-outside-clipped",
        lambda d: add_item(d, TRAIN, jpeg_bytes(96, 80), "0, -10, -5, 50, 40\n1, 60, 50, 200, 300\n"),
        1,
        2,
        ["2 boxes clipped to the image"],
        [],
    ),
    (
        "boxes-wholly-outside-dropped",
        lambda d: add_item(d, TRAIN, jpeg_bytes(96, 80), "0, 500, 500, 600, 600\n" + GOOD_BOX),
        1,
        1,
        ["1 boxes outside the image (dropped)"],
        [],
    ),
    (
        "boxes-degenerate-dropped",
        lambda d: add_item(
            d, TRAIN, jpeg_bytes(96, 80), "0, 40, 10, 10, 40\n1, nan, 1, 5, 5\n2, 3, 9, inf, 4\n" + GOOD_BOX
        ),
        1,
        1,
        ["3 degenerate boxes (dropped)"],
        [],
    ),
    ("blank-lines-crlf-trailing-spaces", _formatting, 1, 2, ["(no problems)"], []),
    (
        "extra-annotation-columns",
        lambda d: add_item(d, TRAIN, jpeg_bytes(seed=3), "0, 10, 10, 40, 40, 0.9, 0.0, cm, tag=x\n"),
        1,
        1,
        ["1 lines with extra columns (ignored)"],
        [],
    ),
    ("five-and-six-column-lines", _old_column_counts, 1, 3, ["(no problems)"], []),
    (
        "unknown-class-boxes",
        lambda d: add_item(d, TRAIN, jpeg_bytes(seed=4), "9, 10, 10, 40, 40\n-1, 1, 1, 9, 9\n" + GOOD_BOX),
        1,
        1,
        ["2 boxes of unknown class (skipped)"],
        [],
    ),
    (
        "missing-annotation-file",
        lambda d: add_item(d, TRAIN, jpeg_bytes(seed=5), None),
        1,
        0,
        ["1 missing annotation files (no boxes)"],
        [],
    ),
    ("empty-annotation-file", lambda d: add_item(d, TRAIN, jpeg_bytes(seed=6), ""), 1, 0, ["(no problems)"], []),
    (
        "utf8-names-with-spaces",
        lambda d: add_item(
            d, TRAIN, jpeg_bytes(seed=7), GOOD_BOX, name="猫 の photo 1.jpg", ann_name="标注 file 1.txt"
        ),
        1,
        1,
        ["(no problems)"],
        [],
    ),
    (
        "image-without-extension",
        lambda d: add_item(d, TRAIN, jpeg_bytes(seed=8), GOOD_BOX, name="3f8ae93f", ann_name="3f8ae93f.txt"),
        1,
        1,
        ["(no problems)"],
        [],
    ),
    (
        "other-image-encodings",
        lambda d: [
            add_item(d, TRAIN, _png(np.full((80, 96), 128, np.uint8)), GOOD_BOX, name="gray.png"),
            add_item(d, TRAIN, _png(np.full((80, 96, 4), 200, np.uint8)), GOOD_BOX, name="rgba.png"),
            add_item(d, TRAIN, _png(np.full((80, 96, 3), 40000, np.uint16)), GOOD_BOX, name="sixteen-bit.png"),
            add_item(
                d, TRAIN, cv2.imencode(".bmp", np.zeros((80, 96, 3), np.uint8))[1].tobytes(), GOOD_BOX, name="b.bmp"
            ),
            add_item(
                d,
                TRAIN,
                cv2.imencode(".png", np.zeros((80, 96, 3), np.uint8))[1].tobytes(),
                GOOD_BOX,
                name="png-named.jpg",
            ),
        ],
        5,
        5,
        ["(no problems)"],
        [],
    ),
]


def _boxes(in_dir: Path, index: str) -> int:
    return sum(1 for f in annotation_files(in_dir, index) for line in f.read_text().splitlines() if line.strip())


# One training task per group (a task is the expensive part): the damages of a group are all in
# one dataset, each with its own count in the set's line. The two kinds of unreadable images
# each run alone, since their counts share one fragment. Damage that rewrites the index
# (CRLF, spaces) comes last in its group.
GROUPS = {
    "unreadable-images": ["unreadable-images"],
    "decompression-bombs": ["decompression-bombs"],
    "boxes-and-annotations-repaired": [
        "boxes-partly-outside-clipped",
        "boxes-wholly-outside-dropped",
        "boxes-degenerate-dropped",
        "extra-annotation-columns",
        "unknown-class-boxes",
        "missing-annotation-file",
    ],
    "harmless-variants": [
        "five-and-six-column-lines",
        "empty-annotation-file",
        "utf8-names-with-spaces",
        "image-without-extension",
        "other-image-encodings",
        "blank-lines-crlf-trailing-spaces",
    ],
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_training_recovers(tmp_path, group):
    cases = {c[0]: c[1:] for c in CASES}
    assert sorted(cases) == sorted(name for names in GROUPS.values() for name in names)  # every case runs
    in_dir = tiny_training(tmp_path / "in")
    images, boxes = 4, _boxes(in_dir, TRAIN)
    summary, warnings = [], []
    for name in GROUPS[group]:
        damage, more_images, more_boxes, case_summary, case_warnings = cases[name]
        damage(in_dir)
        images, boxes = images + more_images, boxes + more_boxes
        summary += [] if case_summary == ["(no problems)"] else case_summary
        warnings += case_warnings
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    assert_success(proc, out)
    line = re.search(r"training set: \d+ images.*", proc.stdout).group(0)
    assert line.startswith(f"training set: {images} images, {boxes} boxes ("), line
    for fragment in summary or ["(no problems)"]:
        assert fragment in line, (fragment, line)
    assert line.count(", ") - line.split("(", 1)[0].count(", ") == max(len(summary) - 1, 0), line  # nothing else
    logged = [row for row in proc.stdout.splitlines() if " WARNING " in row]
    for fragment in warnings:
        assert any(fragment in row for row in logged), (fragment, logged)
    check_training_outputs(out)  # the good part of the data trained a model, staged and published
    assert_outputs_consistent(out)


def test_unreadable_validation_image_is_skipped(tmp_path):
    in_dir = tiny_training(tmp_path / "in")
    add_item(in_dir, "val-index.tsv", GARBAGE, GOOD_BOX, name="val-garbage.jpg")
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    assert_success(proc, out)
    assert re.search(r"validation set: 2 images, \d+ boxes \(1 unreadable images \(skipped\)\)", proc.stdout)
    assert "validation set: " in proc.stdout and "val-garbage.jpg: not a decodable image" in proc.stdout
    result = check_training_outputs(out)
    assert list(result["model_stages"]) == ["epoch_1"]


def test_half_of_the_training_images_missing(tmp_path):
    """Image files missing on disk are skipped and counted apart from the unreadable ones; the
    rest of the set trains."""
    in_dir = tiny_training(tmp_path / "in")
    gone = image_files(in_dir, TRAIN)[:2]
    for path in gone:
        path.unlink()
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    assert_success(proc, out)
    line = re.search(r"training set: \d+ images.*", proc.stdout).group(0)
    assert line.startswith("training set: 2 images, ") and line.endswith("(2 missing image files (skipped))"), line
    warnings = [row for row in proc.stdout.splitlines() if " WARNING " in row]
    for path in gone:
        assert any(f"training set: {path}: image file not found" in row for row in warnings), (path, warnings)
    assert "unreadable" not in line
    check_training_outputs(out)
    assert_outputs_consistent(out)
