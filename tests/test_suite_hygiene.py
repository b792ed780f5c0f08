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


GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("whole-task")


@pytest.fixture(scope="module")
def task():
    with open(os.environ["SETUPS"], "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "-") + "\\n")


@pytest.mark.parametrize("k", range(6))
def test_uses_the_task(task, k):
    pass
"""


def test_a_group_runs_on_one_worker_and_builds_its_module_fixture_once(tmp_path):
    """`make test` shares each whole-task fixture (a training, the YMIR loop) among its module's tests
    by ``xdist_group`` and ``--dist loadgroup``. Where pytest and pytest-xdist disagree on node ids
    (pytest 9.2 with xdist 3.8), the group is silently spread over the workers and each builds
    the fixture again: about 70 s of the suite's time."""
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_other.py").write_text(
        "import pytest\n\n\n@pytest.mark.parametrize('k', range(12))\ndef test_x(k):\n    pass\n"
    )
    setups = tmp_path / "setups.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")} | {"SETUPS": str(setups)}
    command = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        command + ["--rootdir", str(tmp_path), str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "18 passed" in proc.stdout
    assert len(setups.read_text().split()) == 1, setups.read_text()
