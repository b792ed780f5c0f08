"""cache_images: none, ram and disk give the samples of no cache decoding at each image's reduction
(``decode_per_draw=False``); each image is stored once, in one file that every DataLoader worker
maps; a set over the budget trains uncached with a warning."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler

from nanodet.config import DatasetConfig, PipelineConfig
from nanodet.data import image_cache
from nanodet.data.coco_dataset import CocoDetection, EpochSampler, build_dataset, build_transform, collate_detection
from nanodet.data.image_cache import FILE_PREFIX, make_image_cache

OFFICIAL = dict(
    scale=(0.6, 1.4),
    stretch=((0.8, 1.2), (0.8, 1.2)),
    translate=0.2,
    flip=0.5,
    brightness=0.2,
    contrast=(0.6, 1.4),
    saturation=(0.5, 1.2),
)
SIZES = [(300, 240), (560, 480), (1000, 900), (420, 330)]  # at input 128: decoded at 1/1, 1/2, 1/4; a PNG
HAS_SHM = image_cache.SHM_FOLDER.is_dir() and os.access(image_cache.SHM_FOLDER, os.W_OK)


def write_set(root: Path) -> DatasetConfig:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i, (width, height) in enumerate(SIZES):
        grid = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        name = f"{i}.png" if i == 3 else f"{i}.jpg"
        cv2.imwrite(str(root / "images" / name), image)
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        for _ in range(3):
            x, y = rng.uniform(0, width * 0.6), rng.uniform(0, height * 0.6)
            bbox = [x, y, width * 0.3, height * 0.3]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": bbox})
            annotations[-1].update(area=bbox[2] * bbox[3], iscrowd=0)
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return DatasetConfig(
        img_path=str(root / "images"),
        ann_path=str(root / "annotations.json"),
        input_size=(128, 128),
        pipeline=PipelineConfig(**OFFICIAL),
    )


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{FILE_PREFIX}*"))


@pytest.fixture
def disk_folder(monkeypatch) -> Iterator[Path]:
    """The disk cache's folder (the temporary folder) pointed at a folder of this test. A short
    one beside pytest's: DataLoader workers put their sockets under it (``check_worker_sockets``)."""
    folder = Path(tempfile.mkdtemp(prefix="nd-cache-"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def assert_same_item(a: dict, b: dict) -> None:
    for key in ("img", "gt_bboxes", "gt_labels", "colour"):
        assert torch.equal(a[key], b[key]), key
    np.testing.assert_array_equal(a["warp_matrix"], b["warp_matrix"])


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_cache_stores_each_image_once_and_gives_the_samples_of_no_cache(tmp_path, disk_folder, mode):
    if mode == "ram" and not HAS_SHM:
        pytest.skip("no writable /dev/shm")
    cfg = write_set(tmp_path / "set")
    folder = image_cache.SHM_FOLDER if mode == "ram" else disk_folder
    before = set(cache_files(folder))
    plain = build_dataset(cfg, train=True, seed=3, decode_per_draw=False)
    assert plain.cache is None
    expected = {(i, e): plain[(i, e)] for e in range(3) for i in range(len(SIZES))}

    cached = build_dataset(cfg, train=True, seed=3, cache_images=mode)
    made = [p for p in cache_files(folder) if p not in before]
    assert len(made) == 1 and cached.cache.path == made[0]
    shapes = [(cached.cache.slot(i).height, cached.cache.slot(i).width, cached.cache.slot(i).factor) for i in range(4)]
    assert shapes == [(240, 300, 1), (240, 280, 2), (225, 250, 4), (330, 420, 1)]  # reduced as decoded
    assert made[0].stat().st_size == cached.cache.size >= sum(h * w * 3 for h, w, _ in shapes)
    assert cached.cache.stored() == 0
    for i in range(len(SIZES)):
        assert_same_item(cached[(i, 0)], expected[(i, 0)])
    assert cached.cache.stored() == len(SIZES)
    for path in Path(cfg.img_path).iterdir():  # from now on the files cannot be decoded: the cache answers
        path.write_bytes(b"not an image")
    for epoch in (1, 2):
        for i in range(len(SIZES)):
            assert_same_item(cached[(i, epoch)], expected[(i, epoch)])
    assert plain[(0, 1)] is None  # without the cache the same read fails
    cached.cache.close()
    assert not made[0].exists()


def test_none_makes_no_file(tmp_path, disk_folder):
    cfg = write_set(tmp_path / "set")
    dataset = build_dataset(cfg, train=True, cache_images="none")
    assert dataset.cache is None and cache_files(disk_folder) == []


def test_dataloader_workers_share_one_cache(tmp_path, disk_folder):
    """Two worker processes fill the cache in epoch 0; the training process sees every image stored
    (one shared file, not a copy per worker), and epoch 1 from the workers' cache is the uncached epoch 1."""
    cfg = write_set(tmp_path / "set")
    cached = build_dataset(cfg, train=True, seed=1, cache_images="disk")
    sampler = EpochSampler(SequentialSampler(cached))
    loader = DataLoader(
        cached, batch_size=2, sampler=sampler, num_workers=2, collate_fn=collate_detection, persistent_workers=True
    )
    list(loader)
    assert cached.cache.stored() == len(SIZES)  # written by the workers, seen here
    assert len(cache_files(disk_folder)) == 1
    for path in Path(cfg.img_path).iterdir():
        path.write_bytes(b"gone")
    sampler.set_epoch(1)
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(SIZES) and all(b.skipped == 0 for b in batches)
    cached.cache.close()
    assert cache_files(disk_folder) == []


def test_workers_see_the_samples_of_no_cache(tmp_path, disk_folder):
    cfg = write_set(tmp_path / "set")
    plain = build_dataset(cfg, train=True, seed=1, decode_per_draw=False)
    expected = [collate_detection([plain[(0, e)], plain[(1, e)]]) for e in range(2)]
    cached = build_dataset(cfg, train=True, seed=1, cache_images="disk")
    sampler = EpochSampler(SequentialSampler(cached))
    loader = DataLoader(
        cached, batch_size=2, sampler=sampler, num_workers=2, collate_fn=collate_detection, persistent_workers=True
    )
    for epoch in range(2):
        sampler.set_epoch(epoch)
        first = next(iter(loader))
        assert torch.equal(first.images, expected[epoch].images) and torch.equal(first.colour, expected[epoch].colour)
    cached.cache.close()


def test_pickled_cache_reads_the_same_file_and_leaves_it_to_its_maker(tmp_path, disk_folder):
    """A worker started by spawn gets the cache by pickling: it opens the same file, and dropping
    its copy does not remove the maker's file."""
    cache = make_image_cache("disk", [(4, 5, 1), None, (2, 3, 2)])
    image = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    assert cache.put(0, image, 1)
    assert not cache.put(1, image, 1)  # no slot: never stored
    assert not cache.put(2, image, 2)  # another shape than its slot
    copy = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(copy.get(0), image)
    assert copy.get(1) is None and copy.get(2) is None
    copy.put(2, np.ones((2, 3, 3), np.uint8), 2)
    assert cache.stored() == 2  # the copy wrote into the same file
    copy.close()
    assert cache.path.exists()
    cache.close()
    assert not cache.path.exists()


def test_over_the_budget_trains_uncached_with_a_warning(tmp_path, disk_folder, caplog):
    cfg = write_set(tmp_path / "set")
    plain = build_dataset(cfg, train=True, seed=2)
    with caplog.at_level(logging.WARNING, logger="nanodet.data.image_cache"):
        small = CocoDetection(
            cfg.ann_path, cfg.img_path, build_transform(cfg, True), seed=2, cache_images="disk", cache_budget=10_000
        )
    assert small.cache is None and cache_files(disk_folder) == []
    assert "more than the cache's" in caplog.text and "not caching (cache_images: none)" in caplog.text
    assert_same_item(small[(1, 0)], plain[(1, 0)])


def test_ram_budget_is_the_memory_available(tmp_path, monkeypatch, caplog):
    """The ram budget comes from the memory available: with little left, the cache falls back."""
    if not HAS_SHM:
        pytest.skip("no writable /dev/shm")
    cfg = write_set(tmp_path / "set")
    monkeypatch.setattr(image_cache, "available_memory", lambda: 200_000)  # 100 kB for the cache
    before = set(cache_files(image_cache.SHM_FOLDER))
    with caplog.at_level(logging.WARNING, logger="nanodet.data.image_cache"):
        dataset = build_dataset(cfg, train=True, cache_images="ram")
    assert dataset.cache is None and set(cache_files(image_cache.SHM_FOLDER)) == before
    assert "half of 0.00 GiB available memory" in caplog.text
    budget, why = image_cache.cache_budget("ram", image_cache.SHM_FOLDER)
    assert budget == 100_000


def test_budget_is_shared_by_the_training_processes_of_the_machine(tmp_path, monkeypatch):
    one, _ = image_cache.cache_budget("disk", tmp_path)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    four, why = image_cache.cache_budget("disk", tmp_path)
    assert abs(four - one // 4) < one // 100 + 4096 and "shared by 4 training processes" in why


def test_a_killed_runs_file_is_removed(tmp_path, disk_folder):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = disk_folder / f"{FILE_PREFIX}{int(dead.stdout)}-abc123.cache"
    stale.write_bytes(b"\0" * 100)
    mine = disk_folder / f"{FILE_PREFIX}{os.getpid()}-live.cache"
    mine.write_bytes(b"\0")
    cache = make_image_cache("disk", [(2, 2, 1)])
    assert not stale.exists() and mine.exists()  # a live process's file stays
    cache.close()
