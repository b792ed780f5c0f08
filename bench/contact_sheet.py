"""What the mining contact sheet costs: a mining task on the same candidates through start.py,
with the sheet (``mining_contact_sheet: true``, the default) and without, the two runs
interleaved (with, without, with, without, ...) so drifts of the machine hit both alike.
Prints one JSON object: wall seconds per run, the medians, the overhead, and the seconds the
task's log gives the sheet itself.

    .venv/bin/python bench/contact_sheet.py                 # 1,000 candidates, 3 runs each
    .venv/bin/python bench/contact_sheet.py --candidates 200 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SHEET_LOG = re.compile(r"mining contact sheet: .* \((\d+) \+ (\d+) candidates, ([\d.]+) s\)")
LOOP_LOG = re.compile(r"rank 0: (\d+) images in ([\d.]+) s")


def run_once(in_dir: Path, out_dir: Path, sheet: bool) -> dict:
    import yaml

    config = yaml.safe_load((in_dir / "config.yaml").read_text())
    config["mining_contact_sheet"] = sheet
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "start.py"), "--in", str(in_dir), "--out", str(out_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    text = proc.stdout + proc.stderr
    loop = LOOP_LOG.search(text)
    found = SHEET_LOG.search(text)
    written = (out_dir / "mining-contact-sheet.png").is_file()
    if written != sheet:
        raise SystemExit(f"sheet {'missing' if sheet else 'written when off'} in {out_dir}")
    return {
        "wall_s": round(wall, 2),
        "loop_s": float(loop.group(2)) if loop else None,
        "sheet_s": float(found.group(3)) if found else 0.0,
        "sheet_bytes": (out_dir / "mining-contact-sheet.png").stat().st_size if written else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind, interleaved")
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from predict_task import trained_models

    from executor.workspace import make_predict_workspace

    runs: dict[str, list[dict]] = {"with_sheet": [], "without_sheet": []}
    with tempfile.TemporaryDirectory(prefix="bench-sheet-") as tmp:
        root = Path(tmp)
        in_dir = make_predict_workspace(
            root / "in",
            trained_models(root, args.input_size),
            candidates=args.candidates,
            mining=True,
            infer=False,
            batch_size_per_gpu=16,
            workers_per_gpu=args.workers,
            size=((192, 160), (320, 256)),
        )
        for r in range(args.repeats):
            for name, sheet in (("with_sheet", True), ("without_sheet", False)):
                runs[name].append(run_once(in_dir, root / f"out-{name}-{r}", sheet))
                print(f"[bench] {name} run {r + 1}: {runs[name][-1]}", file=sys.stderr, flush=True)
    median = {name: statistics.median(r["wall_s"] for r in v) for name, v in runs.items()}
    sheet_s = statistics.median(r["sheet_s"] for r in runs["with_sheet"])
    print(
        json.dumps(
            {
                "what": "mining task (aldd, start.py end to end) with and without the contact sheet, interleaved",
                "candidates": args.candidates,
                "image_sizes": "192x160 to 320x256 (generated shapes)",
                "input_size": args.input_size,
                "repeats": args.repeats,
                "runs": runs,
                "median_wall_s": {k: round(v, 2) for k, v in median.items()},
                "overhead_wall": round(median["with_sheet"] / median["without_sheet"] - 1.0, 4),
                "sheet_s_median (from the task log)": sheet_s,
                "sheet_share_of_with_sheet_wall": round(sheet_s / median["with_sheet"], 4),
                "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
                "note": "wall_s: the whole start.py process (start-up, model load, files read); the sheet "
                "re-runs the detector on the 18 pictured candidates only",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
