"""bench/gpu.sh (the CUDA measurements) on this CPU machine: the whole code path with ``--device
cpu --quick``, the refusal of ``--device cuda`` without CUDA, and the DDP worker under torchrun
(gloo on CPU) as the ``ddp`` part launches it on GPUs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu.sh"

sys.path.insert(0, str(ROOT))
from bench import gpu  # noqa: E402


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # one intra-op thread: two spin-waiting OpenMP threads on two shared cores are many times slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd="/"
    )


def errors_in(obj, path: str = "") -> list[str]:
    """Every ``error`` key anywhere in the report, with where it is."""
    if isinstance(obj, dict):
        found = [f"{path}: {obj['error']}"] if "error" in obj else []
        return found + [e for k, v in obj.items() for e in errors_in(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [e for i, v in enumerate(obj) for e in errors_in(v, f"{path}[{i}]")]
    return []


def test_cpu_quick_run():
    """One run (its parts checked below): under ``pytest -n`` separate tests could each start it."""
    proc = run_script("--device", "cpu", "--quick", "--parts", "train,infer,mining")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # stdout is the JSON object and nothing else
    assert errors_in(report) == []
    check_header(report)
    check_train(report)
    check_infer(report)
    check_mining(report)


def check_header(report: dict) -> None:
    header = report["header"]
    assert header["torch"] == torch.__version__
    assert header["cpu_count"] >= 1 and header["gpu_count"] == 0 and header["gpus"] == []
    assert report["parts"] == ["train", "infer", "mining"]
    assert "skipped" in report["ddp"]
    assert report["wall_s"] > 0


def check_train(report: dict) -> None:
    train = report["train"]
    batch = report["plan"]["train_batches"][0]
    fp32 = train["runs"][f"fp32_b{batch}"]
    assert fp32["precision"] == 32 and fp32["amp_dtype"] is None and fp32["pin_memory"] is False
    assert fp32["images_per_s"] > 0 and fp32["compute_images_per_s"] >= fp32["images_per_s"]
    assert fp32["ms_per_step"] == pytest.approx(1000 * batch / fp32["images_per_s"], rel=0.05)
    assert 0 <= fp32["data_wait_share"] < 1
    assert fp32["timed_steps"] == report["plan"]["steps"]
    assert all(math.isfinite(v) for v in fp32["loss_first_last"])
    assert fp32["peak_mem_mib"] is None and fp32["host_peak_rss_mib"] > 0  # CUDA memory only on CUDA
    assert "not applicable" in train["runs"][f"amp_b{batch}"]["skipped"]
    assert train["amp_speedup"] == {f"b{batch}": None}


def check_infer(report: dict) -> None:
    infer, plan = report["infer"], report["plan"]
    assert infer["backend"] == "torch" and infer["device"] == "cpu" and infer["input_size"] == [416, 416]
    for batch in plan["forward_batches"]:
        speed = infer["forward_fp32"][f"b{batch}"]
        assert speed["images_per_s"] > 0 and speed["calls"] == plan["forward_calls"]
    folder = infer["folder_detect"]
    assert folder["pin_off"]["images"] == plan["folder_images"]
    assert folder["pin_off"]["images_per_s"] > 0 and folder["pin_off"]["detections_per_image"] >= 0
    assert "not applicable" in folder["pin_on"]["skipped"]
    base = infer["cpu_baseline"]
    assert base["folder_detect"]["images"] == plan["cpu_images"] and base["folder_detect"]["images_per_s"] > 0
    assert set(infer["speedup_vs_cpu"]) >= {"b1", "folder_detect"}


def check_mining(report: dict) -> None:
    mining, plan = report["mining"], report["plan"]
    mine = mining["folder_mine"]["pin_off"]
    both = mining["folder_mine_and_detect_one_pass"]
    assert mine["images"] == both["images"] == plan["folder_images"]
    assert mine["images_per_s"] > 0 and both["images_per_s"] > 0
    assert mine["aldd_score_mean"] >= 0  # ALDD disagreement is never negative
    # the same images and model: the one-pass path gives the same scores, and the detections of infer
    assert both["aldd_score_mean"] == pytest.approx(mine["aldd_score_mean"], rel=1e-4)
    assert both["detections_per_image"] == report["infer"]["folder_detect"]["pin_off"]["detections_per_image"]
    assert mining["cpu_baseline"]["images_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_asked_without_cuda_exits_2():
    proc = run_script("--device", "cuda", "--quick", timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["error"] == "CUDA not available"
    assert report["header"]["cuda_available"] is False and "train" not in report


def test_ddp_part_and_worker_on_cpu(tmp_path, monkeypatch):
    """The ``ddp`` part skips on CPU; its torchrun worker (the library's DDP Trainer, gloo here)
    runs 2 processes and rank 0 reports the totals over both."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cpu = torch.device("cpu")
    run = gpu.Run(gpu.parse_args(["--device", "cpu", "--quick"]), gpu.make_plan(True, cpu), cpu, tmp_path, 0.0)
    run.deadline = time.perf_counter() + 300
    assert "device is cpu" in gpu.part_ddp(run)["skipped"]
    spec = gpu.ddp_spec(run, 2)
    for split in ("train", "val"):  # small inputs: two trainers share two cores here
        spec["config"]["data"][split]["input_size"] = [128, 128]
    result = gpu.launch_torchrun(run, 2, spec, timeout_s=150)
    assert result["world_size"] == 2 and result["ddp_wrapped"] is True
    assert result["images_per_s"] > 0 and result["timed_steps"] == run.plan.ddp_steps
    assert len(result["data_wait_share_per_rank"]) == 2
    assert all(math.isfinite(v) for v in result["loss_first_last"])
