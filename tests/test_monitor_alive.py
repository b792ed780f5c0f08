"""monitor.txt never goes quiet: a heartbeat rewrites it in phases without progress of their
own, and no writer lowers the progress another one wrote."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from executor.monitor import Monitor, read_monitor

from .executor_helpers import assert_success, edit_yaml, run_start, sample_workspace


def test_heartbeat_refreshes_a_quiet_record_and_keeps_the_highest_progress(tmp_path: Path):
    path = tmp_path / "monitor.txt"
    task, worker = Monitor(path, "t1"), Monitor(path, "t1", min_interval=0.0)
    stamps = []
    with task.heartbeat(max_age=0.2):
        time.sleep(0.05)
        assert read_monitor(path)[:4][2:] == ["0.0000", "2"]  # written at once, before any progress
        worker.progress(0.4)  # another process (torchrun's rank 0) gets further
        for _ in range(12):
            time.sleep(0.1)
            stamps.append(float(read_monitor(path)[1]))
        task.progress(0.1, force=True)  # the task process's own, lower view
        assert read_monitor(path)[2] == "0.4000"
    assert max(b - a for a, b in zip(stamps, stamps[1:])) < 0.45  # refreshed although nobody reported
    assert len(set(stamps)) >= 3
    worker.progress(0.3)
    assert read_monitor(path)[2] == "0.4000"


def test_heartbeat_leaves_a_final_record_alone(tmp_path: Path):
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1")
    with monitor.heartbeat(max_age=0.05):
        monitor.error(300002, "bad dataset")
        before = path.read_text()
        time.sleep(0.3)
        assert path.read_text() == before


def test_concurrent_writers_never_move_progress_back(tmp_path: Path):
    """Two processes' worth of writers racing on one record: every record read is >= the last."""
    path = tmp_path / "monitor.txt"
    writers = [Monitor(path, "t1", min_interval=0.0) for _ in range(3)]
    stop = threading.Event()

    def climb(monitor: Monitor, offset: float) -> None:
        for i in range(200):
            monitor.progress(min(1.0, (i + offset) / 200))

    threads = [threading.Thread(target=climb, args=(m, k * 7)) for k, m in enumerate(writers)]
    seen: list[float] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(float(read_monitor(path)[2]))
            except (OSError, IndexError):
                pass

    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert seen and seen == sorted(seen)


@pytest.mark.xdist_group("executor-training")
def test_a_training_task_keeps_monitor_alive_in_every_phase(tmp_path: Path):
    """A training task whose evaluation, stage writing and export each take seconds without a
    step: with a 1 s heartbeat the record changes at least every ~1 s from the task's start to
    its end, and progress only climbs. (Without the heartbeat the evaluation of 160 images at
    the end of the epoch alone leaves the record unchanged for several seconds.)"""
    in_dir = sample_workspace(tmp_path, training=True, epochs=1, input_size=160, batch_size_per_gpu=8)
    rows = (in_dir / "train-index.tsv").read_text()
    (in_dir / "train-index.tsv").write_text(rows * 8)
    (in_dir / "val-index.tsv").write_text(rows * 40)
    edit_yaml(in_dir / "config.yaml", val_intervals=1)
    out = tmp_path / "out"
    changes: list[float] = []
    start = time.monotonic()
    stamps: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        last = None
        while not stop.wait(0.02):
            try:
                fields = read_monitor(out / "monitor.txt")
            except (OSError, IndexError):
                continue
            if fields[1] != last:
                last = fields[1]
                stamps.append(time.monotonic())
                changes.append(float(fields[2]))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        proc = run_start(in_dir, out, env={"NANODET_MONITOR_HEARTBEAT_S": "1"})
    finally:
        stop.set()
        thread.join()
    end = time.monotonic()
    assert_success(proc, out)
    assert changes == sorted(changes) and changes[-1] == 1.0
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert stamps[0] - start < 15  # python and torch imported, env.yaml read: the record is there
    assert end - stamps[-1] < 3
    assert max(gaps) < 3.0, f"monitor.txt unchanged for {max(gaps):.1f} s ({len(stamps)} changes)"


def test_a_process_forked_while_the_lock_is_held_does_not_keep_it(tmp_path: Path):
    """DataLoader workers fork while the heartbeat may be writing: the fork must not keep the
    record's lock (the parent would then wait for it forever)."""
    import os

    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1", min_interval=0.0)
    with monitor._locked():
        pid = os.fork()
        if pid == 0:  # the child lives on (like a worker) past the parent's release
            time.sleep(3)
            os._exit(0)
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (monitor.progress(0.5), done.set()), daemon=True).start()
        assert done.wait(2), "the forked child kept the lock"
    finally:
        os.waitpid(pid, 0)
