"""``python -m nanodet detect`` end to end: images, a folder, a video, unreadable files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from nanodet.data.synthetic import synthetic_image

from .conftest import CONFIG_DIR, ROOT

CONFIG = str(CONFIG_DIR / "nanodet-plus-m_320.yml")


def run_detect(weights: Path, *args: str) -> tuple[list[dict], subprocess.CompletedProcess]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanodet",
            "detect",
            "--config",
            CONFIG,
            "--weights",
            str(weights),
            "--conf",
            "0.05",
            "--workers",
            "1",
            "--batch-size",
            "3",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()], proc


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    (root / "sub dir").mkdir()
    for i, size in enumerate([(320, 240), (500, 300), (200, 400), (640, 480)]):
        image = synthetic_image(rng, size=size)[0]
        name = root / ("sub dir" if i % 2 else "") / f"img ü {i}.{'png' if i == 3 else 'jpg'}"
        cv2.imencode(name.suffix, image)[1].tofile(name)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def test_images_and_folder(plus_weights, folder, sample_images, tmp_path):
    records, proc = run_detect(plus_weights, "--save-dir", str(tmp_path / "out"), str(sample_images[0]), str(folder))
    assert proc.returncode == 0, proc.stderr
    files = [r["file"] for r in records]
    assert files[0] == str(sample_images[0])
    assert sorted(Path(f).name for f in files[1:]) == [f"img ü {i}.{'png' if i == 3 else 'jpg'}" for i in range(4)]
    assert "broken.jpg" in proc.stderr and "skipped" in proc.stderr
    img = cv2.imread(str(sample_images[0]))
    assert records[0]["width"] == img.shape[1] and records[0]["height"] == img.shape[0]
    assert sum(len(r["detections"]) for r in records) > 0
    for r in records:
        for d in r["detections"]:
            x1, y1, x2, y2 = d["bbox"]
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]
            assert d["score"] >= 0.05 and d["class_name"] == _coco_name(d["class_id"])
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(saved) == 5  # every readable image drawn
    drawn = cv2.imread(str(tmp_path / "out" / sample_images[0].name))
    assert drawn.shape == img.shape and not np.array_equal(drawn, img)


def test_conf_threshold_filters(plus_weights, sample_images):
    low, _ = run_detect(plus_weights, *map(str, sample_images))
    high, _ = run_detect(plus_weights, "--conf", "0.07", *map(str, sample_images))
    assert [len(r["detections"]) for r in high] != [len(r["detections"]) for r in low]
    for lo, hi in zip(low, high):
        assert [d for d in lo["detections"] if d["score"] >= 0.07] == hi["detections"]


def test_video(plus_weights, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    rng = np.random.default_rng(2)
    for _ in range(7):
        writer.write(synthetic_image(rng, size=(320, 240))[0])
    writer.release()
    records, proc = run_detect(plus_weights, "--save-dir", str(tmp_path / "out"), str(video))
    assert proc.returncode == 0, proc.stderr
    assert [r["frame"] for r in records] == list(range(7))
    assert all(r["file"] == str(video) and (r["width"], r["height"]) == (320, 240) for r in records)
    written = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 7


def test_only_bad_inputs_fail(plus_weights, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    records, proc = run_detect(plus_weights, str(bad), str(tmp_path / "missing.jpg"))
    assert records == [] and proc.returncode == 1
    assert "bad.jpg: not a decodable image" in proc.stderr and "missing.jpg" in proc.stderr


def test_bad_weights_is_one_clear_error(tmp_path, sample_images):
    bad = tmp_path / "w.pth"
    bad.write_text("hello")
    _, proc = run_detect(bad, str(sample_images[0]))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: not a readable PyTorch checkpoint")


def _coco_name(i: int) -> str:
    import yaml

    return yaml.safe_load(Path(CONFIG).read_text())["class_names"][i]


def test_cached_export_detects_without_importing_torch(plus_weights, sample_images, tmp_path):
    """PyTorch weights: the first run exports the graph (PyTorch needed); every later run takes
    the cached export and never imports PyTorch (2 s of its start), with the same records. An
    exported file given as --weights needs no PyTorch either."""
    tell = (
        "import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))"
    )
    run = [sys.executable, "-c", f"{tell}; from nanodet.cli import main; sys.exit(main(sys.argv[1:]))", "detect"]
    common = ["--conf", "0.05", "--no-progress", "--device", "cpu", *map(str, sample_images)]
    env = {**os.environ, "NANODET_CACHE_DIR": str(tmp_path / "cache")}

    def detect(*model: str) -> tuple[list[dict], str]:
        proc = subprocess.run([*run, *model, *common], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr

    first, log = detect("--config", CONFIG, "--weights", str(plus_weights))
    assert "torch imported: True" in log and "backend onnxruntime" in log
    cached, log = detect("--config", CONFIG, "--weights", str(plus_weights))
    assert "torch imported: False" in log and "using the ONNX export" in log
    assert cached == first and sum(len(r["detections"]) for r in first) > 0
    (exported,) = (tmp_path / "cache").glob("*.onnx")
    records, log = detect("--weights", str(exported))
    assert "torch imported: False" in log
    assert [r["detections"] for r in records] == [r["detections"] for r in first]
