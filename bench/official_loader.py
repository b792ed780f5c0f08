"""The official NanoDet's training data pipeline, timed: its dataset (``build_dataset`` from an
official-format config: ``CocoDataset`` with its ``Pipeline``), its ``naive_collate``, and the
``stack_batch_img`` its ``TrainingTask`` applies to make the batch the model receives.

Runs in the official code's environment (``bench/loader.py`` starts it with that environment's
Python and the official checkout on ``PYTHONPATH``), never in ours. Reads a JSON list of jobs
from the file given, prints one JSON list of results (the last stdout line):

    <official python> bench/official_loader.py JOBS.json

A job: ``{"config", "img_path", "ann_path", "batch", "images", "mode", "workers", "epochs", "cpu"}``.
``mode`` ``single``: this process alone (pinned to CPU ``cpu`` when given, one thread), items
then collate then stack, batch after batch, timed by the wall clock and by the process's CPU
time; ``loader``: the official ``tools/train.py`` DataLoader (``shuffle``, ``naive_collate``,
``drop_last``, ``workers`` workers, not persistent) with the stack in this process, for
``epochs`` epochs.
"""

import json
import os
import sys
import time

import cv2
import torch
from nanodet.data.batch_process import stack_batch_img
from nanodet.data.collate import naive_collate
from nanodet.data.dataset import build_dataset
from nanodet.util import cfg, load_config


def official_dataset(job):
    load_config(cfg, job["config"])
    cfg.defrost()
    cfg.data.train.img_path = job["img_path"]
    cfg.data.train.ann_path = job["ann_path"]
    return build_dataset(cfg.data.train, "train")


def run_single(job, dataset):
    batch, count = job["batch"], job["images"]
    starts = list(range(0, count - batch + 1, batch))
    times, cpu_times = [], []
    for start in starts:
        begin, cpu_begin = time.perf_counter(), time.process_time()
        meta = naive_collate([dataset[i] for i in range(start, start + batch)])
        stack_batch_img(meta["img"], divisible=32)
        times.append(time.perf_counter() - begin)
        cpu_times.append(time.process_time() - cpu_begin)
    timed, cpu_timed = times[1:], cpu_times[1:]  # the first batch warms up (page cache, lazy imports)
    return {
        "images_per_s": round(batch * len(timed) / sum(timed), 3),
        "ms_per_image": round(1e3 * sum(timed) / (batch * len(timed)), 2),
        "cpu_images_per_s": round(batch * len(cpu_timed) / sum(cpu_timed), 3),
        "cpu_ms_per_image": round(1e3 * sum(cpu_timed) / (batch * len(cpu_timed)), 2),
        "timed_images": batch * len(timed),
    }


def run_loader(job, dataset):
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=job["batch"],
        shuffle=True,
        num_workers=job["workers"],
        collate_fn=naive_collate,
        drop_last=True,
    )
    epochs = []
    for _ in range(job["epochs"]):
        begin = time.perf_counter()
        for meta in loader:
            stack_batch_img(meta["img"], divisible=32)
        seconds = time.perf_counter() - begin
        epochs.append({"images_per_s": round(len(loader) * job["batch"] / seconds, 3), "seconds": round(seconds, 3)})
    return {"epochs": epochs}


def main():
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    results = []
    for job in jobs:
        if job.get("cpu") is not None:
            os.sched_setaffinity(0, {job["cpu"]})
            torch.set_num_threads(1)
            cv2.setNumThreads(1)
        dataset = official_dataset(job)
        out = run_single(job, dataset) if job["mode"] == "single" else run_loader(job, dataset)
        results.append({**job, **out})
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
