"""``python -m nanodet detect``: images, folders, videos or a camera → one JSON line per image/frame.

Still images are decoded in worker threads and predicted in batches; video frames are
read in order and batched the same way. With ``--save-dir`` the annotated images/videos
are written there. With an exported graph, or PyTorch weights whose export is cached, on the
CPU the command never imports PyTorch (:mod:`.predictor`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
from tqdm import tqdm

from ..config import ConfigError
from ..data.image_io import VIDEO_EXTENSIONS, list_images
from ..data.inference_dataset import ImageFileDataset, InferenceBatch, inference_batches
from ..deploy.exported import is_exported
from ..pictures.draw import draw_detections
from ..utils.cpus import allowed_cpus
from ..utils.devices import default_device
from ..utils.pipeline import overlapped
from .detections import Detections
from .predictor import Predictor

log = logging.getLogger(__name__)


def detection_record(source: str, width: int, height: int, dets: Detections, class_names: list[str], **extra) -> dict:
    return {
        "file": source,
        **extra,
        "width": int(width),
        "height": int(height),
        "detections": [  # through tolist(): Python numbers at once, not a NumPy scalar per value
            {
                "bbox": [round(v, 2) for v in box],
                "score": round(score, 4),
                "class_id": label,
                "class_name": class_names[label],
            }
            for box, score, label in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist())
        ],
    }


def classify_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Split command-line inputs into still images and streams (video files, camera indexes)."""
    images: list[Path] = []
    streams: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images.extend(list_images(path))
        elif path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            streams.append(item)
        elif item.isdigit() and not path.exists():
            streams.append(item)  # a camera index
        else:
            images.append(path)  # unreadable/missing files are reported per image later
    return images, streams


class Detector:
    """Runs a Predictor over inputs and emits records (and annotated files)."""

    def __init__(
        self,
        predictor: Predictor,
        conf: float,
        batch_size: int,
        workers: int,
        save_dir: Path | None,
        reduced_decode: bool = False,
    ) -> None:
        self.predictor = predictor
        self.reduced_decode = reduced_decode
        self.conf = conf
        self.batch_size = batch_size
        self.workers = workers
        self.save_dir = save_dir
        self.failures = 0
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)

    def images(self, paths: list[Path], progress: bool) -> Iterator[dict]:
        p = self.predictor
        dataset = ImageFileDataset(
            paths,
            p.input_wh,
            p.keep_ratio,
            p.mean,
            p.std,
            keep_original=self.save_dir is not None,
            reduced_decode=self.reduced_decode,
        )
        bar = tqdm(total=len(paths), desc="detect", unit="img", disable=not progress, file=sys.stderr)

        def predict(batch: InferenceBatch) -> list[Detections]:
            if batch.images is None:
                return []
            return p.predict_batch(batch.images, batch.warp_matrices, batch.sizes)

        loader = inference_batches(dataset, self.batch_size, self.workers)
        for batch, results in overlapped(predict, loader, p.streams):
            for _path, reason in batch.failed:
                self.failures += 1
                log.warning("skipped %s", reason)
            if batch.images is not None:
                for i, (path, (w, h), dets) in enumerate(zip(batch.paths, batch.sizes, results)):
                    dets = dets.above(self.conf)
                    if self.save_dir is not None and batch.originals is not None:
                        out = self.save_dir / path.name
                        cv2.imwrite(str(out), draw_detections(batch.originals[i], dets, p.class_names))
                    yield detection_record(str(path), w, h, dets, p.class_names)
            bar.update(len(batch.paths) + len(batch.failed))
        bar.close()

    def stream(self, source: str, progress: bool) -> Iterator[dict]:
        p = self.predictor
        capture = cv2.VideoCapture(int(source) if source.isdigit() and not Path(source).exists() else source)
        if not capture.isOpened():
            self.failures += 1
            log.warning("skipped %s: cannot open video/camera", source)
            return
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        writer = None
        bar = tqdm(total=total, desc=Path(source).name, unit="frame", disable=not progress, file=sys.stderr)
        frame_index = 0
        try:
            while True:
                frames = []
                while len(frames) < self.batch_size:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    frames.append(frame)
                if not frames:
                    break
                for frame, dets in zip(frames, p.predict(frames)):
                    dets = dets.above(self.conf)
                    h, w = frame.shape[:2]
                    if self.save_dir is not None:
                        if writer is None:
                            name = f"camera{source}.mp4" if source.isdigit() else Path(source).stem + ".mp4"
                            writer = cv2.VideoWriter(
                                str(self.save_dir / name), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h)
                            )
                        writer.write(draw_detections(frame, dets, p.class_names))
                    yield detection_record(source, w, h, dets, p.class_names, frame=frame_index)
                    frame_index += 1
                bar.update(len(frames))
        finally:
            bar.close()
            capture.release()
            if writer is not None:
                writer.release()


def run_detect(args) -> int:
    device = args.device or default_device()
    if args.config is None and not is_exported(args.weights):
        raise ConfigError("--config is needed with PyTorch weights (only an exported .onnx/.xml carries its own)")
    threads = args.threads
    if threads is None and not os.environ.get("OMP_NUM_THREADS"):
        threads = allowed_cpus()[0]  # torch's default counts the host's cores, not the container's
    predictor = Predictor(
        args.config, args.weights, device=device, backend=args.backend, threads=threads, streams=args.streams
    )
    if predictor.backend == "torch" and device == "cpu" and threads is not None:
        import torch

        torch.set_num_threads(threads)
    images, streams = classify_inputs(args.inputs)
    workers = args.workers if args.workers is not None else min(4, allowed_cpus()[0])  # the container's, not the host's
    save_dir = Path(args.save_dir) if args.save_dir else None
    detector = Detector(predictor, args.conf, args.batch_size, workers, save_dir, args.reduced_decode)
    progress = not args.no_progress
    out = sys.stdout
    count = 0
    if images:
        for record in detector.images(images, progress and len(images) > 1):
            out.write(json.dumps(record) + "\n")
            count += 1
    for source in streams:
        for record in detector.stream(source, progress):
            out.write(json.dumps(record) + "\n")
            count += 1
    out.flush()
    log.info("%d images/frames detected, %d inputs skipped", count, detector.failures)
    return 0 if count or not detector.failures else 1
