"""The official NanoDet demo Predictor over a folder, one image at a time as its demo loops, the baseline
of ``bench/detect.py`` (run in the official environment). Prints one JSON object: the loop's seconds
after one warm-up image and every detection (score > 0.05).  Usage: run.sh bench/official_detect.py
CONFIG WEIGHTS FOLDER
"""

import json
import os
import sys
import time

import torch
from demo.demo import Predictor  # the official demo (on the path through run.sh)
from nanodet.util import Logger, cfg, load_config


def main() -> None:
    config, weights, folder = sys.argv[1:4]
    load_config(cfg, config)
    cfg.defrost()
    cfg.model.arch.backbone.pretrain = False  # the weights come from the file
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    predictor = Predictor(cfg, weights, Logger(-1, use_tensorboard=False), device="cpu")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith((".jpg", ".png")))
    predictor.inference(files[0])
    detections = {}
    start = time.perf_counter()
    for path in files:
        _, results = predictor.inference(path)
        boxes = [[*map(float, b[:4]), float(b[4]), int(label)] for label, dets in results[0].items() for b in dets]
        detections[os.path.basename(path)] = boxes
    seconds = time.perf_counter() - start
    # its inference prints its timings without a newline: ours starts on a line of its own
    print("\n" + json.dumps({"images": len(files), "loop_seconds": round(seconds, 3), "detections": detections}))


if __name__ == "__main__":
    main()
