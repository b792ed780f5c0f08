"""monitor.txt never goes quiet: a heartbeat rewrites it in phases without progress of their
own, and no writer lowers the progress another one wrote.

No test here reads the machine's clock to decide anything: the heartbeat's own tests move a
virtual clock by hand, and the training task is held at pause points while monitor.txt is
watched (a control run without the heartbeat shows that only the heartbeat refreshes it there)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from executor.monitor import Clock, Monitor, read_monitor

from .executor_helpers import NO_WEIGHTS, Pauses, Watcher, assert_success, monitor_fields, start_task


class VirtualClock(Clock):
    """Time that moves only when the test moves it. The heartbeat thread's waits end when the
    clock has moved far enough; :meth:`advance` returns once the thread has acted on it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._changed = threading.Condition()
        self._waits = 0  # waits begun by the heartbeat thread
        self._deadline: float | None = None  # when the current wait ends (None: nobody waits)

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        with self._changed:
            self._waits += 1
            self._deadline = self.now + seconds
            self._changed.notify_all()
            while self.now < self._deadline and not stop.is_set():
                self._changed.wait(0.01)  # stop.set() does not notify: look at it now and then
            self._deadline = None
        return stop.is_set()

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``; when that ends the heartbeat thread's wait, return only
        once it has beaten and waits again."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._deadline is not None, timeout=60), "no heartbeat waits"
            begun = self._waits
            self.now += seconds
            self._changed.notify_all()
            if self.now >= self._deadline:
                assert self._changed.wait_for(lambda: self._waits > begun, timeout=60), "the heartbeat did not beat"


def stamp(path: Path) -> float:
    return float(read_monitor(path)[1])


def test_heartbeat_refreshes_a_quiet_record_and_keeps_the_highest_progress(tmp_path: Path):
    """max_age 10 s, so the thread looks every 2.5 s and rewrites a record 10 s old or older."""
    path = tmp_path / "monitor.txt"
    clock = VirtualClock(1000.0)
    task, worker = Monitor(path, "t1", clock=clock), Monitor(path, "t1", min_interval=0.0, clock=clock)
    with task.heartbeat(max_age=10):
        assert read_monitor(path)[1:5] == ["1000.000000", "0.0000", "2", "0"]  # at once, before any progress
        clock.advance(2.5)
        worker.progress(0.4)  # another process (torchrun's rank 0) gets further, at 1002.5
        for _ in range(3):  # 1005, 1007.5, 1010: younger than 10 s, left alone
            clock.advance(2.5)
            assert stamp(path) == 1002.5
        clock.advance(2.5)  # 1012.5: 10 s old, rewritten with the progress the worker reached
        assert read_monitor(path)[1:4] == ["1012.500000", "0.4000", "2"]
        task.progress(0.1, force=True)  # the task process's own, lower view
        assert read_monitor(path)[2] == "0.4000"
        stamps = []
        for _ in range(40):  # 100 s in which nobody reports
            clock.advance(2.5)
            stamps.append(stamp(path))
            assert clock.now - stamps[-1] < 10 + 2.5  # never older than max_age plus one look
        assert sorted(set(stamps)) == [1012.5 + 10 * k for k in range(11)]  # every 10 s, not more often
        assert read_monitor(path)[2] == "0.4000"
    worker.progress(0.3)
    assert read_monitor(path)[2] == "0.4000"


def test_without_the_heartbeat_the_same_record_goes_stale(tmp_path: Path):
    """The control of the test above: the same writes with no heartbeat leave the record as old
    as the clock makes it."""
    path = tmp_path / "monitor.txt"
    clock = VirtualClock(1000.0)
    task, worker = Monitor(path, "t1", clock=clock), Monitor(path, "t1", min_interval=0.0, clock=clock)
    task.progress(0.0, force=True)
    clock.now += 2.5
    worker.progress(0.4)
    clock.now += 100
    assert stamp(path) == 1002.5 and clock.now - stamp(path) > 10 + 2.5


def test_heartbeat_leaves_a_final_record_alone(tmp_path: Path):
    path = tmp_path / "monitor.txt"
    clock = VirtualClock(1000.0)
    monitor = Monitor(path, "t1", clock=clock)
    with monitor.heartbeat(max_age=1.0):
        clock.advance(0.25)
        monitor.error(300002, "bad dataset")
        before = path.read_text()
        for _ in range(12):  # three times max_age, a look every 0.25 s
            clock.advance(0.25)
            assert path.read_text() == before
    assert read_monitor(path)[1:5] == ["1000.250000", "0.0000", "4", "300002"]


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


# Where the training task is held, one per phase that reports no progress of its own: the dataset
# conversion (the task's first seconds), the stage's ONNX export, the stage's bookkeeping.
PHASES = ["write:train.json", "write:nanodet_model.onnx", "write:result.yaml"]


def training_task(tmp_path: Path, heartbeat_s: str, *points: str):
    from executor.workspace import make_training_workspace

    in_dir = make_training_workspace(
        tmp_path / "in",
        train_images=4,
        val_images=2,
        epochs=1,
        input_size=64,
        batch_size_per_gpu=2,
        workers_per_gpu=0,
        val_intervals=1,
    )
    pauses = Pauses(tmp_path / "pauses", *points)
    env = {**pauses.env, "NANODET_MONITOR_HEARTBEAT_S": heartbeat_s, "NANODET_WEIGHTS_DIR": str(NO_WEIGHTS)}
    return start_task(in_dir, tmp_path / "out", tmp_path / "run.log", env), pauses


def refreshed_while_held(out: Path, pauses: Pauses, proc, point: str, wait_s: float) -> bool:
    """Hold the task at ``point`` until monitor.txt gets a new timestamp (True) or ``wait_s``
    pass (False). While the task is held nothing reports progress: a new record is the
    heartbeat's (with the progress already written, or the higher one the task reported since
    and the write throttle held back)."""
    pauses.wait(proc, point)
    before = monitor_fields(out)  # the first beat wrote it before the task began
    assert before[3] == "2", before
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        now = monitor_fields(out)
        if now[1] != before[1]:
            assert float(now[2]) >= float(before[2]) and now[3:] == before[3:], (before, now)
            return True
        time.sleep(0.01)
    return False


@pytest.mark.xdist_group("executor-training")
def test_a_training_task_keeps_monitor_alive_in_every_phase(tmp_path: Path):
    """A training task held in each phase that reports no progress (the dataset conversion, the
    ONNX export, the stage's bookkeeping) with a 1 s heartbeat: each time, monitor.txt gets a new
    timestamp while the task is held, and progress only climbs to 1.0."""
    proc, pauses = training_task(tmp_path, "1", *PHASES)
    out = tmp_path / "out"
    try:
        with Watcher(out, 0.0).in_background() as watch:
            for point in PHASES:
                assert refreshed_while_held(out, pauses, proc, point, wait_s=120), point  # 120: a hang guard
                pauses.release(point)
            proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert_success(proc, out)
    assert watch.seen == sorted(watch.seen) and watch.seen[-1] == 1.0, watch.seen


@pytest.mark.xdist_group("executor-training")
def test_without_the_heartbeat_a_held_task_leaves_monitor_unchanged(tmp_path: Path):
    """The control of the test above: with the heartbeat out of the way (a beat only for a record
    older than 11 days), the task held in the dataset conversion leaves monitor.txt as it was
    for 3 s, three heartbeat periods of the test above. So there the new record was the
    heartbeat's."""
    proc, pauses = training_task(tmp_path, "1e6", PHASES[0])
    try:
        assert not refreshed_while_held(tmp_path / "out", pauses, proc, PHASES[0], wait_s=3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_process_forked_while_the_lock_is_held_does_not_keep_it(tmp_path: Path):
    """DataLoader workers fork while the heartbeat may be writing: the fork must not keep the
    record's lock (the parent would then wait for it forever). The child lives on (like a
    worker) until the parent has written, so a kept lock would block the write for good."""
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1", min_interval=0.0)
    read_end, write_end = os.pipe()
    with monitor._locked():
        pid = os.fork()
        if pid == 0:
            os.close(write_end)
            os.read(read_end, 1)  # until the parent closes its end
            os._exit(0)
    os.close(read_end)
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (monitor.progress(0.5), done.set()), daemon=True).start()
        assert done.wait(120), "the forked child kept the lock"  # 120: a hang guard; it takes ms
        assert read_monitor(path)[2] == "0.5000"
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)
