"""Running start.py as the platform would, and checking outputs as the platform does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from .conftest import ROOT
from .sample_data import SAMPLE_CLASSES, write_sample

NO_WEIGHTS = Path(tempfile.mkdtemp(prefix="nanodet-no-weights-"))  # an empty /weights and torch cache


def run_start(in_dir: Path, out_dir: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """start.py as the container runs it. No pretrained weights are visible unless ``env`` names a
    folder (``NANODET_WEIGHTS_DIR``): the image's /weights and the user's torch cache stay out."""
    return subprocess.run(
        [sys.executable, str(ROOT / "start.py"), "--in", str(in_dir), "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "NANODET_WEIGHTS_DIR": str(NO_WEIGHTS),
            "TORCH_HOME": str(NO_WEIGHTS),
            **(env or {}),
        },
    )


def monitor_fields(out_dir: Path) -> list[str]:
    lines = (out_dir / "monitor.txt").read_text().splitlines()
    fields = lines[0].split("\t")
    assert len(fields) >= 5, lines
    float(fields[1]), float(fields[2]), int(fields[3]), int(fields[4])
    return fields


def assert_success(proc: subprocess.CompletedProcess, out_dir: Path) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    fields = monitor_fields(out_dir)
    assert fields[2] == "1.0000" and fields[3] == "2" and fields[4] == "0", fields


def assert_failure(proc: subprocess.CompletedProcess, out_dir: Path, code: int) -> list[str]:
    assert proc.returncode != 0, proc.stdout[-2000:]
    fields = monitor_fields(out_dir)
    assert fields[3] == "4" and int(fields[4]) == code, fields
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error {code}: "), proc.stderr[-1000:]
    return fields


def edit_yaml(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def check_training_outputs(out_dir: Path, protocol_stages: bool = True) -> dict:
    """What the platform and the verifier check after a training task."""
    models = out_dir / "models"
    result = yaml.safe_load((models / "result.yaml").read_text())
    if protocol_stages:
        assert "model" not in result
        stages = result["model_stages"]
        assert result["best_stage_name"] in stages and len(stages) <= 11
        for name, stage in stages.items():
            assert name.isidentifier() and stage["stage_name"] == name
            assert isinstance(stage["timestamp"], int) and 0.0 <= stage["mAP"] <= 1.0
            assert 0.0 <= stage["mAR"] <= 1.0 and all(stage[k] >= 0 for k in ("tp", "fp", "fn"))
            for f in stage["files"]:
                assert not Path(f).is_absolute()
                path = models / name / f if (models / name / f).exists() else models / f
                assert path.is_file() and not path.is_symlink(), path
        assert set(result["evaluate_config"]) == {"iou_thr", "conf_thr"}
    else:
        assert set(result) == {"model", "map"} and 0.0 <= result["map"] <= 1.0
        for f in result["model"]:
            assert (models / f).is_file() and not Path(f).is_absolute()
    assert (models / "nanodet_model_best.pth").is_file()
    assert list((out_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (out_dir / "ymir-executor-out.log").exists()  # the platform's file
    return result


def sample_workspace(root: Path, training: bool, protocol_version: str = "1.1.0", **config) -> Path:
    """The platform-format sample (tests/sample_data.py) as /in with env.yaml and config.yaml."""
    from executor.workspace import write_env

    in_dir = write_sample(root / "in")
    write_env(in_dir, training=training, mining=not training, infer=not training, protocol_version=protocol_version)
    (in_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {"task_id": "t0000001sample", "class_names": SAMPLE_CLASSES, "gpu_id": "", "gpu_count": 0, **config}
        )
    )
    return in_dir


def infer_result(out_dir: Path) -> dict:
    return json.loads((out_dir / "infer-result.json").read_text())
