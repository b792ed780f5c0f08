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


def test_a_task_process_takes_its_share_of_the_quota(monkeypatch):
    import executor.devices as devices

    monkeypatch.setattr(devices, "allowed_cpus", lambda: (4, "cgroup CPU quota 4"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite sets it for its workers
    before = torch.get_num_threads()
    try:
        assert devices.share_cpus(processes=2, workers_per_process=4) == 2
        assert torch.get_num_threads() == 2
        assert devices.share_cpus(processes=1, workers_per_process=0) == 0
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


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
