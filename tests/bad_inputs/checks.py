"""What every bad-input run must leave behind, failed or not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch
import yaml

from ..executor_helpers import assert_failure, monitor_fields


def assert_outputs_consistent(out_dir: Path, checkpoints: bool = True) -> None:
    """Whatever exists under /out parses: monitor.txt always; result.yaml (with every file it
    names), infer-result.json, result.tsv and checkpoints when present. No temp files left."""
    monitor_fields(out_dir)
    result = out_dir / "models" / "result.yaml"
    if result.exists():
        data = yaml.safe_load(result.read_text())
        assert isinstance(data, dict), data
        for name, stage in (data.get("model_stages") or {}).items():
            for f in stage["files"]:
                assert (out_dir / "models" / name / f).is_file() or (out_dir / "models" / f).is_file(), (name, f)
        for f in data.get("model") or []:
            assert (out_dir / "models" / f).is_file(), f
    if (out_dir / "infer-result.json").exists():
        assert "detection" in json.loads((out_dir / "infer-result.json").read_text())
    if (out_dir / "result.tsv").exists():
        for line in (out_dir / "result.tsv").read_text().splitlines():
            path, score = line.split("\t")
            float(score)
    for ckpt in (out_dir / "models").glob("*.ckpt") if checkpoints and (out_dir / "models").is_dir() else []:
        torch.load(ckpt, map_location="cpu", weights_only=True)
    leftovers = [p for p in out_dir.rglob("*.tmp")]
    assert not leftovers, leftovers


def assert_fails_with(
    proc: subprocess.CompletedProcess, out_dir: Path, code: int, message: str, checkpoints: bool = True
) -> list[str]:
    """Exit non-zero; monitor.txt in the error state with ``code`` and a reason containing
    ``message``; the same reason as the last stderr line; outputs consistent."""
    fields = assert_failure(proc, out_dir, code)
    assert message in fields[5], (message, fields[5])
    assert message in proc.stderr.strip().splitlines()[-1]
    assert "\n" not in fields[5] and fields[5].strip()
    assert_outputs_consistent(out_dir, checkpoints)
    return fields
