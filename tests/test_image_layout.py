"""The image as defined: templates parse, Dockerfile sources exist, start.sh runs start.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from executor.protocol import PredictConfig, TrainingConfig, parse_task_config

from .conftest import ROOT

IMG_MAN = ROOT / "docker" / "img-man"


def test_templates_parse_into_the_task_models():
    for name, model in (("training", TrainingConfig), ("mining", PredictConfig), ("infer", PredictConfig)):
        data = yaml.safe_load((IMG_MAN / f"{name}-template.yaml").read_text())
        assert isinstance(data, dict) and data
        parsed = parse_task_config(model, data)
        for key in data:
            assert key in type(parsed).model_fields, f"{name} template key {key} unknown to the executor"
    training = yaml.safe_load((IMG_MAN / "training-template.yaml").read_text())
    assert (ROOT / training["config_file"]).is_file()
    assert yaml.safe_load((IMG_MAN / "manifest.yaml").read_text())["object_type"] == 2


def test_every_template_value_is_commented():
    """Each key line has its own comment directly above it (what the platform's form shows)."""
    for path in list(IMG_MAN.glob("*-template.yaml")) + [IMG_MAN / "manifest.yaml"]:
        previous = ""
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                assert previous.startswith("#"), f"{path.name}: {line!r} has no comment of its own above it"
            previous = line


def test_dockerfile_copies_existing_paths_and_runs_start_sh():
    text = (ROOT / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    assert sources and all((ROOT / s).exists() for s in sources), sources
    assert re.search(r"^CMD \[\"bash\", \"/usr/bin/start.sh\"\]$", text, re.M)
    assert re.search(r"^ENTRYPOINT \[\]$", text, re.M)
    assert "COPY docker/img-man /img-man" in text and re.search(r"^ARG BASE_IMAGE=", text, re.M)


def dockerfile_instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            instructions.append(" ".join(current.split()))
            current = ""
    return instructions


def test_weights_download_before_the_code_and_are_verified_after():
    """The download layer sees only the weights list and its stdlib script (editing code or the
    README cannot re-run it); verification runs once the code is in; CI builds offline."""
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    download = next(i for i, ins in enumerate(instructions) if "download_weights.py --dest /weights" in ins)
    verify = next(i for i, ins in enumerate(instructions) if "fetch_weights.py --dest /weights --verify-only" in ins)
    assert instructions.index("ARG FETCH_WEIGHTS=1") < download < verify
    assert re.search(
        r'case "\$FETCH_WEIGHTS" in 1\) python3 /opt/weights-fetch/download_weights.py', instructions[download]
    )
    before = [ins for ins in instructions[:download] if ins.startswith("COPY ")]
    assert before == [
        "COPY docker/constraints.txt /tmp/constraints.txt",
        "COPY docker/weights /weights",
        "COPY docker/weights.json docker/download_weights.py /opt/weights-fetch/",
    ]
    code = [f"COPY {src}" for src in ("README.md /app/", "nanodet /app/nanodet", "executor /app/executor")]
    assert all(download < instructions.index(c) < verify for c in code)
    assert "--build-arg FETCH_WEIGHTS=" in (ROOT / "docker" / "image-test.sh").read_text()
    # offline builds verify the files put in docker/weights/ by hand, absent ones being no error
    offline = "0) python3 /app/docker/fetch_weights.py --dest /weights --verify-only --missing-ok ;;"
    assert offline in instructions[verify]
    # partial downloads that reach the build stop it before anything is downloaded
    assert instructions[download].startswith("RUN partial=$(find /weights -name '*.part');")


def test_app_is_compiled_by_the_interpreter_that_runs_it_after_the_last_code_copy():
    """The tasks run ``python3`` (start.sh) as a user who cannot write /app: the build compiles
    every file of /app with that interpreter once the last code is in, hash-checked (valid
    whatever the mtimes), before the verification step imports it as root."""
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    compile_app = instructions.index("RUN python3 -m compileall -q -j 0 --invalidation-mode checked-hash /app")
    last_app_copy = max(i for i, ins in enumerate(instructions) if re.match(r"COPY .* /app/", ins))
    verify = next(i for i, ins in enumerate(instructions) if "fetch_weights.py --dest /weights --verify-only" in ins)
    assert last_app_copy < compile_app < verify
    assert "exec python3 /app/start.py" in (ROOT / "docker" / "start.sh").read_text()
    # image-test.sh builds an image without this one line to measure the start without it
    assert (
        "RUN python3 -m compileall -q -j 0 --invalidation-mode checked-hash /app"
        in (ROOT / "docker" / "image-test.sh").read_text()
    )


def dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker matches it against a context path: ``*`` and ``?``
    within one path component, ``**`` across components; a match on a folder covers its content."""
    assert "[" not in pattern and "\\" not in pattern, f"character classes and escapes are not handled: {pattern}"
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out + "(?:/.*)?")


def dockerignore_excludes(path: str) -> bool:
    """Whether the repository's .dockerignore keeps ``path`` (relative to the context) out of
    the build context: the last pattern that matches decides, ``!`` re-includes."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().removeprefix("/")
        if dockerignore_regex(pattern).fullmatch(path):
            excluded = not negated
    return excluded


def test_partial_downloads_stay_out_of_the_build_context_and_what_is_copied_stays_in():
    """A killed download leaves ``.NAME.XXXX.part`` in docker/weights/ (download_weights.py's
    temp name): `COPY docker/weights /weights` must never see it, while the weights themselves
    and every COPY source stay in the context."""
    assert dockerignore_excludes("docker/weights/.nanodet-plus-m_320_checkpoint.ckpt.k1ll3d_x.part")
    assert dockerignore_excludes("docker/weights/.shufflenetv2_x1-5666bf0f80.pth.a8b9c0d1.part")
    assert not dockerignore_excludes("docker/weights/nanodet-plus-m_320_checkpoint.ckpt")
    assert not dockerignore_excludes("docker/weights/README.md")
    text = (ROOT / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    assert [s for s in sources if dockerignore_excludes(s)] == []
    # the matcher itself: the patterns already there mean what Docker makes of them
    assert dockerignore_excludes("nanodet/model/__pycache__/head.cpython-311.pyc")
    assert dockerignore_excludes("tests/test_image_layout.py") and dockerignore_excludes(".venv/bin/python")
    assert not dockerignore_excludes("nanodet/model/head.py") and not dockerignore_excludes("testsuite.py")


def test_the_image_runs_the_torch_the_tests_run():
    """One torch version, pinned in docker/constraints.txt: pyproject's range holds it, this
    suite runs it, and the image installs it under the constraints and checks it."""
    import tomllib

    import torch
    from packaging.specifiers import SpecifierSet

    pins = dict(
        line.split("==") for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines() if "==" in line
    )
    pinned = pins["torch"]
    assert torch.__version__.split("+")[0] == pinned
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_range = next(d for d in deps if d.startswith("torch"))
    assert pinned in SpecifierSet(torch_range.removeprefix("torch"))
    install = next(ins for ins in dockerfile_instructions((ROOT / "Dockerfile").read_text()) if '"$torch"' in ins)
    assert 'pip install -c /tmp/constraints.txt ${index:-} "$torch"' in install
    assert "is not the pinned" in install


def test_start_sh_runs_start_py(tmp_path):
    script = (ROOT / "docker" / "start.sh").read_text()
    assert "python3 /app/start.py" in script
    # run it with /app pointing at this checkout: a missing env.yaml is a config error (rc 1)
    patched = script.replace("/app/start.py", f"{ROOT}/start.py --in {tmp_path}/in --out {tmp_path}/out")
    (tmp_path / "start.sh").write_text(patched)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # python3 = ours
    proc = subprocess.run(["bash", str(tmp_path / "start.sh")], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert "env.yaml not found" in proc.stderr
    assert (tmp_path / "out" / "monitor.txt").read_text().split("\t")[3] == "4"


def test_results_are_readable_by_other_users(tmp_path):
    """Atomic writes go through mkstemp (0600): results must get the normal mode back."""
    from nanodet.utils.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.yaml", "a: 1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "r.yaml").stat().st_mode & 0o777 == 0o644
