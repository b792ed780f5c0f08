"""Untrusted paths and files: nothing is written outside /out, hostile files are refused one
by one, and mining/infer still cover every candidate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from executor.paths import is_under

from ..executor_helpers import assert_success, check_training_outputs, infer_result, run_start
from .checks import assert_fails_with, assert_outputs_consistent
from .corpus import (
    GARBAGE,
    add_item,
    jpeg_bytes,
    png_bomb,
    png_header,
    tiny_models,
    tiny_predict,
    tiny_training,
    tree_snapshot,
)

GOOD_BOX = "0, 10, 10, 40, 40, -1.0, 0.0\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tiny_models(tmp_path_factory.mktemp("models"))


def _outside(root: Path) -> Path:
    """A folder beside /in and /out holding a good image, its annotation and weights: a
    sentinel that no run may change."""
    outside = root / "outside"
    outside.mkdir()
    (outside / "img.jpg").write_bytes(jpeg_bytes(seed=11))
    (outside / "img.txt").write_text(GOOD_BOX)
    return outside


def _run_confined(root: Path, in_dir: Path):
    """start.py with everything but /out snapshotted before and after: nothing else changes."""
    out = root / "out"
    before = tree_snapshot(root, skip=out)
    proc = run_start(in_dir, out)
    assert tree_snapshot(root, skip=out) == before, "a file outside /out was created or changed"
    return proc, out


def test_dotdot_in_training_index(tmp_path):
    in_dir = tiny_training(tmp_path / "in")
    _outside(tmp_path)
    with (in_dir / "train-index.tsv").open("a") as f:
        f.write("/in/assets/../../outside/img.jpg\t/in/annotations/../../outside/img.txt\n")
        f.write("/in/../../../../../../etc/passwd\t/in/../../../../../../etc/hostname\n")
    proc, out = _run_confined(tmp_path, in_dir)
    assert_success(proc, out)
    assert "training set: 5 images" in proc.stdout and "1 unreadable images (skipped)" in proc.stdout
    check_training_outputs(out)


def test_dotdot_in_load_from_reads_but_writes_nothing_there(tmp_path, models):
    in_dir = tiny_training(tmp_path / "in", load_from="../../outside/weights/nanodet_model_best.pth")
    (in_dir / "models").mkdir()
    _outside(tmp_path)
    shutil.copytree(models, tmp_path / "outside" / "weights")
    proc, out = _run_confined(tmp_path, in_dir)
    assert_success(proc, out)
    assert "starting weights: load_from" in proc.stdout
    check_training_outputs(out)


def test_dotdot_load_from_missing_file_is_a_model_error(tmp_path):
    in_dir = tiny_training(tmp_path / "in", load_from="../../../../outside/none.pth")
    _outside(tmp_path)
    proc, out = _run_confined(tmp_path, in_dir)
    assert_fails_with(proc, out, 300004, "load_from: weights file '../../../../outside/none.pth' not found")


def test_fifo_and_folder_in_index_are_refused_per_image(tmp_path):
    """A pipe or device named as an image would block or be read forever: refused unread."""
    in_dir = tiny_training(tmp_path / "in")
    add_item(in_dir, "train-index.tsv", None, GOOD_BOX, name="pipe.jpg")
    os.mkfifo(in_dir / "assets" / "xx" / "pipe.jpg")
    (in_dir / "assets" / "xx" / "folder.jpg").mkdir()
    add_item(in_dir, "train-index.tsv", None, GOOD_BOX, name="folder.jpg")
    proc, out = _run_confined(tmp_path, in_dir)
    assert_success(proc, out)
    assert "pipe.jpg: not a regular file" in proc.stdout and "folder.jpg: not a regular file" in proc.stdout
    assert "training set: 4 images" in proc.stdout and "2 unreadable images (skipped)" in proc.stdout


def test_hostile_candidates_each_get_a_result(tmp_path, models):
    """Mining + infer over good candidates mixed with garbage, a bomb, a pipe, a missing file,
    ``..`` paths, a UTF-8 name with spaces and a name without extension: every candidate is
    in both results; the unreadable ones have no boxes and rank last."""
    in_dir = tiny_predict(tmp_path / "in", models)
    _outside(tmp_path)
    assets = in_dir / "assets" / "xx"
    assets.mkdir()
    (assets / "garbage.jpg").write_bytes(GARBAGE)
    (assets / "bomb.png").write_bytes(png_bomb(21000))
    (assets / "claims-huge.png").write_bytes(png_header(100000, 100000))
    os.mkfifo(assets / "pipe.jpg")
    (assets / "猫 photo 1.jpg").write_bytes(jpeg_bytes(seed=3))
    (assets / "3f8ae93f").write_bytes(jpeg_bytes(seed=4))
    good = [line for line in (in_dir / "candidate-index.tsv").read_text().splitlines() if line]
    good += ["/in/assets/xx/猫 photo 1.jpg", "/in/assets/xx/3f8ae93f", "/in/assets/../../outside/img.jpg"]
    bad = [
        "/in/assets/xx/garbage.jpg",
        "/in/assets/xx/bomb.png",
        "/in/assets/xx/claims-huge.png",
        "/in/assets/xx/pipe.jpg",
        "/in/assets/xx/missing.jpg",
    ]
    (in_dir / "candidate-index.tsv").write_text("\r\n".join(good + bad) + "\r\n\r\n")
    proc, out = _run_confined(tmp_path, in_dir)
    assert_success(proc, out)
    assert_outputs_consistent(out)
    rows = [line.split("\t") for line in (out / "result.tsv").read_text().splitlines()]
    assert sorted(r[0] for r in rows) == sorted(good + bad)
    assert {r[0] for r in rows[-len(bad) :]} == set(bad) and all(float(r[1]) == -1 for r in rows[-len(bad) :])
    assert all(float(r[1]) >= 0 for r in rows[: len(good)])
    detection = infer_result(out)["detection"]
    assert set(detection) == {Path(c).name for c in good + bad}
    assert all(detection[Path(c).name] == {"boxes": []} for c in bad)
    warned = [line for line in proc.stdout.splitlines() if "unreadable candidate" in line]
    assert len(warned) == len(bad) - 1  # once: mining and infer are one pass; the missing file apart
    assert sum("image too large (its header claims" in line for line in warned) == 2  # the bomb and the absurd header
    assert (
        sum("candidates: /in/assets/xx/missing.jpg: image file not found" in line for line in proc.stdout.splitlines())
        == 1
    )


def test_all_candidates_unreadable_is_an_image_format_error(tmp_path, models):
    in_dir = tiny_predict(tmp_path / "in", models, mining=False)
    for line in (in_dir / "candidate-index.tsv").read_text().splitlines():
        (in_dir / line[len("/in/") :]).write_bytes(b"BM-not-really-a-bitmap")
    proc, out = _run_confined(tmp_path, in_dir)
    assert_fails_with(proc, out, 300003, "candidate-index.tsv: none of the 3 candidate images can be decoded")
    assert not (out / "infer-result.json").exists()


def test_all_candidates_missing_is_a_dataset_error(tmp_path, models):
    in_dir = tiny_predict(tmp_path / "in", models)
    lines = [line for line in (in_dir / "candidate-index.tsv").read_text().splitlines() if line]
    for line in lines:
        (in_dir / line[len("/in/") :]).unlink()
    proc, out = _run_confined(tmp_path, in_dir)
    assert_fails_with(
        proc, out, 300002, f"candidate-index.tsv: none of the 3 candidate images exists (first: {lines[0]})"
    )
    assert not (out / "result.tsv").exists() and not (out / "infer-result.json").exists()


def test_candidates_missing_or_undecodable_is_an_image_format_error(tmp_path, models):
    in_dir = tiny_predict(tmp_path / "in", models, infer=False)
    lines = [line for line in (in_dir / "candidate-index.tsv").read_text().splitlines() if line]
    (in_dir / lines[0][len("/in/") :]).write_bytes(GARBAGE)
    for line in lines[1:]:
        (in_dir / line[len("/in/") :]).unlink()
    proc, out = _run_confined(tmp_path, in_dir)
    fields = assert_fails_with(proc, out, 300003, "candidate-index.tsv: none of the 3 candidate images can be decoded")
    assert fields[5].endswith("; 2 of them missing)"), fields[5]
    assert not (out / "result.tsv").exists()


def _set_output(in_dir: Path, key: str, value: str) -> None:
    path = in_dir / "env.yaml"
    env = yaml.safe_load(path.read_text())
    env["output"][key] = value
    path.write_text(yaml.safe_dump(env, sort_keys=False))


OUTSIDE_ETC = f"/etc/nanodet-test-output-{os.getpid()}"  # as root, a real path outside the workspace

OUTPUT_CASES = [
    # (id, task, key, value, text the monitor message must contain)
    (
        "models-in-input",
        "training",
        "models_dir",
        "/in/models",
        "key 'output.models_dir': '/in/models' is not under the output root /out",
    ),
    (
        "models-in-etc",
        "training",
        "models_dir",
        OUTSIDE_ETC,
        f"key 'output.models_dir': '{OUTSIDE_ETC}' is not under the output root /out",
    ),
    (
        "models-dotdot",
        "training",
        "models_dir",
        "/out/../elsewhere",
        "key 'output.models_dir': '/out/../elsewhere' is not under the output root /out",
    ),
    (
        "tensorboard-dotdot",
        "training",
        "tensorboard_dir",
        "/out/tensorboard/../../tb",
        "key 'output.tensorboard_dir': '/out/tensorboard/../../tb' is not under the output root /out",
    ),
    (
        "result-relative",
        "training",
        "training_result_file",
        "out/models/result.yaml",
        "key 'output.training_result_file': 'out/models/result.yaml' is not under the output root /out",
    ),
    (
        "prefix-is-not-a-folder",
        "training",
        "models_dir",
        "/outside/models",
        "key 'output.models_dir': '/outside/models' is not under the output root /out",
    ),
    ("root-elsewhere", "training", "root_dir", "/in", "key 'output.root_dir': '/in' is not /out or a folder under it"),
    (
        "mining-result-in-input",
        "predict",
        "mining_result_file",
        "/in/result.tsv",
        "key 'output.mining_result_file': '/in/result.tsv' is not under the output root /out",
    ),
    (
        "infer-result-dotdot",
        "predict",
        "infer_result_file",
        "/out/../infer-result.json",
        "key 'output.infer_result_file': '/out/../infer-result.json' is not under the output root /out",
    ),
    (
        "monitor-in-input",
        "predict",
        "monitor_file",
        "/in/monitor.txt",
        "key 'output.monitor_file': '/in/monitor.txt' is not under the output root /out; this failure is recorded in "
        "/out/monitor.txt instead",
    ),
]


@pytest.mark.parametrize("task, key, value, message", [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_output_paths_outside_the_output_root_are_refused(tmp_path, models, task, key, value, message):
    """env.yaml output paths that resolve outside /out: a config error naming the key and the path,
    before anything is written (the failure record goes to /out/monitor.txt when the monitor
    file itself is outside)."""
    in_dir = tiny_training(tmp_path / "in") if task == "training" else tiny_predict(tmp_path / "in", models)
    _set_output(in_dir, key, value)
    try:
        proc, out = _run_confined(tmp_path, in_dir)
        assert not Path(OUTSIDE_ETC).exists()
    finally:
        shutil.rmtree(OUTSIDE_ETC, ignore_errors=True)
    fields = assert_fails_with(proc, out, 300001, message)
    assert fields[0] == "t0000001demo" and fields[2] == "0.0000"  # the task's record, written before anything ran
    assert sorted(p.name for p in out.iterdir()) == ["monitor.txt"]


@pytest.mark.parametrize(
    "path, root, inside",
    [
        ("/out", "/out", True),
        ("/out/models", "/out/", True),
        ("/out/./a/../models", "/out", True),
        ("//out/models", "/out", True),
        ("/out/../out/models", "/out", True),
        ("/out/..", "/out", False),
        ("/outside", "/out", False),
        ("out/models", "/out", False),
        ("", "/out", False),
        ("/in/models", "/out", False),
        ("/out/sub/x", "/out/sub", True),
        ("/out/subway", "/out/sub", False),
    ],
)
def test_is_under_compares_paths_as_written(path, root, inside):
    assert is_under(path, root) is inside
