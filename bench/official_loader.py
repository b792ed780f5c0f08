"""The official NanoDet's training data pipeline timed, the baseline of ``bench/loader.py`` (run in the
official environment, never in ours): its ``build_dataset``, ``naive_collate`` and ``TrainingTask``'s
``stack_batch_img``. ``single``: pinned to CPU ``cpu``, one thread, the first batch untimed, by wall
clock and CPU time; ``loader``: its ``tools/train.py`` DataLoader for ``epochs`` epochs. Reads the jobs'
JSON list from the file given; prints the results as one JSON list, the last line.

    run.sh bench/official_loader.py JOBS.json
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


def run_single(job, dataset):
    batch = job["batch"]
    times, cpu_times = [], []
    for start in range(0, job["images"] - batch + 1, batch):
        begin, cpu_begin = time.perf_counter(), time.process_time()
        stack_batch_img(naive_collate([dataset[i] for i in range(start, start + batch)])["img"], divisible=32)
        times.append(time.perf_counter() - begin)
        cpu_times.append(time.process_time() - cpu_begin)
    images, seconds, cpu_seconds = batch * (len(times) - 1), sum(times[1:]), sum(cpu_times[1:])
    rates = {"images_per_s": round(images / seconds, 3), "ms_per_image": round(1e3 * seconds / images, 2)}
    rates |= {
        "cpu_images_per_s": round(images / cpu_seconds, 3),
        "cpu_ms_per_image": round(1e3 * cpu_seconds / images, 2),
    }
    return rates | {"timed_images": images}


def run_loader(job, dataset):
    loader = torch.utils.data.DataLoader(
        dataset, job["batch"], shuffle=True, num_workers=job["workers"], collate_fn=naive_collate, drop_last=True
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
    results = []
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    for job in jobs:
        if job.get("cpu") is not None:
            os.sched_setaffinity(0, {job["cpu"]})
            torch.set_num_threads(1)
            cv2.setNumThreads(1)
        load_config(cfg, job["config"])
        cfg.defrost()
        cfg.data.train.img_path, cfg.data.train.ann_path = job["img_path"], job["ann_path"]
        dataset = build_dataset(cfg.data.train, "train")
        out = run_single(job, dataset) if job["mode"] == "single" else run_loader(job, dataset)
        results.append({**job, **out})
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
