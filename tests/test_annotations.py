"""Every annotation form the contract lists converts to the same boxes."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from executor.dataset import ConversionReport, clean_boxes, convert_split, parse_ark, parse_voc, read_index
from executor.errors import DatasetError
from executor.paths import PathMapper

CLASSES = ["cat", "dog"]


@pytest.mark.parametrize(
    "text",
    [
        "1, 10, 20, 49, 59, -1.0, 0.0\n",  # 7 columns, ", "
        "1,10,20,49,59\n",  # 5 columns, ","
        "1, 10, 20, 49, 59\r\n\r\n",  # CRLF and a blank line
        "  1 ,10 , 20,49 , 59 , 0.9, 0.0, extra, more \n",  # spaces and extra columns
    ],
)
def test_ark_forms(tmp_path: Path, text: str):
    path = tmp_path / "a.txt"
    path.write_text(text)
    [box] = parse_ark(path, 2, ConversionReport())
    assert (box.label, box.x1, box.y1, box.x2, box.y2) == (1, 10, 20, 50, 60)  # inclusive corners → +1


def test_ark_empty_file_and_unknown_class(tmp_path: Path):
    (tmp_path / "e.txt").write_text("")
    assert parse_ark(tmp_path / "e.txt", 2, ConversionReport()) == []
    (tmp_path / "u.txt").write_text("5, 1, 1, 9, 9\n0, 1, 1, 9, 9\n")
    report = ConversionReport()
    assert len(parse_ark(tmp_path / "u.txt", 2, report)) == 1
    assert report.problems["boxes of unknown class (skipped)"] == 1


def test_ark_bad_line_names_file_and_line(tmp_path: Path):
    (tmp_path / "b.txt").write_text("0, 1, 1, 9, 9\n0, 1, 1\n")
    with pytest.raises(DatasetError, match=r"b\.txt:2: expected 'class_idx, x1, y1, x2, y2'"):
        parse_ark(tmp_path / "b.txt", 2, ConversionReport())


def test_voc(tmp_path: Path):
    (tmp_path / "a.xml").write_text("""<annotation><object><name>dog</name><truncated>unknown</truncated>
      <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>49</xmax><ymax>59</ymax><rotate_angle>0</rotate_angle></bndbox>
      <box_quality>0.5</box_quality></object><object><name>bird</name><bndbox><xmin>1</xmin><ymin>1</ymin>
      <xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>""")
    report = ConversionReport()
    [box] = parse_voc(tmp_path / "a.xml", CLASSES, report)
    assert (box.label, box.x1, box.y1, box.x2, box.y2) == (1, 10, 20, 50, 60)
    assert report.problems["boxes of unknown class (skipped)"] == 1


def test_clean_boxes_clips_and_drops():
    from executor.dataset import Box

    report = ConversionReport()
    kept = clean_boxes([Box(0, -5, 10, 30, 40), Box(0, 10, 10, 10, 20), Box(0, 200, 200, 300, 300)], 100, 80, report)
    assert [(b.x1, b.y1, b.x2, b.y2) for b in kept] == [(0, 10, 30, 40)]
    assert report.problems == {
        "boxes clipped to the image": 1,
        "degenerate boxes (dropped)": 1,
        "boxes outside the image (dropped)": 1,
    }


def test_convert_split_with_utf8_names_and_bad_image(tmp_path: Path):
    in_dir = tmp_path / "in"
    (in_dir / "assets").mkdir(parents=True)
    (in_dir / "annotations").mkdir()
    cv2.imencode(".jpg", np.zeros((60, 80, 3), np.uint8))[1].tofile(in_dir / "assets" / "ünï code 1.jpg")
    (in_dir / "annotations" / "a 1.txt").write_text("0, 1, 2, 30, 40\n")
    (in_dir / "assets" / "broken").write_bytes(b"nope")
    (in_dir / "annotations" / "b.txt").write_text("")
    (in_dir / "index.tsv").write_text(
        "/in/assets/ünï code 1.jpg\t/in/annotations/a 1.txt\r\n/in/assets/broken\t/in/annotations/b.txt\n\n"
    )
    mapper = PathMapper(in_dir, tmp_path / "out")
    report = convert_split(in_dir / "index.tsv", mapper, CLASSES, "ark", tmp_path / "c.json", "training")
    assert report.images == 1 and report.boxes == 1
    assert report.problems["unreadable images (skipped)"] == 1
    import json

    coco = json.loads((tmp_path / "c.json").read_text())
    assert coco["annotations"][0]["bbox"] == [1, 2, 30, 39]  # x2/y2 inclusive → w = 30 - 1 + 1
    assert coco["images"][0]["file_name"].endswith("ünï code 1.jpg")


def test_index_line_with_one_column_names_the_line(tmp_path: Path):
    (tmp_path / "i.tsv").write_text("/in/a.jpg\t/in/a.txt\n/in/b.jpg\n")
    with pytest.raises(DatasetError, match=r"i\.tsv:2: expected 2 tab-separated"):
        read_index(tmp_path / "i.tsv", PathMapper(), 2)


def _index_with_missing_images(tmp_path: Path, missing: int, present: list[bytes]) -> Path:
    """An index of ``missing`` image paths that do not exist, then one line per ``present`` file."""
    in_dir = tmp_path / "in"
    (in_dir / "assets").mkdir(parents=True)
    (in_dir / "annotations").mkdir()
    lines = [f"/in/assets/gone-{i}.jpg\t/in/annotations/gone-{i}.txt" for i in range(missing)]
    for i, data in enumerate(present):
        (in_dir / "assets" / f"here-{i}.jpg").write_bytes(data)
        (in_dir / "annotations" / f"here-{i}.txt").write_text("0, 1, 2, 30, 40\n")
        lines.append(f"/in/assets/here-{i}.jpg\t/in/annotations/here-{i}.txt")
    (in_dir / "index.tsv").write_text("\n".join(lines) + "\n")
    return in_dir


def _convert(tmp_path: Path, in_dir: Path) -> ConversionReport:
    mapper = PathMapper(in_dir, tmp_path / "out")
    return convert_split(in_dir / "index.tsv", mapper, CLASSES, "ark", tmp_path / "c.json", "training")


def test_missing_images_are_counted_and_named_up_to_a_limit(tmp_path: Path, caplog):
    from executor.dataset import MISSING_WARNINGS

    jpeg = cv2.imencode(".jpg", np.zeros((60, 80, 3), np.uint8))[1].tobytes()
    in_dir = _index_with_missing_images(tmp_path, MISSING_WARNINGS + 3, [jpeg, b"not an image"])
    with caplog.at_level("WARNING", logger="executor.dataset"):
        report = _convert(tmp_path, in_dir)
    assert report.images == 1 and report.boxes == 1
    assert report.problems == {"missing image files (skipped)": MISSING_WARNINGS + 3, "unreadable images (skipped)": 1}
    named = [r.getMessage() for r in caplog.records if "image file not found" in r.getMessage()]
    assert len(named) == MISSING_WARNINGS
    assert named[0] == f"training set: {in_dir}/assets/gone-0.jpg: image file not found"
    assert any("only the first 5 are named" in r.getMessage() for r in caplog.records)


def test_every_image_missing_is_a_dataset_error(tmp_path: Path):
    in_dir = _index_with_missing_images(tmp_path, 3, [])
    first = re.escape(f"{in_dir}/assets/gone-0.jpg")
    with pytest.raises(
        DatasetError,
        match=rf"index\.tsv: none of the 3 images of the training set exists "
        rf"\(first: {first}\)$",
    ):
        _convert(tmp_path, in_dir)


def test_missing_or_undecodable_images_are_an_image_format_error(tmp_path: Path):
    from executor.errors import ImageFormatError

    in_dir = _index_with_missing_images(tmp_path, 2, [b"not an image"])
    with pytest.raises(
        ImageFormatError,
        match=r"none of the 3 images of the training set can be decoded "
        r"\(first: .*here-0\.jpg: not a decodable image; 2 of them missing\)",
    ):
        _convert(tmp_path, in_dir)


def test_is_missing(tmp_path: Path):
    from executor.dataset import is_missing

    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert not is_missing(tmp_path / "file") and not is_missing(tmp_path)
    assert is_missing(tmp_path / "nowhere") and is_missing(tmp_path / "dangling")
    assert is_missing(tmp_path / "file" / "below-a-file.jpg")


@pytest.mark.parametrize("pool", [True, False], ids=["thread pool", "one thread"])
def test_conversion_reads_sizes_from_headers_in_order_with_progress(tmp_path: Path, caplog, pool: bool):
    """Many rows through the thread pool: the json keeps the index order, sizes are the decoded
    ones (an EXIF quarter turn included), unreadable files cost a bounded number of warnings,
    and progress climbs to 1."""
    from executor.dataset import MISSING_WARNINGS
    from nanodet.data.image_io import read_image
    from tests.test_image_header import jpeg_with_exif

    in_dir = tmp_path / "in"
    (in_dir / "assets").mkdir(parents=True)
    (in_dir / "annotations").mkdir()
    lines, expected = [], []
    for i in range(300):
        name = f"img-{i:03d}"
        if i % 50 == 7:
            (in_dir / "assets" / f"{name}.jpg").write_bytes(b"broken")
        elif i % 3 == 0:
            (in_dir / "assets" / f"{name}.jpg").write_bytes(jpeg_with_exif(6, i % 2 == 0))  # 50x30 turned
        else:
            h, w = 40 + i % 7, 60 + i % 11
            cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tofile(in_dir / "assets" / f"{name}.jpg")
        (in_dir / "annotations" / f"{name}.txt").write_text("0, 1, 2, 20, 25\n")
        lines.append(f"/in/assets/{name}.jpg\t/in/annotations/{name}.txt")
    (in_dir / "index.tsv").write_text("\n".join(lines) + "\n")
    for line in lines:
        path = in_dir / line.split("\t")[0][len("/in/") :]
        if path.read_bytes() != b"broken":
            image = read_image(path)
            expected.append((str(path.resolve()), image.shape[1], image.shape[0]))
    seen: list[float] = []
    mapper = PathMapper(in_dir, tmp_path / "out")
    with caplog.at_level("WARNING", logger="executor.dataset"):
        report = convert_split(
            in_dir / "index.tsv",
            mapper,
            CLASSES,
            "ark",
            tmp_path / "c.json",
            "training",
            progress=seen.append,
            pool=pool,
        )
    import json

    coco = json.loads((tmp_path / "c.json").read_text())
    assert [(im["file_name"], im["width"], im["height"]) for im in coco["images"]] == expected
    assert report.images == 294 and report.problems["unreadable images (skipped)"] == 6
    assert {(im["width"], im["height"]) for im in coco["images"][::100]} >= {(30, 50)}  # row 0: turned
    named = [r for r in caplog.records if "not a decodable image" in r.getMessage()]
    assert len(named) == MISSING_WARNINGS
    assert sum("more images cannot be read" in r.getMessage() for r in caplog.records) == 1
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 2


def test_a_lying_header_is_skipped_when_the_image_is_decoded(tmp_path: Path, caplog):
    """Sizes come from headers; a file whose decode disagrees (replaced since, or truncated)
    is skipped by the training data, with one warning, instead of training on misfit boxes."""
    import json

    from nanodet.data.coco_dataset import CocoDetection
    from nanodet.data.transforms import EvalTransform

    in_dir = tmp_path / "in"
    (in_dir / "assets").mkdir(parents=True)
    (in_dir / "annotations").mkdir()
    for name in ("good", "resized", "truncated"):
        cv2.imencode(".png", np.full((60, 80, 3), 90, np.uint8))[1].tofile(in_dir / "assets" / f"{name}.png")
        (in_dir / "annotations" / f"{name}.txt").write_text("0, 1, 2, 30, 40\n")
    (in_dir / "index.tsv").write_text(
        "".join(f"/in/assets/{n}.png\t/in/annotations/{n}.txt\n" for n in ("good", "resized", "truncated"))
    )
    converted = tmp_path / "c.json"
    convert_split(in_dir / "index.tsv", PathMapper(in_dir, tmp_path / "out"), CLASSES, "ark", converted, "training")
    cv2.imencode(".png", np.zeros((50, 70, 3), np.uint8))[1].tofile(in_dir / "assets" / "resized.png")
    truncated = in_dir / "assets" / "truncated.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    assert [im["width"] for im in json.loads(converted.read_text())["images"]] == [80, 80, 80]
    dataset = CocoDetection(converted, "", EvalTransform((64, 64), True, [[0, 0, 0], [1, 1, 1]]))
    with caplog.at_level("WARNING", logger="nanodet.data.coco_dataset"):
        items = [dataset[i] for i in range(3) for _ in range(2)]
    assert items[0] is not None and items[0]["size"] == (80, 60)
    assert items[2:] == [None] * 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # once per image
    assert "decoded as 70x50, 80x60 in c.json" in messages[0]
    assert "truncated.png" in messages[1]


def test_rows_go_to_a_pool_only_when_reading_them_waits(monkeypatch):
    """The decision from its numbers: a pool when the probe rows' wall time is more than twice
    their CPU time. Then read_rows with clocks that the rows themselves move: rows whose reading
    waits (2 ms of wall time, 0.1 ms of CPU) go to the thread pool after the probe, rows that
    are all CPU stay in the calling thread. Either way results come in order."""
    import threading

    import executor.dataset as dataset

    assert dataset.reading_waits(wall=2.1, cpu=1.0, threads=4)
    assert not dataset.reading_waits(wall=2.0, cpu=1.0, threads=4)
    assert not dataset.reading_waits(wall=9.0, cpu=1.0, threads=1)  # no pool of one thread

    monkeypatch.setattr(dataset, "PROBE_ROWS", 20)
    clock = {"wall": 0.0, "cpu": 0.0}

    def row(wall: float, cpu: float):
        def read(i: int) -> tuple[int, str]:
            clock["wall"] += wall
            clock["cpu"] += cpu
            return i, threading.current_thread().name

        return read

    for fn, pooled in ((row(0.002, 0.0001), True), (row(0.001, 0.001), False)):
        clocks = {"wall_clock": lambda: clock["wall"], "cpu_clock": lambda: clock["cpu"]}
        out = list(dataset.read_rows(fn, list(range(200)), threads=4, **clocks))
        assert [i for i, _ in out] == list(range(200))
        names = {name for _, name in out[20:]}
        assert all(n.startswith("convert") for n in names) if pooled else names == {"MainThread"}
        assert {name for _, name in out[:20]} == {"MainThread"}
