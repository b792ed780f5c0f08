"""The training loader of ``build_loader``: persistent workers, prefetch sized to the batch, and the
same batches from worker processes as from the training process, also when the parent process had
started OpenCV's thread pool before the workers were forked (resizing that pool in a forked worker
deadlocked)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nanodet.config import ConfigError
from nanodet.data.coco_dataset import collate_detection, collate_finished
from nanodet.engine.build import SOCKET_PATH_MAX, WORKER_SOCKET_SUFFIX, build_loader, prefetch_batches
from nanodet.engine.distributed import DistContext

from .conftest import synthetic_training_config


@pytest.mark.parametrize("batch,expected", [(1, 8), (4, 8), (16, 4), (32, 2), (96, 2)])
def test_prefetch_is_sized_to_the_batch(batch, expected):
    assert prefetch_batches(batch) == expected


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")  # the CUDA loader built on a CPU-only host
def test_worker_batches_are_the_training_process_batches(tmp_path):
    from nanodet.data.coco_dataset import build_dataset

    cfg = synthetic_training_config(tmp_path, train_images=8, val_images=2, input_size=(96, 96), batch_size=4)
    cfg = cfg.merged({"device": {"workers_per_gpu": 2}})
    dataset = build_dataset(cfg.data.train, train=True, seed=7)
    big = np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    cv2.resize(big, (1500, 1000))  # the parent's OpenCV thread pool is running when the workers fork
    cpu = build_loader(cfg, dataset, DistContext(device=torch.device("cpu")), train=True, seed=7)
    cuda_style = build_loader(cfg, dataset, DistContext(device=torch.device("cuda")), train=True, seed=7)
    assert cpu.persistent_workers and cpu.prefetch_factor == prefetch_batches(4) and cpu.num_workers == 2
    assert cpu.collate_fn is collate_finished and cuda_style.collate_fn is collate_detection
    assert cuda_style.pin_memory and not cpu.pin_memory
    for epoch in range(2):
        cpu.sampler.set_epoch(epoch)
        order = [list(cpu.sampler)[i : i + 4] for i in range(0, 8, 4)]
        for keys, batch in zip(order, cpu):  # made by the workers
            expected = collate_finished([dataset[key] for key in keys])  # made here
            assert batch.img_ids == expected.img_ids
            assert torch.equal(batch.images, expected.images) and batch.images.dtype == torch.float32
            assert batch.images.is_contiguous(memory_format=torch.channels_last)
    cuda_style.sampler.set_epoch(0)
    first = next(iter(cuda_style))
    assert first.images.dtype == torch.uint8 and first.colour.shape == (4, 4)


def test_a_temporary_folder_too_long_for_the_workers_sockets_is_refused_before_they_start(tmp_path, monkeypatch):
    """Under such a folder a worker's batch was dropped (its socket could not be bound) and the
    training process waited for it forever."""
    from nanodet.data.coco_dataset import build_dataset

    cfg = synthetic_training_config(tmp_path, train_images=2, val_images=1, input_size=(64, 64), batch_size=2)
    dataset = build_dataset(cfg.data.train, train=True, seed=0)
    base = Path(tempfile.mkdtemp(prefix="nd-"))  # short, beside pytest's folders
    fits = base / ("d" * (SOCKET_PATH_MAX - WORKER_SOCKET_SUFFIX - len(str(base)) - 1))
    too_long = Path(str(fits) + "x")
    for folder in (fits, too_long):
        folder.mkdir()
    cpu = DistContext(device=torch.device("cpu"))
    monkeypatch.setattr(tempfile, "tempdir", str(too_long))
    with pytest.raises(ConfigError, match="TMPDIR"):
        build_loader(cfg.merged({"device": {"workers_per_gpu": 2}}), dataset, cpu, train=True, seed=0)
    serial = build_loader(cfg.merged({"device": {"workers_per_gpu": 0}}), dataset, cpu, train=True, seed=0)
    assert serial.num_workers == 0
    monkeypatch.setattr(tempfile, "tempdir", str(fits))
    loader = build_loader(cfg.merged({"device": {"workers_per_gpu": 1}}), dataset, cpu, train=True, seed=0)
    loader.sampler.set_epoch(0)
    assert len(next(iter(loader)).img_ids) == 2  # a folder of exactly the limit works
    shutil.rmtree(base)
