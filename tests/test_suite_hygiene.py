"""`make test` leaves nothing of its own behind in the temp folder: the export cache and the empty
weights folder the suite makes are removed when its processes exit (about 80 MiB a run otherwise;
pytest's own ``pytest-of-<user>`` keeps its last three runs, as it always does)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT


def test_a_test_run_under_xdist_removes_the_folders_it_made(tmp_path):
    temp = tmp_path / "t"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NANODET_"))}
    env["TMPDIR"] = str(temp)
    test = "tests/test_predict_scale.py::test_compact_boxes_match_the_reported_boxes"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
    left = sorted(p.name for p in temp.iterdir() if not p.name.startswith("pytest-of-"))  # pytest keeps its 3 last
    assert left == []
