"""The training task end to end through start.py, checked as the platform would."""

import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from executor.workspace import make_training_workspace

from .executor_helpers import (
    Watcher,
    assert_failure,
    assert_success,
    check_training_outputs,
    edit_yaml,
    monitor_fields,
    run_start,
    sample_workspace,
)

# the tests share a module fixture (a whole task): one xdist worker runs them all, so it runs once
pytestmark = pytest.mark.xdist_group("executor-training")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """One training task shared by several checks (protocol 1.1.0, 3 epochs, stage every epoch)."""
    root = tmp_path_factory.mktemp("train")
    in_dir = make_training_workspace(
        root / "in",
        train_images=24,
        val_images=8,
        epochs=3,
        input_size=128,
        val_intervals=1,
        batch_size_per_gpu=8,
        workers_per_gpu=0,
    )
    with Watcher(root / "out", time.time()).in_background() as watch:
        proc = run_start(in_dir, root / "out")
    assert_success(proc, root / "out")
    TRAINING_PROGRESS[:] = watch.seen
    return root / "out", proc


TRAINING_PROGRESS: list[float] = []  # monitor.txt's progress values seen while the shared task ran


def test_training_outputs(trained):
    out_dir, proc = trained
    result = check_training_outputs(out_dir)
    assert sorted(result["model_stages"]) == ["epoch_1", "epoch_2", "epoch_3"]
    best = result["best_stage_name"]
    assert result["mAP"] == max(s["mAP"] for s in result["model_stages"].values())
    assert result["mAP"] == result["model_stages"][best]["mAP"]
    assert (out_dir / "models" / "nanodet_model.pth").is_file()  # the best stage, copied to the top level
    assert "starting weights: random init (no COCO checkpoint" in proc.stdout
    assert "training set: 24 images" in proc.stdout and "per-class AP" in proc.stdout


def test_every_stage_carries_an_onnx_model_that_detects_like_its_weights(trained):
    """Each stage lists nanodet_model.onnx; run without this code's config (its metadata has the
    classes and input size), it finds what the stage's .pth finds."""
    import torch

    from nanodet.config import load_config
    from nanodet.inference.predictor import Predictor

    out_dir, _ = trained
    result = check_training_outputs(out_dir)
    x = torch.randn(3, 3, 128, 128)
    for name, stage in result["model_stages"].items():
        assert "nanodet_model.onnx" in stage["files"], stage["files"]
        folder = out_dir / "models" / name
        onnx = Predictor(None, folder / "nanodet_model.onnx", backend="onnxruntime")
        pth = Predictor(load_config(folder / "train_cfg.yml"), folder / "nanodet_model.pth", backend="torch")
        assert onnx.class_names == pth.class_names and onnx.input_wh == (128, 128)
        a, b = onnx.run(x.numpy()), pth.run(x)  # NumPy arrays from ONNX Runtime, tensors from torch
        assert np.abs(a.scores - b.scores.numpy()).max() < 1e-4 and np.abs(a.boxes - b.boxes.numpy()).max() < 1e-3
    assert (out_dir / "models" / "nanodet_model.onnx").is_file()  # the best stage's, at the top level


def test_the_best_stage_carries_the_labelled_images_embeddings(trained):
    """For the next mining round's diversity ranking: one float16 row per training and validation
    image (24 + 8), in the best stage's folder, listed with its files and copied to the top level,
    equal to the embeddings of those images through the best stage's weights."""
    from nanodet.config import load_config
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.diversity import image_embeddings

    out_dir, proc = trained
    models = out_dir / "models"
    result = yaml.safe_load((models / "result.yaml").read_text())
    best = result["best_stage_name"]
    assert "labelled_embeddings.npy" in result["model_stages"][best]["files"]
    assert all("labelled_embeddings.npy" not in s["files"] for n, s in result["model_stages"].items() if n != best)
    written = np.load(models / best / "labelled_embeddings.npy", allow_pickle=False)
    assert written.shape == (32, 64) and written.dtype == np.float16
    assert np.array_equal(np.load(models / "labelled_embeddings.npy"), written)
    assert "labelled_embeddings.npy: 32 labelled images embedded for mining" in proc.stdout

    in_dir = out_dir.parent / "in"
    cfg = load_config(models / "train_cfg.yml")
    listed = [line.split()[0] for name in ("train-index.tsv", "val-index.tsv") for line in (in_dir / name).open()]
    paths = [in_dir / p.removeprefix("/in/") for p in listed]
    predictor = Predictor(cfg, models / best / "nanodet_model.pth", backend="torch")
    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    ours = np.concatenate(
        [image_embeddings(predictor.forward_levels(b.images), 3) for b in inference_batches(dataset, 8, 0)]
    )
    np.testing.assert_allclose(written.astype(np.float32), ours.astype(np.float32), atol=2e-3, rtol=1e-2)


def test_protocol_0_result_is_flat(tmp_path):
    in_dir = make_training_workspace(
        tmp_path / "in",
        train_images=8,
        val_images=4,
        epochs=1,
        input_size=128,
        protocol_version="0.0.1",
        workers_per_gpu=0,
    )
    env = yaml.safe_load((in_dir / "env.yaml").read_text())
    del env["protocol_version"]  # ymir 1.0/1.1 write none
    (in_dir / "env.yaml").write_text(yaml.safe_dump(env))
    assert_success(run_start(in_dir, tmp_path / "out"), tmp_path / "out")
    result = check_training_outputs(tmp_path / "out", protocol_stages=False)
    assert "nanodet_model.pth" in result["model"] and "train_cfg.yml" in result["model"]
    assert "labelled_embeddings.npy" in result["model"]  # flat: the later tasks get it all the same


def test_sample_data_small_dataset(tmp_path):
    """The platform-format sample (4 generated photo-like pictures of 1024-1280 px, in the
    platform's layout), batch 16 → the batch shrinks to the set; the 6-column line parses."""
    in_dir = sample_workspace(
        tmp_path,
        training=True,
        config_file="config/nanodet-plus-m_320.yml",
        epochs=1,
        input_size=128,
        batch_size_per_gpu=16,
        workers_per_gpu=0,
        resume="False",
    )
    proc = run_start(in_dir, tmp_path / "out")
    assert_success(proc, tmp_path / "out")
    assert "batch_size_per_gpu 16 > 4 training images per process: using 4" in proc.stdout
    assert "training set: 4 images, 6 boxes" in proc.stdout
    check_training_outputs(tmp_path / "out")


def test_resume_continues_and_keeps_stages(trained, tmp_path):
    out_dir, _ = trained
    import shutil

    in_dir = tmp_path / "in"
    shutil.copytree(out_dir.parent / "in", in_dir)
    shutil.copytree(out_dir, tmp_path / "out")
    edit_yaml(in_dir / "config.yaml", epochs=4, resume="true")
    proc = run_start(in_dir, tmp_path / "out")
    assert_success(proc, tmp_path / "out")
    assert "resumed from" in proc.stdout and "3 epochs done" in proc.stdout
    result = check_training_outputs(tmp_path / "out")
    assert sorted(result["model_stages"]) == ["epoch_1", "epoch_2", "epoch_3", "epoch_4"]


def test_load_from_and_pretrained(trained, tmp_path):
    out_dir, _ = trained
    in_dir = make_training_workspace(
        tmp_path / "in",
        train_images=8,
        val_images=4,
        epochs=1,
        input_size=128,
        workers_per_gpu=0,
        load_from="prev/nanodet_model_best.pth",
    )
    import shutil

    shutil.copytree(out_dir / "models", in_dir / "models" / "prev")
    proc = run_start(in_dir, tmp_path / "out")
    assert_success(proc, tmp_path / "out")
    assert "starting weights: load_from" in proc.stdout
    assert "model config saved with the starting model" in proc.stdout
    assert "887 tensors loaded, 0 skipped (shape), 0 missing" in proc.stdout  # the aux branch too


def test_missing_load_from_is_a_model_error(tmp_path):
    in_dir = make_training_workspace(
        tmp_path / "in", train_images=4, val_images=2, epochs=1, input_size=128, load_from="nope.pth"
    )
    assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300004)


@pytest.mark.parametrize(
    "key, value, expect",
    [
        ("epochs", "many", "key 'epochs': value 'many' is invalid"),
        ("input_size", 100, "key 'input_size': value 100 is invalid"),
        ("resume", "perhaps", "key 'resume': value 'perhaps' is invalid"),
        ("config_file", "config/yolo.yml", "key 'config_file': 'config/yolo.yml' is not a bundled model config"),
        (
            "evaluate_iou_thr",
            0.555,
            "key 'evaluate_iou_thr': value 0.555 is invalid: Value error, must be a multiple of 0.01",
        ),
    ],
)
def test_bad_hyper_parameter_names_key_value(tmp_path, key, value, expect):
    in_dir = make_training_workspace(tmp_path / "in", train_images=4, val_images=2, **{"epochs": 1, key: value})
    proc = run_start(in_dir, tmp_path / "out")
    fields = assert_failure(proc, tmp_path / "out", 300001)
    assert expect in fields[5] and expect in proc.stderr


def test_empty_validation_set_is_a_dataset_error(tmp_path):
    in_dir = make_training_workspace(tmp_path / "in", train_images=4, val_images=2, epochs=1)
    (in_dir / "val-index.tsv").write_text("\n")
    fields = assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300002)
    assert "val-index.tsv: the validation set has no usable image" in fields[5]


def test_monitor_progress_is_written_during_training(trained):
    """While the task ran, monitor.txt went through many running records whose progress only
    grew, from the start of training to 1.0 at the end."""
    out_dir, proc = trained
    assert monitor_fields(out_dir)[0] == "t0000001demo"
    seen = TRAINING_PROGRESS
    assert seen == sorted(seen) and seen[-1] == 1.0, seen
    # 3 epochs of 3 batches, 3 evaluations and stages (writes at most every 0.5 s): several values
    assert min(seen) < 0.2 and len([v for v in seen if 0.0 < v < 1.0]) >= 4, seen


def test_tensorboard_has_the_pictures_of_every_evaluation(trained):
    """Per evaluation: a PR curve per class at the task's IoU (TensorBoard's [6, thresholds]
    layout), the confusion matrix and AP charts, and the same validation images every time."""
    import cv2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from executor.paths import PathMapper
    from nanodet.data.image_io import read_image

    out_dir, _ = trained
    events = EventAccumulator(str(out_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    curves = [t for t in tags["tensors"] if t.startswith("val_PR_AP_50/")]
    assert curves and {t.split("/", 1)[1] for t in curves} <= {"circle", "square", "triangle"}
    for tag in curves:
        steps = events.Tensors(tag)
        assert [s.step for s in steps] == [1, 2, 3]
        data = np.array(steps[-1].tensor_proto.float_val).reshape(6, -1)  # tp, fp, tn, fn, precision, recall
        assert data.shape == (6, 101) and ((0 <= data[4]) & (data[4] <= 1)).all()
        assert (np.diff(data[5]) <= 1e-9).all()  # recall falls as the threshold rises
    assert {"val_charts/confusion_matrix", "val_charts/per_class_AP"} <= set(tags["images"])
    for tag in [t for t in tags["images"] if t.startswith("val_")]:
        assert [e.step for e in events.Images(tag)] == [1, 2, 3], tag
    # of the 8 validation images, 6 spread evenly over the set (positions 0, 1, 3, 4, 6, 7 of its
    # index), the same 6 every evaluation: each one's ground-truth half is the same picture each
    # time, and it is that image file (its pixels, outside the drawn boxes)
    in_dir = out_dir.parent / "in"
    rows = [line.split("\t")[0] for line in (in_dir / "val-index.tsv").read_text().splitlines() if line]
    files = [PathMapper(in_dir, out_dir)(row) for row in rows]
    assert len(files) == 8
    shown = [files[i] for i in (0, 1, 3, 4, 6, 7)]
    assert sorted(t for t in tags["images"] if t.startswith("val_images/")) == sorted(
        f"val_images/{f.stem}" for f in shown
    )
    for path in shown:
        image = read_image(path)
        halves = []
        for event in events.Images(f"val_images/{path.stem}"):
            picture = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
            h, w = image.shape[:2]
            assert picture.shape == (h + 22, 2 * w + 6, 3), (picture.shape, image.shape)  # title strip, gap
            halves.append(picture[22:, w + 6 :])  # the ground truth, drawn on the image
        assert all(np.array_equal(halves[0], half) for half in halves[1:]), path.name
        assert (halves[0] == image).all(axis=2).mean() > 0.5, path.name  # the rest is the boxes drawn


def test_only_the_best_stage_keeps_its_pictures(trained):
    out_dir, _ = trained
    result = check_training_outputs(out_dir)
    models = out_dir / "models"
    pngs = {"confusion_matrix.png", "pr_curve.png", "per_class_AP.png", "val_images.png"}
    for name, stage in result["model_stages"].items():
        listed = {f for f in stage["files"] if f.endswith(".png")}
        on_disk = {p.name for p in (models / name).glob("*.png")}
        assert listed == on_disk == (pngs if name == result["best_stage_name"] else set()), name
    assert all((models / p).is_file() for p in pngs)  # copied to the top level with the best stage
