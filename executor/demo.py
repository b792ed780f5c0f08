"""``make demo``: the main job on a bundled example, end to end through start.py.

Generates a small platform-format workspace (synthetic shapes, 3 classes), runs a training
task, then a mining+infer task on the trained model, and prints where each result is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .paths import APP_ROOT
from .workspace import make_predict_workspace, make_training_workspace


def run_task(in_dir: Path, out_dir: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(APP_ROOT / "start.py"), "--in", str(in_dir), "--out", str(out_dir)])
    if proc.returncode != 0:
        sys.exit(f"task failed: see {out_dir / 'monitor.txt'}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="demo-workspace", help="where the example and its results go")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    root = Path(args.dir).resolve()
    shutil.rmtree(root, ignore_errors=True)
    train_in, train_out = root / "training" / "in", root / "training" / "out"
    make_training_workspace(
        train_in, train_images=128, val_images=16, epochs=args.epochs, input_size=160, val_intervals=5
    )
    print(f"[demo] training workspace: {train_in}", flush=True)
    t_train = run_task(train_in, train_out)
    result = yaml.safe_load((train_out / "models" / "result.yaml").read_text())
    predict_in, predict_out = root / "mining-infer" / "in", root / "mining-infer" / "out"
    make_predict_workspace(predict_in, train_out / "models", candidates=32)
    t_predict = run_task(predict_in, predict_out)
    infer = json.loads((predict_out / "infer-result.json").read_text())["detection"]
    top = (predict_out / "result.tsv").read_text().splitlines()[:3]
    best_dir = train_out / "models" / result["best_stage_name"]
    pictures = sorted(p.name for p in best_dir.glob("*.png"))
    sheet = predict_out / "mining-contact-sheet.png"
    print(f"""
[demo] training ({t_train:.0f} s): best stage {result["best_stage_name"]}, mAP {result["mAP"]:.3f}
       result.yaml   {train_out / "models" / "result.yaml"}
       weights       {train_out / "models" / "nanodet_model_best.pth"}
       tensorboard   {train_out / "tensorboard"}   (tensorboard --logdir {train_out / "tensorboard"})
       pictures      {best_dir}/{{{",".join(pictures)}}}
       monitor       {train_out / "monitor.txt"}
[demo] mining + infer ({t_predict:.0f} s) on {len(infer)} candidates:
       result.tsv    {predict_out / "result.tsv"}   (top: {top[0].split(chr(9))[1] if top else "-"})
       infer json    {predict_out / "infer-result.json"}   ({sum(len(v["boxes"]) for v in infer.values())} boxes)
       contact sheet {sheet if sheet.is_file() else "(not written: see the task log)"}
       monitor       {predict_out / "monitor.txt"}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
