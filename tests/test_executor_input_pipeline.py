"""A training task with ``cache_images`` and DataLoader workers, through start.py: the cache is made
and filled, the model config saved with the stage carries the key, TensorBoard has ``train/data_wait``
for the run, and the log ends the run with the input-bound / compute-bound line."""

from __future__ import annotations

import os
import time

import yaml

from executor.workspace import make_training_workspace

from .executor_helpers import Watcher, assert_success, check_training_outputs, run_start


def test_training_task_caches_images_and_reports_data_wait(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mode = "ram" if os.access("/dev/shm", os.W_OK) else "disk"
    in_dir = make_training_workspace(
        tmp_path / "in",
        train_images=16,
        val_images=4,
        epochs=2,
        input_size=64,
        val_intervals=2,
        batch_size_per_gpu=4,
        workers_per_gpu=2,
        cache_images=mode.upper(),  # any case, as the platform's form may send it
    )
    out_dir = tmp_path / "out"
    with Watcher(out_dir, time.time()).in_background():
        proc = run_start(in_dir, out_dir)
    assert_success(proc, out_dir)
    result = check_training_outputs(out_dir)
    stage = out_dir / "models" / result["best_stage_name"]
    assert yaml.safe_load((stage / "train_cfg.yml").read_text())["device"]["cache_images"] == mode
    assert f"cache_images: {mode}: 16 images" in proc.stdout
    verdict = [line for line in proc.stdout.splitlines() if "the trainer waited for data" in line]
    assert len(verdict) == 1 and ("input-bound: " in verdict[0] or "compute-bound: " in verdict[0])

    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    shares = events.Scalars("train/data_wait")
    assert len(shares) >= 2 and all(0.0 <= e.value <= 1.0 for e in shares)  # at least one per epoch
    assert max(e.step for e in shares) == max(e.step for e in events.Scalars("train/loss"))
