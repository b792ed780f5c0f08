"""int8 post-training quantization against the fp32 graph: does it pay on this CPU?

    .venv/bin/python bench/int8.py [--config nanodet-plus-m_416.yml] [--threads 2] [--batch-size 16]
                                   [--weights PTH --ann COCO_JSON --images DIR] [--calibration 32]

The fp32 graph is the one ``nanodet detect`` runs (exported with a free batch). It is quantized
with ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``),
calibrated on ``--calibration`` images pre-processed as the predictor does (MinMax ranges),
weights int8 per channel, activations uint8, in both of its formats:

* ``qdq``: QuantizeLinear/DequantizeLinear pairs around every quantized op (what OpenVINO
  also reads: it runs such a graph in int8 where its CPU plugin can);
* ``qoperator``: QLinearConv operators (convolutions only: the graph's last MatMul, the
  distribution integral, has a weight zero point ORT's QLinearMatMul refuses).

For each graph: forward milliseconds per image at ``--batch-size`` in ONNX Runtime and in
OpenVINO (best of 3 passes over the batches, ``--threads`` threads), and its detections
against fp32's on the same images (matched: same class, IoU > 0.5). With ``--weights``,
``--ann`` and ``--images`` (a trained model and its held-out COCO set) also the COCO mAP and
AP50 of each graph; without them the weights are random ones calibrated like a trained
model's (``bench._common.random_detector``) on generated pictures, so only speed and
agreement are measured. Prints ONE JSON object (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, host_info, log, random_detector  # noqa: E402
from nanodet.config import load_config  # noqa: E402
from nanodet.data.image_io import list_images, read_image  # noqa: E402
from nanodet.deploy.export import export_onnx  # noqa: E402
from nanodet.evaluation.confusion import pairwise_iou  # noqa: E402
from nanodet.inference.detections import Detections  # noqa: E402
from nanodet.inference.predictor import Predictor  # noqa: E402
from nanodet.weights.checkpoint import save_pth  # noqa: E402


def quantize(fp32: Path, out: Path, calibration: list[np.ndarray], fmt: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"images": x[None]} for x in calibration)

        def get_next(self):
            return next(self.items, None)

    prepared = out.with_name(out.stem + "-prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv"] if fmt == "qoperator" else None,
    )
    return out


def forward_ms(predictor: Predictor, batches: list, images: int) -> float:
    predictor.run(batches[0])
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for batch in batches:
            predictor.run(batch)
        best = min(best, time.perf_counter() - start)
    return round(best / images * 1e3, 2)


def agreement(reference: list[Detections], other: list[Detections], conf: float = 0.3) -> float:
    """Share of fp32's detections (score > conf) that the other graph also finds: same class,
    IoU > 0.5, any score above conf."""
    found = total = 0
    for a, b in zip(reference, other):
        a, b = a.above(conf), b.above(conf)
        same_class = a.labels[:, None] == b.labels[None, :]
        found += int(((pairwise_iou(a.boxes, b.boxes) > 0.5) & same_class).any(axis=1).sum())
        total += len(a)
    return round(found / max(total, 1), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="nanodet-plus-m_416.yml", help="a config of config/ or a path")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--ann", type=Path, default=None, help="COCO json of the held-out set (with --weights)")
    parser.add_argument("--images", type=Path, default=None, help="its image folder")
    parser.add_argument("--count", type=int, default=128, help="generated pictures without --images")
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    import torch

    from bench.detect import write_images
    from nanodet.data.transforms import stack_batch

    torch.set_num_threads(args.threads)
    config = Path(args.config) if Path(args.config).is_file() else REPO / "config" / args.config
    cfg = load_config(config)
    report: dict = {"benchmark": "bench/int8.py", "host": host_info(), "config": str(config.name)}
    report["threads"], report["batch_size"] = args.threads, args.batch_size
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-int8-") as tmp_name:
        tmp = Path(tmp_name)
        os.chdir(tmp)  # the quantizer leaves temporary files in the working directory
        weights = args.weights
        if weights is None:
            weights = tmp / "weights.pth"
            save_pth(random_detector(cfg), weights)
        folder = args.images
        if folder is None:
            folder = tmp / "images"
            write_images(folder, args.count + args.calibration)
        paths = list_images(folder)
        calibration_paths, paths = paths[-args.calibration :], paths[: -args.calibration]
        if args.ann is not None:  # a labelled set: calibrate on other pictures of the same kind
            calibration_paths = paths[: args.calibration]
        fp32 = export_onnx(cfg, weights, tmp / "fp32.onnx", dynamic_batch=True)
        reference = Predictor(None, fp32, backend="onnxruntime", threads=args.threads, streams=1)
        calibration = [reference.preprocess(read_image(p))[0] for p in calibration_paths]
        log("quantizing ...")
        graphs = {"fp32": fp32}
        for fmt in ("qdq", "qoperator"):
            graphs[f"int8_{fmt}"] = quantize(fp32, tmp / f"int8_{fmt}.onnx", calibration, fmt)
        images = [read_image(p) for p in paths]
        inputs = [reference.preprocess(im) for im in images]
        sizes = [(im.shape[1], im.shape[0]) for im in images]
        chunks = [range(i, min(i + args.batch_size, len(paths))) for i in range(0, len(paths), args.batch_size)]
        batches = [stack_batch([torch.from_numpy(inputs[i][0]) for i in c]) for c in chunks]
        results: dict = {}
        detections: dict[str, list[Detections]] = {}
        for name, graph in graphs.items():
            entry: dict = {"file_mb": round(graph.stat().st_size / 2**20, 2)}
            for backend in ("onnxruntime", "openvino"):
                log(f"{name} on {backend} ...")
                try:
                    predictor = Predictor(None, graph, backend=backend, threads=args.threads, streams=1)
                    entry[f"{backend}_forward_ms_per_image"] = forward_ms(predictor, batches, len(paths))
                except Exception as err:  # noqa: BLE001 - a runtime that cannot run this graph is a result
                    entry[f"{backend}_forward_ms_per_image"] = f"fails: {type(err).__name__}: {str(err)[:200]}"
            predictor = Predictor(None, graph, backend="onnxruntime", threads=args.threads, streams=1)
            detections[name] = [
                d
                for c, b in zip(chunks, batches)
                for d in predictor.predict_batch(b, [inputs[i][1] for i in c], [sizes[i] for i in c])
            ]
            entry["fp32_detections_found"] = agreement(detections["fp32"], detections[name])
            results[name] = entry
        if args.ann is not None:
            from pycocotools.coco import COCO

            from nanodet.evaluation.coco import CocoEvaluator

            gt = COCO(str(args.ann))
            ids = {Path(img["file_name"]).name: img["id"] for img in gt.dataset["images"]}
            evaluator = CocoEvaluator(gt, reference.class_names)
            for name, dets in detections.items():
                metrics = evaluator.evaluate({ids[p.name]: d for p, d in zip(paths, dets) if p.name in ids})
                results[name]["mAP"], results[name]["AP50"] = round(metrics["mAP"], 4), round(metrics["AP_50"], 4)
        base = results["fp32"]
        for entry in results.values():
            for backend in ("onnxruntime", "openvino"):
                key = f"{backend}_forward_ms_per_image"
                if isinstance(entry.get(key), float) and isinstance(base.get(key), float):
                    entry[f"{backend}_speedup_vs_fp32"] = round(base[key] / entry[key], 2)
            if "AP50" in entry:
                entry["AP50_change_vs_fp32"] = round(entry["AP50"] - base["AP50"], 4)
        report["images"] = len(paths)
        report["graphs"] = results
    print(json.dumps(report))


if __name__ == "__main__":
    main()
