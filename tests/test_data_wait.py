"""data_wait: the share of each logging interval the trainer spends blocked on its next batch, and
the verdict at the end of a run (clock injected: no wall-clock bounds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanodet.engine.data_wait import DataWaitMeter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slow_loader(clock: Clock, waits: list[float]):
    """A loader whose batch ``i`` takes ``waits[i]`` seconds to arrive."""
    for i, wait in enumerate(waits):
        clock.now += wait
        yield i


def run_epoch(meter: DataWaitMeter, clock: Clock, waits: list[float], step_s: float, interval: int) -> list[float]:
    shares = []
    for step, _ in enumerate(meter.timed(slow_loader(clock, waits)), start=1):
        clock.now += step_s  # the training step
        meter.step_done()
        if step % interval == 0:
            shares.append(meter.close_interval())
    meter.end_epoch()
    return shares


def test_share_of_each_interval_and_of_the_run():
    clock = Clock()
    meter = DataWaitMeter(clock=clock)
    # 6 steps of 1 s; the first 3 batches take 1 s to arrive, the last 3 none: intervals of 3 steps
    shares = run_epoch(meter, clock, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0], step_s=1.0, interval=3)
    assert shares == [pytest.approx(0.5), pytest.approx(0.0)]
    assert meter.epoch_end_share is None  # the epoch ended on an interval's end: no partial interval
    assert meter.run_share == pytest.approx(3.0 / 9.0)
    clock.now += 50.0  # evaluation between epochs: not training time
    shares = run_epoch(meter, clock, [3.0, 3.0], step_s=1.0, interval=3)
    assert shares == [] and meter.epoch_end_share == pytest.approx(0.75)  # the partial interval, closed
    assert meter.run_share == pytest.approx(9.0 / 17.0)


def test_verdicts():
    clock = Clock()
    meter = DataWaitMeter(clock=clock)
    assert meter.verdict(4, 16, "none") is None  # nothing measured yet
    run_epoch(meter, clock, [0.01] * 10, step_s=1.0, interval=5)
    line = meter.verdict(4, 16, "none")
    assert line.startswith("compute-bound: the trainer waited for data 1.0% of its training time")

    meter = DataWaitMeter(clock=clock)
    run_epoch(meter, clock, [1.0] * 10, step_s=1.0, interval=5)
    line = meter.verdict(4, 16, "none")
    assert line.startswith("input-bound: the trainer waited for data 50.0%")
    assert "more workers_per_gpu (now 4, 16 CPUs allowed)" in line and "cache_images: ram" in line
    line = meter.verdict(16, 16, "ram")
    assert "workers_per_gpu" not in line and "cache_images" not in line and "more CPUs" in line


def test_trainer_reports_data_wait_at_every_interval_and_epoch_end(tmp_path: Path):
    """A real training run: the step callbacks get ``data_wait`` every ``log.interval`` steps, the
    TensorBoard logger writes it (and each epoch's partial interval), the run's verdict is logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nanodet.engine.run import train
    from nanodet.engine.trainer import Callback

    from .conftest import synthetic_training_config

    cfg = synthetic_training_config(
        tmp_path / "data", train_images=12, val_images=2, input_size=(64, 64), epochs=1, batch_size=4
    )
    cfg = cfg.merged({"log": {"interval": 2}})

    class Record(Callback):
        def __init__(self) -> None:
            self.steps: list[tuple[int, float | None]] = []

        def on_step_end(self, trainer, losses) -> None:
            self.steps.append((trainer.state.step, losses.get("data_wait")))

    record = Record()
    train(cfg, work_dir=tmp_path / "work", progress=False, device="cpu", callbacks=[record])
    assert [s for s, v in record.steps] == [1, 2, 3]
    assert record.steps[0][1] is None and record.steps[2][1] is None and 0.0 <= record.steps[1][1] <= 1.0
    events = EventAccumulator(str(tmp_path / "work" / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/data_wait")
    assert [e.step for e in scalars] == [2, 3]  # the interval ending at step 2, and the epoch's last one (step 3)
    assert scalars[0].value == pytest.approx(record.steps[1][1]) and 0.0 <= scalars[1].value <= 1.0
