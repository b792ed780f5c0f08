"""bench/gpu.sh (the CUDA measurements) on this CPU machine: the whole code path with ``--device cpu
--quick``, its report as bench/loader.py reads it, and the refusal of ``--device cuda`` without CUDA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu.sh"

sys.path.insert(0, str(ROOT))
from bench.loader import gpu_rate  # noqa: E402


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # one intra-op thread: two spin-waiting OpenMP threads on two shared cores are many times slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd="/"
    )


def test_cpu_quick_run_measures_training_and_inference(tmp_path):
    out = tmp_path / "results" / "gpu.json"
    proc = run_script("--device", "cpu", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # stdout is the JSON object and nothing else
    assert json.loads(out.read_text()) == report  # --out holds the same report
    header, plan = report["header"], report["plan"]
    assert header["torch"] == torch.__version__ and header["gpu_count"] == 0 and header["gpus"] == []
    assert report["parts"] == ["train", "infer"] and report["wall_s"] > 0

    batch = plan["train_batches"][0]
    fp32 = report["train"]["runs"][f"fp32_b{batch}"]
    assert "error" not in fp32, fp32
    assert fp32["precision"] == 32 and fp32["amp_dtype"] is None and fp32["pin_memory"] is False
    assert fp32["images_per_s"] > 0 and fp32["compute_images_per_s"] >= fp32["images_per_s"]
    assert fp32["ms_per_step"] == pytest.approx(1000 * batch / fp32["images_per_s"], rel=0.01)
    assert 0 <= fp32["data_wait_share"] < 1 and fp32["timed_steps"] == plan["steps"]
    assert all(math.isfinite(v) and v > 0 for v in fp32["loss_first_last"])
    assert fp32["peak_mem_mib"] is None  # CUDA memory, on CUDA only
    assert "not applicable" in report["train"]["runs"][f"amp_b{batch}"]["skipped"]
    assert report["train"]["amp_speedup"] == {f"b{batch}": None}

    infer = report["infer"]
    assert "error" not in infer, infer
    assert infer["backend"] == "torch" and infer["device"] == "cpu" and infer["input_size"] == [416, 416]
    off = infer["pin_off"]
    assert off["images"] == plan["folder_images"] and off["images_per_s"] > 0 and off["detections_per_image"] >= 0
    assert len(off["images_per_s_all_passes"]) == plan["repeats"]
    assert off["images_per_s"] == max(off["images_per_s_all_passes"])
    assert "not applicable" in infer["pin_on"]["skipped"] and infer["pin_on_over_off"] is None

    # bench/loader.py takes the rate its loader must feed from this report
    fed = gpu_rate(out)
    assert fed["compute_images_per_s"] == {f"fp32_b{batch}": fp32["compute_images_per_s"]}
    assert fed["must_feed_images_per_s"] == fp32["compute_images_per_s"] and fed["gpus"] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_asked_without_cuda_exits_2():
    proc = run_script("--device", "cuda", "--quick", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["error"] == "CUDA not available"
    assert report["header"]["cuda_available"] is False and "train" not in report
