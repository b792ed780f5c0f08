"""One source of versions: the venv the suite runs in holds exactly what docker/constraints.txt pins,
the file the image installs from (`make venv` installs under it too)."""

from __future__ import annotations

import re
from importlib import metadata

from .conftest import ROOT

CONSTRAINTS = ROOT / "docker" / "constraints.txt"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions() -> dict[str, str]:
    pins = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and name and version, f"{CONSTRAINTS.name}:{number}: not a 'name==version' pin: {line!r}"
        assert _canonical(name) not in pins, f"{CONSTRAINTS.name}:{number}: {name} pinned twice"
        pins[_canonical(name)] = version
    return pins


def test_the_suite_runs_the_pinned_versions():
    pins = pinned_versions()
    assert {"torch", "numpy", "opencv-python-headless", "onnxruntime", "pytest"} <= set(pins)
    installed = {_canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    # a local label (2.13.0+cpu) is the same release built for another device, as pip's == allows
    drifted = {
        name: (version, installed[name])
        for name, version in pins.items()
        if name in installed and installed[name].split("+")[0] != version
    }
    assert not drifted, f"installed versions differ from {CONSTRAINTS.name} (pinned, installed): {drifted}"


def test_make_venv_installs_under_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q -c docker/constraints.txt" in makefile
    assert re.search(r"^\$\(STAMP\): .*docker/constraints\.txt", makefile, re.M), "venv not redone on a new pin"
