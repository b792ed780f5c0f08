"""Running start.py as the platform would, and checking outputs as the platform does."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from .conftest import ROOT
from .sample_data import SAMPLE_CLASSES, write_sample


def read_progress(out_dir: Path) -> tuple[float, float] | None:
    """(timestamp, percent) of the monitor record, None before the first one."""
    try:
        fields = (out_dir / "monitor.txt").read_text().splitlines()[0].split("\t")
    except (FileNotFoundError, IndexError):
        return None
    return float(fields[1]), float(fields[2])


class Watcher:
    """Polls monitor.txt while a run goes on: every record it sees, in order."""

    def __init__(self, out_dir: Path, since: float) -> None:
        self.out_dir, self.since = out_dir, since
        self.seen: list[float] = []

    def poll(self) -> None:
        record = read_progress(self.out_dir)
        if record is not None and record[0] >= self.since and (not self.seen or record[1] != self.seen[-1]):
            self.seen.append(record[1])

    def wait_until(self, proc: subprocess.Popen, condition, timeout: float = 120.0) -> bool:
        """Poll until ``condition()`` or the process ends; True when the condition came first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if condition():
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.01)
        raise AssertionError("timed out")

    def sleep(self, proc: subprocess.Popen, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and proc.poll() is None:
            self.poll()
            time.sleep(0.005)

    @contextlib.contextmanager
    def in_background(self, interval: float = 0.02) -> Iterator[Watcher]:
        """Poll from a thread while the body runs (a blocking ``run_start``, say)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                self.poll()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.poll()


NO_WEIGHTS = Path(tempfile.mkdtemp(prefix="nanodet-no-weights-"))  # an empty /weights and torch cache
atexit.register(shutil.rmtree, NO_WEIGHTS, ignore_errors=True)


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


def start_task(in_dir: Path, out_dir: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """start.py in the background, in its own process group (a kill reaches the helper processes
    it started), its output in ``log``. Pretrained weights as in :func:`run_start`."""
    with log.open("w") as f:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "start.py"), "--in", str(in_dir), "--out", str(out_dir)],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "NANODET_WEIGHTS_DIR": str(NO_WEIGHTS),
                "TORCH_HOME": str(NO_WEIGHTS),
                **(env or {}),
            },
        )


class Pauses:
    """The test's side of :mod:`nanodet.utils.pause_points`: ``env`` asks the processes of a task
    to pause at ``points``; the test waits until they are there, acts, then releases them (or
    kills them where they wait)."""

    def __init__(self, folder: Path, *points: str) -> None:
        from nanodet.utils.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.env = {PAUSE_AT_ENV: ",".join(points), PAUSE_DIR_ENV: str(folder)}

    def reached(self, point: str) -> list[int]:
        """The processes waiting (or that waited) at ``point``."""
        return sorted(int(p.name[len(point) + 1 : -len(".reached")]) for p in self.folder.glob(f"{point}.*.reached"))

    def wait(self, proc: subprocess.Popen, point: str, processes: int = 1, timeout: float = 300.0) -> list[int]:
        """Wait until ``processes`` processes are held at ``point``; the test fails when the task
        ends first or ``timeout`` passes (a guard against a hang: it is never reached when all is well)."""
        deadline = time.monotonic() + timeout
        while len(self.reached(point)) < processes:
            if proc.poll() is not None:
                raise AssertionError(f"the task ended (exit {proc.returncode}) before reaching {point}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{point} not reached in {timeout:.0f} s")
            time.sleep(0.01)
        return self.reached(point)

    def release(self, point: str) -> None:
        (self.folder / f"{point}.go").touch()


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


def trained_models(root: Path) -> Path:
    """A /out/models as training leaves it, in ``root``: weights + the saved model config (3
    classes, 128 px input)."""
    from nanodet.config import load_config, save_config
    from nanodet.weights.checkpoint import save_pth

    from .conftest import CONFIG_DIR, randomized_model

    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").with_classes(["circle", "square", "triangle"])
    cfg = cfg.merged({"data": {"val": {"input_size": [128, 128]}, "train": {"input_size": [128, 128]}}})
    save_pth(randomized_model(cfg, cls_bias=-3.0), root / "nanodet_model_best.pth", inference_only=True)
    save_config(cfg, root / "train_cfg.yml")
    return root


def candidates_of(in_dir: Path) -> list[str]:
    """The candidate paths of a workspace's index, as written."""
    return [row for row in (in_dir / "candidate-index.tsv").read_text().splitlines() if row]
