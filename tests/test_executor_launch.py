"""executor/launch.py: torchrun workers on the CPU, a worker's failure brought back with its
return code and reason, and which process is which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executor.errors import ExecutorError, ReturnCode
from executor.launch import ERROR_FILE_ENV, is_worker, process_rank, report_failure, run_workers

from .conftest import ROOT

WORKER = """
import os, sys, time
sys.path.insert(0, {root!r})
from executor.launch import is_worker, process_rank, report_failure
rank = process_rank()
{body}
"""


def _run(tmp_path: Path, body: str) -> None:
    """``body`` in 2 torchrun workers (``rank`` is set)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), body=body))
    run_workers(2, [str(script)], "the test")


def test_workers_know_their_rank_and_succeed(tmp_path):
    _run(tmp_path, f"open({str(tmp_path)!r} + f'/rank{{rank}}', 'w').write(str(is_worker()))")
    assert sorted(p.name for p in tmp_path.glob("rank*")) == ["rank0", "rank1"]
    assert all(p.read_text() == "True" for p in tmp_path.glob("rank*"))


def test_the_first_failure_reported_is_raised(tmp_path):
    """Rank 1 fails first; rank 0 reports its failure only once rank 1's is written (a file
    says so), and that later failure does not replace it."""
    body = f"""
reported, second = {str(tmp_path / "rank1-reported")!r}, {str(tmp_path / "rank0-reported")!r}
if rank == 1:
    report_failure(300002, "rank 1: the first failure")
    open(reported, "w").close()
    sys.exit(0)
deadline = time.monotonic() + 120  # a hang guard: rank 1 writes it at once
while not os.path.exists(reported) and time.monotonic() < deadline:
    time.sleep(0.01)
report_failure(300004, "rank 0: a consequence")
open(second, "w").close()
sys.exit(1)
"""
    with pytest.raises(ExecutorError) as info:
        _run(tmp_path, body)
    assert (tmp_path / "rank1-reported").exists() and (tmp_path / "rank0-reported").exists()  # both reported
    assert info.value.code == ReturnCode.DATASET and str(info.value) == "rank 1: the first failure"


def test_a_silent_failure_is_generic_with_the_exit_code(tmp_path):
    with pytest.raises(ExecutorError) as info:
        _run(tmp_path, "sys.exit(3 if rank == 1 else 0)")
    assert info.value.code == ReturnCode.MODEL
    assert str(info.value).startswith("the test: a worker process failed without reporting why (torchrun exit code ")


def test_distributed_training_failure_comes_back_from_train_worker(tmp_path):
    """The training launcher (``executor.train_worker``): the workers' failure, classified."""
    from executor.training import TrainingPlan, launch_distributed

    plan = TrainingPlan(
        model_config=str(tmp_path / "missing.yml"),
        models_dir=str(tmp_path / "models"),
        tensorboard_dir=str(tmp_path / "tb"),
        result_file=str(tmp_path / "result.yaml"),
        monitor_file=str(tmp_path / "monitor.txt"),
        task_id="t",
        model_stages=True,
        saved_file_patterns=[],
        iou_thr=0.5,
        conf_thr=0.35,
        seed=0,
        resume=False,
        device="cpu",
        world_size=2,
    )
    with pytest.raises(ExecutorError) as info:
        launch_distributed(plan, tmp_path)
    assert info.value.code == ReturnCode.CONFIG and "missing.yml" in str(info.value)
    assert not (tmp_path / "models").exists()


def test_two_process_training_on_the_cpu(tmp_path, monkeypatch, capfd):
    """The multi-GPU path (two ``executor.train_worker`` processes, DDP) on the CPU with gloo: one
    process alone (rank 0, the only one given the stage recorder) writes each stage, once, and
    result.yaml."""
    import tempfile

    from executor.paths import PathMapper
    from executor.protocol import TrainingConfig, parse_env, parse_task_config, read_yaml
    from executor.training import launch_distributed, prepare_training
    from executor.workspace import make_training_workspace

    from .executor_helpers import check_training_outputs, monitor_fields

    in_dir = make_training_workspace(
        tmp_path / "in",
        train_images=8,
        val_images=4,
        epochs=2,
        input_size=64,
        batch_size_per_gpu=2,
        workers_per_gpu=0,
        val_intervals=1,
    )
    out = tmp_path / "out"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes, one thread each
    monkeypatch.setenv("NANODET_DIST_TIMEOUT_MIN", "45")
    env = parse_env(read_yaml(in_dir / "env.yaml", "env.yaml"))
    hp = parse_task_config(TrainingConfig, read_yaml(in_dir / "config.yaml", "config.yaml"))
    with tempfile.TemporaryDirectory() as work:
        plan = prepare_training(env, hp, PathMapper(in_dir, out), Path(work))
        plan.world_size = 2
        launch_distributed(plan, Path(work))
    result = check_training_outputs(out)
    assert sorted(result["model_stages"]) == ["epoch_1", "epoch_2"]
    assert monitor_fields(out)[3] == "2" and float(monitor_fields(out)[2]) > 0
    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "process group: gloo, 2 processes, collectives time out after 45 min" in text
    for epoch in (1, 2):  # the stage recorder logs each stage it writes: one process wrote each
        assert text.count(f"epoch {epoch} stage epoch_{epoch}: mAP") == 1, text[-3000:]


def test_task_process_is_not_a_worker(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert not is_worker() and process_rank() == 0
    monkeypatch.setenv("RANK", "3")
    assert is_worker() and process_rank() == 3


def test_report_failure_outside_a_launch_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(ERROR_FILE_ENV, raising=False)
    report_failure(300001, "nowhere to go")
    monkeypatch.setenv(ERROR_FILE_ENV, str(tmp_path / "gone" / "error.json"))
    report_failure(300001, "the launcher's folder is gone")  # warns, never raises
    monkeypatch.setenv(ERROR_FILE_ENV, str(tmp_path / "error.json"))
    report_failure(300003, "first")
    report_failure(300001, "second")
    assert json.loads((tmp_path / "error.json").read_text()) == {"code": 300003, "message": "first"}
    assert [p.name for p in tmp_path.iterdir()] == ["error.json"]  # no temp file left
