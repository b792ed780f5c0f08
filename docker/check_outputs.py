"""Check a training and a mining+infer task's outputs as the platform and its verifier do.

Usage: python docker/check_outputs.py WORK (with WORK/{train,predict}-{in,out} from image-test.sh).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def fail(message: str) -> None:
    sys.exit(f"[image-test] FAILED: {message}")


def monitor_done(out: Path) -> None:
    fields = (out / "monitor.txt").read_text().splitlines()[0].split("\t")
    if len(fields) < 5 or float(fields[2]) != 1.0 or fields[3] != "2" or fields[4] != "0":
        fail(f"{out / 'monitor.txt'}: not finished: {fields}")


def check_training(out: Path) -> None:
    monitor_done(out)
    models = out / "models"
    result = yaml.safe_load((models / "result.yaml").read_text())
    stages = result.get("model_stages") or fail("result.yaml has no model_stages")
    if result["best_stage_name"] not in stages:
        fail("best_stage_name is not a stage")
    for name, stage in stages.items():
        if not 0 <= stage["mAP"] <= 1:
            fail(f"stage {name}: mAP {stage['mAP']}")
        if "nanodet_model.onnx" not in stage["files"]:  # the image has onnx: every stage carries its export
            fail(f"stage {name}: no ONNX attachment in {stage['files']}")
        for f in stage["files"]:
            path = models / name / f if (models / name / f).exists() else models / f
            if not path.is_file() or path.is_symlink():
                fail(f"stage {name}: file {f} missing")
    if not list((out / "tensorboard").rglob("events.out.tfevents.*")):
        fail("no TensorBoard events")


def check_predict(in_dir: Path, out: Path) -> None:
    monitor_done(out)
    candidates = [row for row in (in_dir / "candidate-index.tsv").read_text().splitlines() if row]
    rows = [row.split() for row in (out / "result.tsv").read_text().splitlines()]
    if sorted(r[0] for r in rows) != sorted(candidates) or any(len(r) != 2 for r in rows):
        fail("result.tsv does not list every candidate once")
    scores = [float(r[1]) for r in rows]
    if scores != sorted(scores, reverse=True):
        fail("result.tsv is not sorted by score")
    detection = json.loads((out / "infer-result.json").read_text())["detection"]
    if set(detection) != {Path(c).name for c in candidates}:
        fail("infer-result.json does not cover every candidate")


def main() -> None:
    work = Path(sys.argv[1])
    check_training(work / "train-out")
    check_predict(work / "predict-in", work / "predict-out")
    print("[image-test] outputs: ok (result.yaml + files, monitor 1.0, TensorBoard, result.tsv, infer-result.json)")


if __name__ == "__main__":
    main()
