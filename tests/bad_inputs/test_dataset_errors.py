"""Datasets that cannot be trained on → 300002 (also when no image file of a set exists;
300003 when the files are there but none decodes), with the file and line at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..executor_helpers import run_start
from .checks import assert_fails_with
from .corpus import GARBAGE, annotation_files, edit_config, image_files, index_rows, tiny_training

DATASET, IMAGE_FORMAT = 300002, 300003


def _set_index(name: str, text: str | bytes):
    def mutate(in_dir: Path) -> None:
        (in_dir / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))

    return mutate


def _first_annotation(content: str | bytes):
    def mutate(in_dir: Path) -> None:
        path = annotation_files(in_dir, "train-index.tsv")[0]
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))

    return mutate


def _every_annotation(split: str, content: str):
    def mutate(in_dir: Path) -> None:
        for path in annotation_files(in_dir, split):
            path.write_text(content)

    return mutate


def _every_image(split: str, content: bytes):
    def mutate(in_dir: Path) -> None:
        for path in image_files(in_dir, split):
            path.write_bytes(content)

    return mutate


def _delete_images(split: str, keep: int = 0, others: bytes | None = None):
    """Delete the image files of ``split`` but the first ``keep``; write ``others`` into those kept."""

    def mutate(in_dir: Path) -> None:
        images = image_files(in_dir, split)
        for path in images[keep:]:
            path.unlink()
        for path in images[:keep] if others is not None else []:
            path.write_bytes(others)

    return mutate


def _one_column_line(in_dir: Path) -> None:
    rows = index_rows(in_dir / "train-index.tsv")
    rows[1] = rows[1].split("\t")[0]
    (in_dir / "train-index.tsv").write_text("\n".join(rows) + "\n")


def _voc_broken(in_dir: Path) -> None:
    edit_config(in_dir, export_format="det-voc:raw")
    for path in annotation_files(in_dir, "train-index.tsv"):
        path.write_text("<annotation><object><name>circle</name><bndbox><xmin>1</xmin>")


CASES = [
    # (id, damage, return code, text the monitor message must contain)
    (
        "train-index-missing",
        lambda d: (d / "train-index.tsv").unlink(),
        DATASET,
        "train-index.tsv: index file not found",
    ),
    ("val-index-missing", lambda d: (d / "val-index.tsv").unlink(), DATASET, "val-index.tsv: index file not found"),
    (
        "train-split-empty",
        _set_index("train-index.tsv", ""),
        DATASET,
        "train-index.tsv: the training set has no usable image",
    ),
    (
        "val-split-empty",
        _set_index("val-index.tsv", "\n  \r\n"),
        DATASET,
        "val-index.tsv: the validation set has no usable image",
    ),
    ("index-binary", _set_index("train-index.tsv", GARBAGE), DATASET, "train-index.tsv: cannot read index file"),
    ("index-one-column", _one_column_line, DATASET, "train-index.tsv:2: expected 2 tab-separated path(s)"),
    ("annotation-binary", _first_annotation(GARBAGE), DATASET, "cannot read annotation file"),
    (
        "annotation-too-few-fields",
        _first_annotation("0, 10, 10, 40, 40\n1, 5, 5\n"),
        DATASET,
        ".txt:2: expected 'class_idx, x1, y1, x2, y2', got '1, 5, 5'",
    ),
    (
        "annotation-non-numeric",
        _first_annotation("circle, 10, 10, 40, 40\n"),
        DATASET,
        ".txt:1: non-numeric box field in 'circle, 10, 10, 40, 40'",
    ),
    ("voc-not-xml", _voc_broken, DATASET, "not valid VOC xml"),
    (
        "export-format-unsupported",
        lambda d: edit_config(d, export_format="coco:raw"),
        DATASET,
        "export_format 'coco:raw': this executor reads ark or voc annotations",
    ),
    (
        "no-usable-box-unknown-classes",
        _every_annotation("train-index.tsv", "7, 10, 10, 40, 40, -1.0, 0.0\n"),
        DATASET,
        "train-index.tsv: the training set has no usable box (4 images)",
    ),
    (
        "no-usable-box-degenerate",
        _every_annotation("val-index.tsv", "0, 40, 40, 10, 10\n0, 5000, 5000, 5100, 5100\n"),
        DATASET,
        "val-index.tsv: the validation set has no usable box (2 images)",
    ),
    # every image of a split in a format nobody decodes: the set is empty because of the
    # images, so the image-format code (SDK: "can not read image, or image format unknown")
    (
        "train-images-unknown-format",
        _every_image("train-index.tsv", b"GIF89a-but-not-really" + GARBAGE),
        IMAGE_FORMAT,
        "train-index.tsv: none of the 4 images of the training set can be decoded",
    ),
    (
        "val-images-unknown-format",
        _every_image("val-index.tsv", b"\x00" * 100),
        IMAGE_FORMAT,
        "val-index.tsv: none of the 2 images of the validation set can be decoded",
    ),
    # no image file where the index says: the dataset is not there (assets not exported or not
    # mounted), a dataset problem, named with the first missing path
    (
        "train-images-missing",
        _delete_images("train-index.tsv"),
        DATASET,
        "train-index.tsv: none of the 4 images of the training set exists (first: ",
    ),
    (
        "val-images-missing",
        _delete_images("val-index.tsv"),
        DATASET,
        "val-index.tsv: none of the 2 images of the validation set exists (first: ",
    ),
    # some files there, none of them decodable: still the images' format
    (
        "train-images-missing-or-unknown-format",
        _delete_images("train-index.tsv", keep=2, others=GARBAGE),
        IMAGE_FORMAT,
        "train-index.tsv: none of the 4 images of the training set can be decoded (first: ",
    ),
]


@pytest.mark.parametrize("damage, code, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_dataset_error(tmp_path, damage, code, message):
    in_dir = tiny_training(tmp_path / "in")
    damage(in_dir)
    out = tmp_path / "out"
    assert_fails_with(run_start(in_dir, out), out, code, message)
    assert not (out / "models" / "result.yaml").exists()


def test_missing_images_message_names_the_first_missing_path(tmp_path):
    in_dir = tiny_training(tmp_path / "in")
    first = index_rows(in_dir / "train-index.tsv")[0].split("\t")[0]
    _delete_images("train-index.tsv")(in_dir)
    out = tmp_path / "out"
    fields = assert_fails_with(run_start(in_dir, out), out, DATASET, "none of the 4 images of the training set exists")
    assert fields[5].endswith(f"(first: {in_dir}{first[len('/in') :]})"), fields[5]


def test_missing_and_undecodable_images_are_told_apart(tmp_path):
    in_dir = tiny_training(tmp_path / "in")
    _delete_images("train-index.tsv", keep=1, others=b"\x00" * 64)(in_dir)
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    fields = assert_fails_with(proc, out, IMAGE_FORMAT, "none of the 4 images of the training set can be decoded")
    assert fields[5].endswith("; 3 of them missing)"), fields[5]
    assert (
        "training set: 0 images, 0 boxes (3 missing image files (skipped), 1 unreadable images (skipped))"
        in proc.stdout
    )
