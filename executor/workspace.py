"""Generate a platform-format workspace (``/in`` as YMIR mounts it) from synthetic images.

Used by ``make demo``, the tests and the benchmarks: assets named by content hash in
two-character subfolders, ark annotations (7 columns, ``, `` separated, inclusive corners),
index files naming ``/in/...`` paths, env.yaml and config.yaml for each task kind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import yaml

from nanodet.data.synthetic import synthetic_image

CLASSES = ["circle", "square", "triangle"]


def _write_asset(in_dir: Path, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[str, str]:
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    digest = hashlib.sha1(data).hexdigest()
    sub = digest[-2:]
    asset = in_dir / "assets" / sub / f"{digest}.jpg"
    ann = in_dir / "annotations" / sub / f"{digest}.txt"
    asset.parent.mkdir(parents=True, exist_ok=True)
    ann.parent.mkdir(parents=True, exist_ok=True)
    asset.write_bytes(data)
    lines = [
        f"{int(label)}, {int(b[0])}, {int(b[1])}, {int(b[2]) - 1}, {int(b[3]) - 1}, -1.0, 0.0"
        for b, label in zip(boxes, labels)
    ]
    ann.write_text("\n".join(lines) + ("\n" if lines else ""))
    return f"/in/assets/{sub}/{digest}.jpg", f"/in/annotations/{sub}/{digest}.txt"


def make_dataset(in_dir: Path, num_images: int, seed: int = 0, size=((192, 160), (320, 256))) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_images):
        w = int(rng.integers(size[0][0], size[1][0] + 1))
        h = int(rng.integers(size[0][1], size[1][1] + 1))
        image, boxes, labels = synthetic_image(rng, size=(w, h), class_names=CLASSES, min_size=32, max_size=96)
        rows.append(_write_asset(in_dir, image, boxes, labels))
    return rows


def write_env(
    in_dir: Path,
    *,
    training: bool = False,
    mining: bool = False,
    infer: bool = False,
    protocol_version: str = "1.1.0",
    task_id: str = "t0000001demo",
) -> None:
    env = {
        "protocol_version": protocol_version,
        "task_id": task_id,
        "run_training": training,
        "run_mining": mining,
        "run_infer": infer,
        "input": {
            "root_dir": "/in",
            "assets_dir": "/in/assets",
            "annotations_dir": "/in/annotations",
            "models_dir": "/in/models",
            "config_file": "/in/config.yaml",
            "training_index_file": "/in/train-index.tsv" if training else "",
            "val_index_file": "/in/val-index.tsv" if training else "",
            "candidate_index_file": "" if training else "/in/candidate-index.tsv",
        },
        "output": {
            "root_dir": "/out",
            "models_dir": "/out/models",
            "tensorboard_dir": "/out/tensorboard",
            "training_result_file": "/out/models/result.yaml",
            "mining_result_file": "/out/result.tsv",
            "infer_result_file": "/out/infer-result.json",
            "monitor_file": "/out/monitor.txt",
            "executor_log_file": "/out/ymir-executor-out.log",
        },
    }
    (in_dir / "env.yaml").write_text(yaml.safe_dump(env, sort_keys=False))


def make_training_workspace(
    in_dir: Path, train_images: int = 48, val_images: int = 16, seed: int = 0, protocol_version: str = "1.1.0", **hyper
) -> Path:
    in_dir.mkdir(parents=True, exist_ok=True)
    train = make_dataset(in_dir, train_images, seed)
    val = make_dataset(in_dir, val_images, seed + 1)
    (in_dir / "train-index.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in train))
    (in_dir / "val-index.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in val))
    write_env(in_dir, training=True, protocol_version=protocol_version)
    config = {
        "config_file": "config/nanodet-plus-m_320.yml",
        "epochs": 10,
        "input_size": 192,
        "learning_rate": 0.003,
        "batch_size_per_gpu": 16,
        "workers_per_gpu": 2,
        "resume": False,
        "load_from": "",
        "shm_size": "16G",
        "export_format": "ark:raw",
        "ymir_saved_file_patterns": "",
        "seed": 2345,
        # reserved keys, written by the platform
        "task_id": "t0000001demo",
        "class_names": CLASSES,
        "gpu_id": "",
        "gpu_count": 0,
        **hyper,
    }
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return in_dir


def make_predict_workspace(
    in_dir: Path,
    models_from: Path,
    candidates: int = 24,
    seed: int = 7,
    mining: bool = True,
    infer: bool = True,
    protocol_version: str = "1.1.0",
    size=((192, 160), (320, 256)),
    **hyper,
) -> Path:
    """Candidates plus the models of a finished training (its /out/models becomes /in/models)."""
    import shutil

    in_dir.mkdir(parents=True, exist_ok=True)
    rows = make_dataset(in_dir, candidates, seed, size)
    (in_dir / "candidate-index.tsv").write_text("".join(f"{a}\n" for a, _ in rows))
    models = in_dir / "models"
    if models.exists():
        shutil.rmtree(models)
    shutil.copytree(models_from, models)
    write_env(in_dir, mining=mining, infer=infer, protocol_version=protocol_version)
    top_level = sorted(p.name for p in models.iterdir() if p.is_file() and p.suffix in (".pth", ".ckpt", ".yml"))
    config = {
        "conf_thres": 0.35,
        "batch_size_per_gpu": 8,
        "workers_per_gpu": 2,
        "pin_memory": False,
        "task_id": "t0000001demo",
        "class_names": CLASSES,
        "gpu_id": "",
        "gpu_count": 0,
        "model_params_path": top_level,
        "run_mining": mining,
        "run_infer": infer,
        **hyper,
    }
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return in_dir
