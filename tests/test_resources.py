"""The machine's limits as a task meets them: the container's CPU quota, shared memory for
data-loading workers, and how long distributed ranks wait for each other."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from executor.errors import ReturnCode
from executor.failures import classify
from nanodet.engine.distributed import process_group_timeout
from nanodet.utils.cpus import allowed_cpus, cgroup_quota


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "250000 100000\n"}, 2.5),  # v2, docker --cpus 2.5
        ({"cpu.max": "max 100000\n"}, None),  # v2, unlimited
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),  # v1
        ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files: not limited as far as we can tell
    ],
)
def test_cgroup_quota(tmp_path, files, quota):
    assert cgroup_quota(cgroup(tmp_path, files)) == quota


def test_allowed_cpus_is_the_quota_rounded_up_when_lower_than_the_affinity(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert allowed_cpus(cgroup(tmp_path, {"cpu.max": "250000 100000"})) == (3, "cgroup CPU quota 2.5")
    assert allowed_cpus(cgroup(tmp_path, {"cpu.max": "max 100000"}))[0] == 64
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert allowed_cpus(cgroup(tmp_path, {"cpu.max": "800000 100000"}))[0] == 2


def test_a_task_process_takes_its_share_of_the_quota(machine, monkeypatch):
    import cv2

    import executor.devices as devices

    machine(None)  # torch and OpenCV at a 64-CPU host's count...
    monkeypatch.setattr(devices, "allowed_cpus", lambda: (4, "cgroup CPU quota 4"))  # ...in a --cpus 4 container
    assert devices.share_cpus(processes=2, workers_per_process=4) == 2
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    assert devices.share_cpus(processes=1, workers_per_process=0) == 0
    assert torch.get_num_threads() == 4 and cv2.getNumThreads() == 2  # OpenCV's lowered, never raised


class DiesOfSigbus(Dataset):
    """A worker killed by SIGBUS, as when it touches a /dev/shm page the container cannot back."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGBUS)
        return torch.zeros(1)


def test_a_worker_out_of_shared_memory_is_a_config_error_naming_the_remedies(capfd):
    loader = DataLoader(DiesOfSigbus(), batch_size=2, num_workers=1)
    with pytest.raises(RuntimeError) as err:
        next(iter(loader))
    code, message = classify(err.value)  # torch says "killed by signal: Bus error" or "exited unexpectedly"
    assert code == ReturnCode.CONFIG
    assert "shared memory (/dev/shm: " in message and "MiB free now)" in message
    assert "larger shm_size, or lower workers_per_gpu" in message
    code, message = classify(RuntimeError("DataLoader worker (pid 7) is killed by signal: Bus error. It is possible"))
    assert code == ReturnCode.CONFIG and message.startswith("data-loading workers ran out of shared memory")
    other_code, _ = classify(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert other_code == ReturnCode.MODEL


def test_process_group_timeout(monkeypatch):
    monkeypatch.delenv("NANODET_DIST_TIMEOUT_MIN", raising=False)
    assert process_group_timeout() == timedelta(minutes=120)
    monkeypatch.setenv("NANODET_DIST_TIMEOUT_MIN", "45")
    assert process_group_timeout() == timedelta(minutes=45)
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("NANODET_DIST_TIMEOUT_MIN", bad)
        with pytest.raises(ValueError, match="NANODET_DIST_TIMEOUT_MIN"):
            process_group_timeout()


def test_an_explicit_omp_num_threads_wins_over_the_share(monkeypatch):
    import executor.devices as devices

    monkeypatch.setattr(devices, "allowed_cpus", lambda: (8, "cgroup CPU quota 8"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert devices.share_cpus(processes=2, workers_per_process=2) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- threads: PyTorch and OpenCV within the CPUs allowed ----------------------------------------
HOST_DEFAULT = 8  # what torch's and OpenCV's defaults would count on a host larger than the quota


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A host of 64 schedulable CPUs whose cgroup allows ``quota`` CPUs (``None``: no quota),
    torch and OpenCV at their host-sized defaults; no thread count chosen by the environment.
    The process's real thread counts come back afterwards."""
    import cv2

    import nanodet.utils.cpus as cpus

    before = torch.get_num_threads(), cv2.getNumThreads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)

    def make(quota: str | None, affinity: int = 64) -> Path:
        root = cgroup(tmp_path / "cgroup", {"cpu.max": f"{quota or 'max'} 100000\n"})
        monkeypatch.setattr(cpus, "CGROUP_ROOT", root)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
        torch.set_num_threads(HOST_DEFAULT)
        cv2.setNumThreads(HOST_DEFAULT)
        return root

    yield make
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


def test_limit_threads_lowers_torch_and_opencv_to_the_share_and_never_raises(machine, monkeypatch):
    import cv2

    from nanodet.utils.cpus import limit_threads, loader_workers

    machine("250000")  # --cpus 2.5 on the 64-CPU host: 3 CPUs
    limits = limit_threads()
    assert (limits.share, limits.torch, limits.opencv) == (3, 3, 3) == (3, torch.get_num_threads(), cv2.getNumThreads())
    assert limits.lowered == ("torch 8 -> 3", "OpenCV 8 -> 3") and limits.limit == "cgroup CPU quota 2.5"
    assert limit_threads(processes=2).share == 1 and (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
    assert limit_threads().lowered == () and (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)  # not raised
    assert [loader_workers(n) for n in (0, 2, 8)] == [0, 2, 3] and loader_workers(8, processes=2) == 1
    machine(None, affinity=2)  # no quota, 2 CPUs to run on
    assert limit_threads().share == 2 and (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    machine("100000")
    monkeypatch.setenv("OMP_NUM_THREADS", str(HOST_DEFAULT))  # counts the user chose stay
    monkeypatch.setenv("OPENCV_FOR_THREADS_NUM", str(HOST_DEFAULT))
    assert limit_threads().lowered == () and (torch.get_num_threads(), cv2.getNumThreads()) == (8, 8)


# runs `python -m nanodet ...` on an injected machine and tells the thread counts the work ran with
THREADS_PROBE = """
import atexit, json, os, sys
from pathlib import Path

import cv2, torch

import nanodet.engine.run as run
import nanodet.utils.cpus as cpus

cgroup, affinity, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
cpus.CGROUP_ROOT = Path(cgroup)
if affinity == "host":
    os.sched_getaffinity = lambda pid: set(range(64))  # a 64-CPU host...
else:
    os.sched_setaffinity(0, {int(affinity)})  # really pinned to one CPU
torch.set_num_threads(8)  # ...whose libraries' defaults count more CPUs than the quota allows
cv2.setNumThreads(8)
seen = {}


def record(where, workers):
    seen[where] = {"torch": torch.get_num_threads(), "opencv": cv2.getNumThreads(), "workers": workers}


train, predict = run.Trainer.train, run.predict_loader


def recording_train(self):
    record("train", [self.train_loader.num_workers, self.val_loader.num_workers])
    return train(self)


def recording_predict(model, loader, *args, **kwargs):
    record("eval", [loader.num_workers])
    return predict(model, loader, *args, **kwargs)


run.Trainer.train, run.predict_loader = recording_train, recording_predict
atexit.register(lambda: print("THREADS " + json.dumps(seen), file=sys.stderr))
from nanodet.cli import main

sys.exit(main(argv))
"""


def run_on_machine(tmp_path: Path, quota: str | None, affinity: str, *argv: str) -> dict:
    import json
    import subprocess
    import sys

    root = cgroup(tmp_path / f"cgroup-{quota}", {"cpu.max": f"{quota or 'max'} 100000\n"})
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    proc = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE, str(root), affinity, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("THREADS ")]
    return json.loads(line[len("THREADS ") :])


@pytest.fixture(scope="module")
def tiny_training(tmp_path_factory) -> tuple[Path, Path]:
    """A config of the synthetic shapes (3 data-loading workers asked for) and weights for it."""
    from nanodet.config import save_config
    from nanodet.weights.checkpoint import save_pth

    from .conftest import randomized_model, synthetic_training_config

    root = tmp_path_factory.mktemp("tiny")
    cfg = synthetic_training_config(
        root, train_images=8, val_images=4, input_size=(64, 64), epochs=1, batch_size=4, device={"workers_per_gpu": 3}
    )
    save_config(cfg, root / "tiny.yml")
    save_pth(randomized_model(cfg), root / "tiny.pth")
    return root / "tiny.yml", root / "tiny.pth"


def test_nanodet_train_and_eval_run_within_the_quota_and_the_affinity(tiny_training, tmp_path):
    """`python -m nanodet train|eval` on a 64-CPU host with `--cpus 1` (and, once, pinned to one
    CPU): PyTorch, OpenCV and the data-loading workers take 1, not the host's 8. (One CPU, as
    the machine's others are the suite's: two threads each would wait on each other.)"""
    config, weights = tiny_training
    work = ["--work-dir", str(tmp_path / "work"), "--device", "cpu", "--no-progress"]
    assert run_on_machine(tmp_path, "100000", "host", "train", str(config), *work) == {
        "train": {"torch": 1, "opencv": 1, "workers": [1, 1]}
    }
    assert run_on_machine(tmp_path, "100000", "host", "eval", str(config), "--weights", str(weights)) == {
        "eval": {"torch": 1, "opencv": 1, "workers": [1]}
    }
    assert run_on_machine(tmp_path, None, "0", "eval", str(config), "--weights", str(weights), "--device", "cpu") == {
        "eval": {"torch": 1, "opencv": 1, "workers": [1]}
    }


def small_config():
    """nanodet-plus-m at a 64 px input: exported in a moment."""
    from nanodet.config import load_config

    from .conftest import CONFIG_DIR

    return load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").merged({"data": {"val": {"input_size": [64, 64]}}})


def test_a_predictor_used_as_a_library_keeps_within_the_quota(machine):
    """A program on a 64-CPU host in a --cpus 2 container builds a Predictor: OpenCV (its
    pre-processing) and, on the torch backend, PyTorch take 2 threads; ONNX Runtime 2 in all."""
    import cv2

    from nanodet.inference.predictor import Predictor

    config = small_config()
    machine("200000")
    Predictor(config, None, backend="torch")
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    machine("200000")
    onnx = Predictor(config, None, backend="onnxruntime")
    assert onnx.streams == 2 and onnx.runtime.session.get_session_options().intra_op_num_threads == 1
    assert cv2.getNumThreads() == 2
    assert torch.get_num_threads() == HOST_DEFAULT  # PyTorch computes nothing here: the program's count stays


def test_a_predictor_keeps_the_thread_counts_the_user_chose(machine, monkeypatch):
    import cv2

    from nanodet.inference.predictor import Predictor

    config = small_config()
    machine("200000")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    Predictor(config, None, backend="torch")
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)  # below the quota: not raised
    onnx = Predictor(config, None, backend="onnxruntime", threads=6, streams=2)
    assert onnx.runtime.session.get_session_options().intra_op_num_threads == 3  # asked for: as asked
    machine("200000")
    monkeypatch.setenv("OMP_NUM_THREADS", str(HOST_DEFAULT))
    monkeypatch.setenv("OPENCV_FOR_THREADS_NUM", str(HOST_DEFAULT))
    Predictor(config, None, backend="torch")
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (HOST_DEFAULT, HOST_DEFAULT)
    onnx = Predictor(config, None, backend="onnxruntime")
    assert onnx.streams == 4 and onnx.runtime.session.get_session_options().intra_op_num_threads == 2
