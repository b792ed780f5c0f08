"""Crash safety: a training task killed at any instant leaves only valid files under /out and
resumes to a complete result; SIGTERM ends it promptly in the error state.

Every output is written atomically (temp file beside it, fsync, rename), so at any instant a
reader sees a whole old file or a whole new one; result.yaml is rewritten only after the files
it names exist, and a dropped stage's folder is removed only after result.yaml stops naming it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from executor.result import ResultWriter, Stage
from executor.workspace import make_training_workspace
from nanodet.config import load_config

from .conftest import ROOT
from .executor_helpers import Pauses, Watcher, assert_success, check_training_outputs, edit_yaml, monitor_fields

EPOCHS = 3


def start(in_dir: Path, out_dir: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """start.py in its own process group (so a kill reaches any helper process it started)."""
    with log.open("w") as f:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "start.py"), "--in", str(in_dir), "--out", str(out_dir)],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )


def assert_valid_at_this_instant(out_dir: Path) -> list[str]:
    """Every file under /out is usable as it is: the monitor record parses (running state),
    result.yaml parses and every file it names exists and loads, checkpoints and weights load
    with weights_only=True, model configs load. Returns the stage names result.yaml lists."""
    fields = monitor_fields(out_dir)
    assert fields[3] == "2" and 0.0 <= float(fields[2]) <= 1.0, fields
    models = out_dir / "models"
    stages: list[str] = []
    result = models / "result.yaml"
    if result.exists():
        data = yaml.safe_load(result.read_text())
        assert data["best_stage_name"] in data["model_stages"], data
        for name, stage in data["model_stages"].items():
            for f in stage["files"]:
                assert (models / name / f).is_file(), (name, f)
        stages = sorted(data["model_stages"])
    for path in list(models.rglob("*.ckpt")) + list(models.rglob("*.pth")) if models.is_dir() else []:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert "state_dict" in ckpt, path
    for path in models.rglob("train_cfg.yml") if models.is_dir() else []:
        load_config(path)
    return stages


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def stale_temp_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """8 training images at 64 px, 2 per batch (4 steps/epoch), a stage every epoch (3 epochs)."""
    return make_training_workspace(
        tmp_path_factory.mktemp("crash") / "in",
        train_images=8,
        val_images=2,
        epochs=EPOCHS,
        input_size=64,
        batch_size_per_gpu=2,
        workers_per_gpu=0,
        val_intervals=1,
    )


# Where each repetition is killed. The delays are seeded: a failure reproduces.
KILL_POINTS = [
    ("during-epoch-1", 11),  # a random instant of the first epoch: no checkpoint exists yet
    ("after-first-checkpoint", 22),  # a random instant of the following epochs
    # held at a pause point while writing epoch 2's model_last.ckpt (epoch 1's is there): its data
    # is in the temp file, not yet renamed over the old one; the kill lands there
    ("while-writing-a-checkpoint", 33),
]
# The random instant after the first checkpoint may land in any writer, so that run writes every
# file a stage can have. The other two are killed where no stage file is being written: their
# stages keep only weights, config and metrics (no ONNX export, no pictures), which saves each run
# the exports that case already covers.
STAGE_FILES = {"during-epoch-1": "metrics", "after-first-checkpoint": "", "while-writing-a-checkpoint": "metrics"}
HELD_WRITE = "write:model_last.ckpt@2"


@pytest.mark.parametrize("where, seed", KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_sigkill_then_resume(workspace, tmp_path, where, seed):
    rng = random.Random(seed)
    in_dir, out = tmp_path / "in", tmp_path / "out"
    import shutil

    shutil.copytree(workspace, in_dir)
    edit_yaml(in_dir / "config.yaml", ymir_saved_file_patterns=STAGE_FILES[where])
    models = out / "models"
    started = time.time()
    pauses = Pauses(tmp_path / "pauses", HELD_WRITE)
    proc = start(in_dir, out, tmp_path / "killed.log", pauses.env)
    watch = Watcher(out, started)
    try:
        if where == "during-epoch-1":
            assert watch.wait_until(proc, lambda: bool(watch.seen) and watch.seen[-1] > 0)  # steps running
            watch.sleep(proc, rng.uniform(0.0, 0.4))
        elif where == "after-first-checkpoint":
            assert watch.wait_until(proc, lambda: (models / "model_last.ckpt").exists())
            watch.sleep(proc, rng.uniform(0.0, 3.0))
        else:
            assert watch.wait_until(proc, lambda: bool(pauses.reached(HELD_WRITE)))  # overwriting epoch 1's
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed_log = (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL, killed_log[-3000:]
    had_checkpoint = (models / "model_last.ckpt").exists()
    if where == "during-epoch-1":
        assert not had_checkpoint, "killed too late for this repetition"
    else:
        assert had_checkpoint
    if where == "while-writing-a-checkpoint":  # the kill landed mid-write: epoch 2's data only in a temp file
        [temp] = models.glob(".model_last.ckpt.*.tmp")
        assert temp.stat().st_size > 0
        assert torch.load(models / "model_last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
        assert torch.load(temp, map_location="cpu", weights_only=True)["epoch"] == 2
    stages_before = assert_valid_at_this_instant(out)
    assert watch.seen == sorted(watch.seen), watch.seen  # the killed run's progress never went back

    # the platform (or the user) runs the task again with resume
    edit_yaml(in_dir / "config.yaml", resume="true")
    restarted = time.time()
    proc = start(in_dir, out, tmp_path / "resumed.log")
    watch = Watcher(out, restarted)
    try:
        watch.wait_until(proc, lambda: False, timeout=300)
    finally:
        proc.wait(timeout=60)
    log = (tmp_path / "resumed.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert_success(subprocess.CompletedProcess([], 0, log, ""), out)
    assert watch.seen == sorted(watch.seen) and watch.seen[-1] == 1.0, watch.seen
    if had_checkpoint:
        assert "resumed from" in log
    else:
        assert "resume: no" in log and "training from the start" in log
    result = check_training_outputs(out)
    assert sorted(result["model_stages"]) == [f"epoch_{e}" for e in range(1, EPOCHS + 1)]
    assert set(stages_before) <= set(result["model_stages"])  # stages written before the kill are kept
    for name in stages_before:
        assert (models / name / "nanodet_model.pth").is_file()
    assert bool(list(models.rglob("*.onnx"))) == (STAGE_FILES[where] == "")  # the resumed run kept the patterns
    assert not stale_temp_files(out), stale_temp_files(out)  # the killed run's temp files are cleaned up
    ckpt = torch.load(models / "model_last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == EPOCHS


@pytest.mark.parametrize("where", ["during-training-steps", "while-writing-a-checkpoint"])
def test_sigterm_stops_promptly_in_the_error_state(workspace, tmp_path, where):
    """The platform stops a task with SIGTERM (docker stop): exit 143 at once, monitor.txt in the
    error state with no return code of ours (the stop is the platform's, not a config or model
    error), the reason on its second line, and every output still valid. "At once" without a
    clock: during the steps, the task is held after its second step and never released, so it
    can only end by leaving its work where the signal found it (a stop that waited for the epoch,
    or for the run, would hang here)."""
    import shutil

    in_dir, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(workspace, in_dir)
    pauses = Pauses(tmp_path / "pauses", "train:step@2")
    proc = start(in_dir, out, tmp_path / "run.log", env=pauses.env)
    watch = Watcher(out, time.time())
    try:
        if where == "during-training-steps":
            pauses.wait(proc, "train:step@2")
        else:  # while torch writes the data (not yet at fsync): the temp file is growing
            pauses.release("train:step@2")
            assert watch.wait_until(
                proc, lambda: any(0 < _size(p) < 60e6 for p in (out / "models").glob(".*.ckpt.*.tmp"))
            )
        watch.poll()
        os.kill(proc.pid, signal.SIGTERM)  # the process only, as docker stop signals PID 1
        proc.wait(timeout=300)  # a guard against a hang, never reached when the stop works
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 143, log[-3000:]
    fields = (out / "monitor.txt").read_text().splitlines()[0].split("\t")  # no return code: 4 fields
    assert len(fields) == 4 and fields[3] == "4", fields
    assert (out / "monitor.txt").read_text().splitlines()[1] == "task stopped by SIGTERM"
    assert float(fields[2]) >= max(watch.seen, default=0.0)  # the error record keeps the progress reached
    assert log.strip().splitlines()[-1] == "stopped: task stopped by SIGTERM (no error code: the platform asked for it)"
    models = out / "models"
    if (models / "result.yaml").exists():
        data = yaml.safe_load((models / "result.yaml").read_text())
        for name, stage in data["model_stages"].items():
            assert all((models / name / f).is_file() for f in stage["files"])
    for path in models.rglob("*.ckpt"):
        torch.load(path, map_location="cpu", weights_only=True)
    assert not stale_temp_files(out)  # an interrupted atomic write removes its temp file


def test_pruned_stage_folder_outlives_the_result_that_names_it(tmp_path, monkeypatch):
    """With more stages than the 11 kept, the dropped stage's folder is deleted only after the
    new result.yaml no longer names it: a kill between the two never leaves it dangling."""
    import executor.result as result_module

    models = tmp_path / "models"
    writer = ResultWriter(models, models / "result.yaml", True, [], 0.5, 0.35)
    for epoch in range(1, 12):
        (models / f"epoch_{epoch}").mkdir(parents=True)
        (models / f"epoch_{epoch}" / "w.pth").write_bytes(b"x")
        writer.add_stage(
            Stage(f"epoch_{epoch}", epoch, ["w.pth"], 0.5 if epoch == 1 else 0.1, 0.1, 0, 0, 0), epoch == 1
        )
    (models / "epoch_12").mkdir()
    (models / "epoch_12" / "w.pth").write_bytes(b"x")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing result.yaml")

    monkeypatch.setattr(result_module, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.add_stage(Stage("epoch_12", 12, ["w.pth"], 0.1, 0.1, 0, 0, 0), False)
    data = yaml.safe_load((models / "result.yaml").read_text())
    assert "epoch_2" in data["model_stages"] and (models / "epoch_2" / "w.pth").is_file()
    monkeypatch.undo()
    resumed = ResultWriter(models, models / "result.yaml", True, [], 0.5, 0.35)  # the next run
    resumed.load_existing()
    resumed.add_stage(Stage("epoch_12", 12, ["w.pth"], 0.1, 0.1, 0, 0, 0), False)
    data = yaml.safe_load((models / "result.yaml").read_text())
    assert "epoch_2" not in data["model_stages"] and not (models / "epoch_2").exists()
    assert len(data["model_stages"]) == 11 and data["best_stage_name"] == "epoch_1"


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def test_sigterm_reaches_torchrun_workers(tmp_path):
    """Mining + infer sharded over 2 torchrun processes (cpu_processes: 2), both held at a pause
    point after their first batch (rank 0 has written its progress): SIGTERM to the task process
    stops the workers too, so none writes a result or a 'running' record after the error record."""
    from executor.workspace import make_predict_workspace

    from .bad_inputs.corpus import tiny_models

    in_dir = make_predict_workspace(
        tmp_path / "in",
        tiny_models(tmp_path / "models"),
        candidates=24,  # 6 batches of 2 per rank: the first one done, five to go
        size=((64, 64), (96, 96)),
        batch_size_per_gpu=2,
        workers_per_gpu=0,
        cpu_processes=2,
    )
    out = tmp_path / "out"
    pauses = Pauses(tmp_path / "pauses", "predict:batch")
    proc = start(in_dir, out, tmp_path / "run.log", pauses.env)
    watch = Watcher(out, time.time())
    try:
        held = pauses.wait(proc, "predict:batch", processes=2)
        assert proc.pid not in held  # the two workers, not the task process
        watch.poll()
        assert watch.seen and 0 < watch.seen[-1] < 1.0, watch.seen  # the first batch in, not the last
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        for pid in held:  # torchrun has stopped its workers before the task process ended
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"worker {pid} outlived the task process"
        orphans = _processes_mentioning(str(out))
    finally:
        for pid in _processes_mentioning(str(out)):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 143, log[-3000:]
    assert not orphans, "torchrun workers outlived the task process"
    fields = (out / "monitor.txt").read_text().splitlines()[0].split("\t")  # no return code: 4 fields
    assert len(fields) == 4 and fields[3] == "4", fields
    assert not (out / "result.tsv").exists() and not (out / "infer-result.json").exists()
    assert log.strip().splitlines()[-1] == "stopped: task stopped by SIGTERM (no error code: the platform asked for it)"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone while looking


INTERRUPTED_SAVES = r"""
import os, signal, sys, tempfile
import torch
from nanodet.utils.io import atomic_torch_save

class Stop(BaseException):
    pass

def handler(*args):
    raise Stop()

obj = {f"t{i}": torch.randn(64, 1024) for i in range(200)}  # 50 MB in 200 records
folder = tempfile.mkdtemp()
hits = 0
for k in range(20):
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.001 + 0.003 * k)
    try:
        atomic_torch_save(obj, os.path.join(folder, "model_last.ckpt"))
        signal.setitimer(signal.ITIMER_REAL, 0)
    except Stop:
        hits += 1
print(hits, sorted(os.listdir(folder)))
sys.exit(3)
"""


def test_checkpoint_save_interrupted_by_a_signal(tmp_path):
    """A signal handler raising in the middle of a checkpoint write (what SIGTERM does): the
    handler's exception comes out unchanged, no temp file is left, and the process exits
    normally later (torch's writer, left broken, used to replace the exception or abort the
    process when it was destroyed)."""
    script = tmp_path / "saves.py"
    script.write_text(INTERRUPTED_SAVES)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    hits, files = proc.stdout.split(" ", 1)
    assert int(hits) > 0 and files.strip() in ("[]", "['model_last.ckpt']"), proc.stdout


def test_a_signal_just_after_the_temp_file_is_created_leaves_no_temp_file(tmp_path, monkeypatch):
    """The narrowest window: the handler raises as the temp file's creation returns, before its
    descriptor is bound (with mkstemp outside the cleanup, the file stayed: 2 of 3,000 timed
    interruptions left one on a loaded machine)."""
    from nanodet.utils import io

    class Stop(BaseException):
        pass

    real_open = os.open

    def open_then_signal(name, flags, *args, **kwargs):
        real_open(name, flags, *args, **kwargs)
        raise Stop()

    monkeypatch.setattr(os, "open", open_then_signal)
    with pytest.raises(Stop):
        io.atomic_torch_save({"w": torch.ones(3)}, tmp_path / "model_last.ckpt")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    io.atomic_torch_save({"w": torch.ones(3)}, tmp_path / "model_last.ckpt")  # and the next save works
    assert [p.name for p in tmp_path.iterdir()] == ["model_last.ckpt"]


# Writes that are not atomic, and why that is fine: none of them is a task output.
NON_ATOMIC_WRITES_ALLOWED = {
    "nanodet/utils/io.py": "the atomic writers themselves",
    "nanodet/data/synthetic.py": "generates test/demo datasets",
    "nanodet/inference/detect.py": "the detect CLI streams JSON lines and videos to the user's files",
    "executor/workspace.py": "generates /in workspaces for the demo and the tests",
    "executor/training.py": "plan.json in the task's temp folder, read by torchrun workers",
}


def test_every_output_is_written_atomically():
    """No module writes a file in place except those listed (none of which writes under /out):
    monitor.txt, result.yaml, infer-result.json, result.tsv, checkpoints, weights, model
    configs and the COCO jsons all go through nanodet.utils.io."""
    import re

    in_place = re.compile(r"\.write_text\(|\.write_bytes\(|shutil\.copy|torch\.save\(|open\([^)]*['\"][wa]b?['\"]")
    offenders = []
    for path in sorted([*(ROOT / "nanodet").rglob("*.py"), *(ROOT / "executor").rglob("*.py")]):
        rel = str(path.relative_to(ROOT))
        if rel in NON_ATOMIC_WRITES_ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if in_place.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, offenders
