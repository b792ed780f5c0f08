"""How long the trainer waits for its next batch (``data_wait``), and what that says about a run.

A step's batch comes from the DataLoader; when the workers cannot keep up, ``next(loader)``
blocks. :class:`DataWaitMeter` adds up that blocked time and the wall time of training (not of
evaluation), per logging interval and over the run: the interval's share is logged and written
to TensorBoard (``train/data_wait``), and the run's share decides the verdict at the end, one
line: input-bound (the GPU or CPU waited for data: more workers or ``cache_images`` would
help) or compute-bound (the input pipeline kept up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

INPUT_BOUND_SHARE = 0.1
"""A run that waited for data this share of its training time or more is called input-bound."""


@dataclass
class DataWaitMeter:
    """Time blocked in ``next(loader)`` against wall time, per interval and in total.

    ``clock`` is injectable (tests); the default is ``time.perf_counter``."""

    clock: Callable[[], float] = time.perf_counter
    waited: float = 0.0  # this interval
    steps: int = 0  # this interval
    started: float | None = None  # this interval's start, None between epochs
    total_waited: float = 0.0
    total_time: float = 0.0
    shares: list[float] = field(default_factory=list)
    epoch_end_share: float | None = None  # the last epoch's closing (partial) interval, if it had steps

    def timed(self, loader: Iterable[T]) -> Iterator[T]:
        """The loader's batches, the time waiting for each added up; the interval starts here."""
        self.started = self.clock()
        batches = iter(loader)
        while True:
            begin = self.clock()
            try:
                batch = next(batches)
            except StopIteration:
                self.waited += self.clock() - begin
                return
            self.waited += self.clock() - begin
            yield batch

    def step_done(self) -> None:
        self.steps += 1

    def close_interval(self) -> float | None:
        """The share of the interval since the last call (or the epoch's start) spent waiting, and
        a new interval from now; None when no interval is open or it had no step (its time still
        counts in the run's total)."""
        if self.started is None:
            return None
        now = self.clock()
        elapsed = now - self.started
        self.total_waited += self.waited
        self.total_time += elapsed
        share = None
        if self.steps:
            share = min(1.0, self.waited / elapsed) if elapsed > 0 else 0.0
            self.shares.append(share)
        self.waited, self.steps, self.started = 0.0, 0, now
        return share

    def end_epoch(self) -> float | None:
        """Close the epoch's last (partial) interval (its share is kept in ``epoch_end_share``);
        the next interval opens with the next epoch."""
        self.epoch_end_share = self.close_interval()
        self.started = None
        return self.epoch_end_share

    @property
    def run_share(self) -> float | None:
        """The share of all training time so far spent waiting for data."""
        return self.total_waited / self.total_time if self.total_time > 0 else None

    def verdict(self, workers: int, cpus: int, cache_images: str) -> str | None:
        """One line: input- or compute-bound, with the share and what to change."""
        share = self.run_share
        if share is None:
            return None
        waited = f"the trainer waited for data {100 * share:.1f}% of its training time"
        if share < INPUT_BOUND_SHARE:
            return (
                f"compute-bound: {waited}; the input pipeline kept up (more workers or cache_images would not "
                "speed this run up)"
            )
        advice = []
        if workers < cpus:
            advice.append(f"more workers_per_gpu (now {workers}, {cpus} CPUs allowed)")
        if cache_images == "none":
            advice.append("cache_images: ram (or disk), which decodes each image once instead of every epoch")
        if not advice:
            advice.append("more CPUs, a smaller input_size, or smaller images (decoding them is the cost)")
        return f"input-bound: {waited}; to feed it faster: {'; or '.join(advice)}"
