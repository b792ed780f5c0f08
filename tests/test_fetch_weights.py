"""docker/fetch_weights.py against a real local HTTP server: good files land, bad ones fail loudly
and leave nothing in --dest."""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import torch

from nanodet.config import BackboneConfig, load_config
from nanodet.model import build_model
from nanodet.model.backbone import ShuffleNetV2

from .conftest import ROOT
from .old_checkpoints import save_lightning_checkpoint
from .test_image_layout import dockerignore_excludes

SCRIPT = "docker/fetch_weights.py"
PLUS_CONFIG = "config/nanodet-plus-m_320.yml"
SHORT = "/short/"  # served with a Content-Length larger than the body sent
STALL = "/stall/"  # half the body sent, then nothing until the test releases it
PUBLISHED_320 = ("f4c6080f3ef35a64c3030d559438b436462f227ce29700bca71327203e42dea2", 35_470_891)


@dataclass
class Payload:
    """Pickles as a call to ``exec`` that writes ``marker``: loading it would run code."""

    marker: str

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder quietly; under /short/ it promises more bytes than it sends; under
    /stall/ it sends half the body and then waits for ``release``."""

    release = threading.Event()

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        prefix = next((p for p in (SHORT, STALL) if self.path.startswith(p)), None)
        if prefix is None:
            return super().do_GET()
        body = (Path(self.directory) / self.path.removeprefix(prefix)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if prefix == STALL:
            self.release.wait(timeout=300)
        self.close_connection = True


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that stops reading (a failed write on its side) is no error of the server's."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, folder: Path) -> None:
        self.httpd = QuietServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def torchvision_like(model_size: str) -> dict[str, torch.Tensor]:
    """A ShuffleNetV2 state dict with the classifier keys torchvision's files also hold."""
    state = ShuffleNetV2(BackboneConfig(model_size=model_size, pretrain=False)).state_dict()
    state.update(
        {
            "conv5.0.weight": torch.zeros(1024, 192, 1, 1),
            "conv5.1.weight": torch.ones(1024),
            "fc.weight": torch.zeros(1000, 1024),
            "fc.bias": torch.zeros(1000),
        }
    )
    return state


def lightning_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """The official Plus .ckpt layout: raw and EMA copies of the full model."""
    return {
        "state_dict": {**{f"model.{k}": v for k, v in state.items()}, **{f"avg_model.{k}": v for k, v in state.items()}}
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The files the server offers, and the server."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("served")
    torch.save(torchvision_like("0.5x"), folder / "backbone-0.5x.pth")
    torch.save(torchvision_like("1.5x"), folder / "backbone-1.5x.pth")
    full = build_model(load_config(ROOT / PLUS_CONFIG).model.arch).state_dict()
    torch.save(lightning_checkpoint(full), folder / "coco.ckpt")
    no_aux = {k: v for k, v in full.items() if not k.startswith(("aux_fpn.", "aux_head."))}
    torch.save(lightning_checkpoint(no_aux), folder / "coco-no-aux.ckpt")
    server = Server(folder)
    yield folder, server.url
    server.stop()


def backbone_entry(url: str, sha: str, file_name: str = "shufflenetv2_x0.5-f707e7126e.pth") -> dict:
    return {
        "name": "shufflenetv2-0.5x",
        "url": url,
        "file_name": file_name,
        "kind": "imagenet-backbone",
        "sha256": sha,
        "model_size": "0.5x",
    }


def coco_entry(url: str, name: str = "nanodet-plus-m_320", sha: str | None = None) -> dict:
    return {
        "name": name,
        "url": url,
        "file_name": f"{name}_checkpoint.ckpt",
        "kind": "coco-checkpoint",
        "sha256": sha,
        "config": PLUS_CONFIG,
    }


def fetch(tmp_path: Path, entries: list[dict], *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the script as the image build does, on a manifest of ``entries``; (process, dest)."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(entries))
    dest = tmp_path / "weights"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, SCRIPT, "--dest", str(dest), "--manifest", str(manifest), "--timeout", "10", *extra]
    proc = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return proc, dest


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "ERROR" in line]


def assert_failed_clean(proc: subprocess.CompletedProcess, dest: Path) -> str:
    """Non-zero exit, nothing in dest (no temp files either); returns the error lines."""
    assert proc.returncode == 1, proc.stderr
    assert not dest.exists() or not list(dest.iterdir()), list(dest.iterdir())
    errors = error_lines(proc)
    assert errors, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return "\n".join(errors)


def test_good_files_land_with_their_hash_printed(served, tmp_path):
    folder, url = served
    backbone_sha, coco_sha = sha256(folder / "backbone-0.5x.pth"), sha256(folder / "coco.ckpt")
    entries = [backbone_entry(url + "backbone-0.5x.pth", backbone_sha[:10]), coco_entry(url + "coco.ckpt")]
    proc, dest = fetch(tmp_path, entries)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == [
        "nanodet-plus-m_320_checkpoint.ckpt",
        "shufflenetv2_x0.5-f707e7126e.pth",
    ]
    assert sha256(dest / "nanodet-plus-m_320_checkpoint.ckpt") == coco_sha
    assert backbone_sha in proc.stderr and coco_sha in proc.stderr
    assert "all 887 tensors" in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(f"done: 2 downloaded, 0 already present, 0 failed, in {dest}")


def test_only_fetches_the_named_entries_and_replaces_a_copy_that_fails(served, tmp_path):
    folder, url = served
    entries = [
        backbone_entry(url + "backbone-0.5x.pth", sha256(folder / "backbone-0.5x.pth")),
        coco_entry(url + "missing.ckpt"),
    ]
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "shufflenetv2_x0.5-f707e7126e.pth").write_bytes(b"not the file")
    proc, dest = fetch(tmp_path, entries, "--only", "shufflenetv2-0.5x")
    assert proc.returncode == 0, proc.stderr
    assert "present in" in proc.stderr and "downloading it again" in proc.stderr
    assert [p.name for p in dest.iterdir()] == ["shufflenetv2_x0.5-f707e7126e.pth"]
    assert sha256(dest / "shufflenetv2_x0.5-f707e7126e.pth") == sha256(folder / "backbone-0.5x.pth")


def test_wrong_hash_fails_and_leaves_nothing(served, tmp_path):
    _, url = served
    proc, dest = fetch(tmp_path, [backbone_entry(url + "backbone-0.5x.pth", "f707e7126e")])
    errors = assert_failed_clean(proc, dest)
    assert "shufflenetv2_x0.5-f707e7126e.pth" in errors and "sha256" in errors and "f707e7126e" in errors
    assert "retrying" not in proc.stderr  # a verification error is not retried


def test_short_read_against_content_length_fails_and_leaves_nothing(served, tmp_path):
    folder, url = served
    entry = coco_entry(url + SHORT.strip("/") + "/coco.ckpt", sha=sha256(folder / "coco.ckpt"))
    proc, dest = fetch(tmp_path, [entry])
    errors = assert_failed_clean(proc, dest)
    assert "nanodet-plus-m_320_checkpoint.ckpt" in errors and "truncated" in errors and "Content-Length" in errors
    assert "retrying once" in proc.stderr  # a network error is retried once


def test_checkpoints_of_another_architecture_fail_naming_what_does_not_fit(served, tmp_path):
    folder, url = served
    entries = [
        backbone_entry(url + "backbone-1.5x.pth", sha256(folder / "backbone-1.5x.pth")[:10]),
        coco_entry(url + "coco-no-aux.ckpt"),
    ]
    proc, dest = fetch(tmp_path, entries)
    errors = assert_failed_clean(proc, dest).splitlines()
    assert len(errors) == 2
    assert "shufflenetv2_x0.5-f707e7126e.pth" in errors[0] and "does not fit this ShuffleNetV2" in errors[0]
    assert "needs" in errors[0]  # the shapes
    assert "nanodet-plus-m_320_checkpoint.ckpt" in errors[1] and "missing from the file (e.g. aux_" in errors[1]
    assert "2 failed" in proc.stderr.splitlines()[-1]


def test_a_pickle_that_would_run_code_is_refused(served, tmp_path):
    folder, url = served
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload(str(marker))}, folder / "evil.ckpt")
    proc, dest = fetch(tmp_path, [coco_entry(url + "evil.ckpt")])
    errors = assert_failed_clean(proc, dest)
    assert "nanodet-plus-m_320_checkpoint.ckpt" in errors
    assert "refused" in errors or "not a weights-only pickle" in errors, errors
    assert not marker.exists()


def test_404_fails_naming_the_url(served, tmp_path):
    _, url = served
    proc, dest = fetch(tmp_path, [coco_entry(url + "nowhere.ckpt")])
    errors = assert_failed_clean(proc, dest)
    assert "404" in errors and url + "nowhere.ckpt" in errors
    assert "retrying" not in proc.stderr


def test_files_already_present_are_verified_not_downloaded(served, tmp_path):
    folder, _ = served
    server = Server(folder)
    server.stop()  # a download would now fail
    entries = [backbone_entry(server.url + "backbone-0.5x.pth", sha256(folder / "backbone-0.5x.pth")[:10])]
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "shufflenetv2_x0.5-f707e7126e.pth").write_bytes((folder / "backbone-0.5x.pth").read_bytes())
    proc, dest = fetch(tmp_path, entries)
    assert proc.returncode == 0, proc.stderr
    assert "already present" in proc.stderr and "0 downloaded, 1 already present" in proc.stderr
    assert [p.name for p in dest.iterdir()] == ["shufflenetv2_x0.5-f707e7126e.pth"]


def test_a_bad_manifest_stops_before_downloading(tmp_path):
    entry = {**coco_entry("ftp://example.invalid/x.ckpt"), "config": "config/none.yml", "colour": "red"}
    proc, dest = fetch(tmp_path, [entry])
    assert proc.returncode == 2 and "unknown fields ['colour']" in proc.stderr
    del entry["colour"]
    proc, dest = fetch(tmp_path, [entry])
    assert proc.returncode == 2
    assert "not an http(s) URL" in proc.stderr and "config/none.yml" in proc.stderr
    assert not dest.exists()


def _docker_module(name: str):
    sys.path.insert(0, str(ROOT / "docker"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "docker"))


def test_default_manifest_covers_the_bundled_plus_configs():
    from nanodet.weights.imagenet import IMAGENET_BACKBONES

    fetch_weights, download_weights = _docker_module("fetch_weights"), _docker_module("download_weights")
    entries = download_weights.read_manifest(ROOT / "docker" / "weights.json")
    download_weights.check_entries(entries, fetch_weights.entry_problems)
    configs = sorted(e.config for e in entries if e.kind == "coco-checkpoint")
    assert configs == sorted(f"config/{p.name}" for p in (ROOT / "config").glob("nanodet-plus-*.yml"))
    assert all(e.file_name.startswith(Path(e.config).stem) for e in entries if e.config)
    # the list the stdlib-only build step reads is the library's own list of ImageNet files
    backbones = {e.model_size: (e.url, e.file_name, e.sha256) for e in entries if e.kind == "imagenet-backbone"}
    assert backbones == {k: (w.url, w.file_name, w.sha256_prefix) for k, w in IMAGENET_BACKBONES.items()}


def test_release_format_checkpoint_verifies(served, tmp_path):
    """A Lightning 1.4 file as the official release holds it (callbacks keyed by class): the
    strict fit of the build passes, no Lightning needed."""
    folder, url = served
    full = build_model(load_config(ROOT / PLUS_CONFIG).model.arch).state_dict()
    save_lightning_checkpoint(full, folder / "release.ckpt", "1.4.9")
    proc, dest = fetch(tmp_path, [coco_entry(url + "release.ckpt")])
    assert proc.returncode == 0, proc.stderr
    assert f"all 887 tensors, ckpt (EMA weights)); sha256 {sha256(folder / 'release.ckpt')}" in proc.stderr
    assert f"{(folder / 'release.ckpt').stat().st_size} bytes" in proc.stderr


def test_an_unreachable_host_is_tried_once_and_named(served, tmp_path):
    """No network to one source: no retry, no second file tried from it, one line saying which
    source was reachable and how to build without the other (no retry, so no back-off wait)."""
    folder, url = served
    down = Server(folder)
    down.stop()  # nothing listens on this port any more: connection refused
    entries = [
        coco_entry(down.url + "coco.ckpt"),
        coco_entry(down.url + "coco.ckpt", name="nanodet-plus-m_416"),
        backbone_entry(url + "backbone-0.5x.pth", sha256(folder / "backbone-0.5x.pth")[:10]),
    ]
    proc, dest = fetch(tmp_path, entries)
    assert proc.returncode == 1 and "retrying" not in proc.stderr, proc.stderr
    host = down.url.split("/")[2]
    errors = error_lines(proc)
    assert len(errors) == 1 and f"cannot reach {host}" in errors[0] and "not trying the other files" in errors[0]
    summary = next(line for line in proc.stderr.splitlines() if "no network to some sources" in line)
    assert f"cannot reach {host}" in summary and "2 files not fetched" in summary
    assert f"reachable: {url.split('/')[2]} (1 files)" in summary
    hint = proc.stderr.splitlines()[-2]
    assert "--build-arg FETCH_WEIGHTS=0" in hint and "docker/weights/" in hint
    assert [p.name for p in dest.iterdir()] == ["shufflenetv2_x0.5-f707e7126e.pth"]


def test_download_step_needs_only_the_standard_library(served, tmp_path):
    """The build's download layer runs before any code is copied: it imports no torch, numpy or
    nanodet; --mirror serves the listed file names from elsewhere; --verify-only then checks."""
    folder, url = served
    (folder / "shufflenetv2_x0.5-f707e7126e.pth").write_bytes((folder / "backbone-0.5x.pth").read_bytes())
    entry = backbone_entry("https://download.invalid/models/shufflenetv2_x0.5-f707e7126e.pth", "")
    entry["sha256"] = sha256(folder / "backbone-0.5x.pth")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([entry]))
    dest = tmp_path / "weights"
    code = (
        "import sys; sys.path.insert(0, 'docker'); import download_weights as d; "
        f"rc = d.main(['--dest', {str(dest)!r}, '--manifest', {str(manifest)!r}, '--mirror', {url!r}]); "
        "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'nanodet', 'yaml'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "0 []", proc.stdout + proc.stderr
    assert "(verified after the code)" in proc.stderr
    assert sha256(dest / "shufflenetv2_x0.5-f707e7126e.pth") == entry["sha256"]

    proc, _ = fetch(tmp_path, [entry], "--verify-only")
    assert proc.returncode == 0 and "fits ShuffleNetV2 0.5x" in proc.stderr, proc.stderr
    (dest / "shufflenetv2_x0.5-f707e7126e.pth").unlink()
    proc, _ = fetch(tmp_path, [entry], "--verify-only")
    assert proc.returncode == 1 and "not in" in proc.stderr and "did not fetch it" in proc.stderr


def download_command(dest: Path, *extra: str) -> list[str]:
    """The image build's download step (stdlib only) as a command line."""
    return [sys.executable, "docker/download_weights.py", "--dest", str(dest), "--timeout", "10", *extra]


def write_manifest(tmp_path: Path, entries: list[dict]) -> Path:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(entries))
    return manifest


def test_the_published_320_checkpoint_is_pinned_and_another_file_under_its_name_is_refused(served, tmp_path):
    """docker/weights.json holds the public record of nanodet-plus-m_320_checkpoint.ckpt (sha256
    and size): a mirror serving any other file under that name fails the download step."""
    download_weights = _docker_module("download_weights")
    entry = next(e for e in download_weights.read_manifest(ROOT / "docker" / "weights.json") if e.name.endswith("_320"))
    assert entry.name == "nanodet-plus-m_320" and (entry.sha256, entry.size) == PUBLISHED_320
    folder, url = served
    stand_in = folder / "nanodet-plus-m_320_checkpoint.ckpt"
    stand_in.write_bytes((folder / "coco.ckpt").read_bytes())
    dest = tmp_path / "weights"
    command = download_command(dest, "--only", "nanodet-plus-m_320", "--mirror", url)
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    errors = assert_failed_clean(proc, dest)
    assert f"sha256 {sha256(stand_in)} does not start with the expected {PUBLISHED_320[0]}" in errors


def test_a_full_disk_is_named_not_reported_as_an_unexpected_error(served, tmp_path, monkeypatch, capsys):
    """The temp file's writes go to /dev/full, where the kernel answers ENOSPC as a full disk
    does: the error names the folder, says the disk is full and where it is mounted, with the
    file's size; nothing is left in --dest and a full disk is not retried as a network error."""
    download_weights = _docker_module("download_weights")
    real_open = open

    def onto_a_full_disk(path, mode="r", *args, **kwargs):
        return real_open("/dev/full" if "w" in mode else path, mode, *args, **kwargs)

    monkeypatch.setattr(download_weights, "open", onto_a_full_disk, raising=False)
    folder, url = served
    size = (folder / "coco.ckpt").stat().st_size
    entry = {**coco_entry(url + "coco.ckpt", sha=sha256(folder / "coco.ckpt")), "size": size}
    dest = tmp_path / "weights"
    rc = download_weights.main(["--dest", str(dest), "--manifest", str(write_manifest(tmp_path, [entry]))])
    err = capsys.readouterr().err
    assert rc == 1, err
    (line,) = [line for line in err.splitlines() if "ERROR" in line]
    assert f"ERROR nanodet-plus-m_320_checkpoint.ckpt: cannot write it in {dest}: the disk is full" in line
    assert "no space left on device" in line and f"the file is {size / 2**20:.1f} MiB" in line
    mount = re.search(r"the filesystem mounted at (\S+) \(\d+ MiB free;", line)
    assert mount and os.path.ismount(mount[1]) and dest.resolve().is_relative_to(mount[1]), line
    assert "unexpected" not in err and "retrying" not in err
    assert list(dest.iterdir()) == []


def test_a_quota_error_is_named_too(tmp_path):
    download_weights = _docker_module("download_weights")
    message = str(download_weights.write_error("cannot write it", tmp_path, OSError(errno.EDQUOT, "quota"), 2**20))
    assert f"cannot write it in {tmp_path}: the disk is over its quota (disk quota exceeded)" in message
    assert "; the file is 1.0 MiB)" in message
    message = str(download_weights.write_error("cannot write it", tmp_path, OSError(errno.EACCES, "Permission denied")))
    assert message == f"cannot write it in {tmp_path}: Permission denied"


def wait_for(condition, what: str, timeout_s: float = 120.0):
    """Poll ``condition`` until it returns something true (a safety net, not a speed bound)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def test_a_killed_download_leaves_a_partial_file_that_is_never_baked_and_the_next_run_removes(served, tmp_path):
    """SIGKILL mid-download (nothing can clean up): the hidden .part file stays in --dest, the
    .dockerignore keeps it out of a build context, and the next run removes it and installs."""
    folder, url = served
    entry = coco_entry(url + STALL.strip("/") + "/coco.ckpt", sha=sha256(folder / "coco.ckpt"))
    dest = tmp_path / "weights"
    manifest = write_manifest(tmp_path, [entry])
    Handler.release.clear()
    proc = subprocess.Popen(download_command(dest, "--manifest", str(manifest)), cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        chunk = _docker_module("download_weights").CHUNK

        def partial_written():
            return [p for p in dest.glob(".*.part") if p.stat().st_size >= chunk] if dest.is_dir() else []

        (partial,) = wait_for(partial_written, "a megabyte of the download on disk")
        proc.kill()
        proc.wait(timeout=60)
    finally:
        proc.kill()
        Handler.release.set()
    assert [p.name for p in dest.iterdir()] == [partial.name]
    assert re.fullmatch(r"\.nanodet-plus-m_320_checkpoint\.ckpt\.\w+\.part", partial.name)
    assert dockerignore_excludes(f"docker/weights/{partial.name}")

    manifest = write_manifest(tmp_path, [{**entry, "url": url + "coco.ckpt"}])
    rerun = subprocess.run(
        download_command(dest, "--manifest", str(manifest)), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"removed {partial.name}: a partial download left by an interrupted run" in rerun.stderr
    assert [p.name for p in dest.iterdir()] == ["nanodet-plus-m_320_checkpoint.ckpt"]


def test_files_put_in_by_hand_are_verified_in_an_offline_build(served, tmp_path):
    """FETCH_WEIGHTS=0 runs --verify-only --missing-ok: a listed name is checked as a download is
    (the listed hash, the model of its config); listed files not there are no error."""
    folder, url = served
    entries = [
        backbone_entry(url + "x", sha256(folder / "backbone-0.5x.pth")[:10]),
        coco_entry(url + "x"),
        coco_entry(url + "x", name="nanodet-plus-m_416"),
        coco_entry(url + "x", name="nanodet-plus-m-1.5x_320"),
    ]
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "shufflenetv2_x0.5-f707e7126e.pth").write_bytes((folder / "backbone-1.5x.pth").read_bytes())
    (dest / "nanodet-plus-m_320_checkpoint.ckpt").write_bytes((folder / "coco.ckpt").read_bytes())
    (dest / "nanodet-plus-m_416_checkpoint.ckpt").write_bytes((folder / "coco-no-aux.ckpt").read_bytes())
    (dest / "README.md").write_text("not weights")
    proc, _ = fetch(tmp_path, entries, "--verify-only", "--missing-ok")
    assert proc.returncode == 1, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 2, errors
    assert "shufflenetv2_x0.5-f707e7126e.pth" in errors[0]
    assert f"sha256 {sha256(folder / 'backbone-1.5x.pth')} does not start with the expected" in errors[0]
    assert "nanodet-plus-m_416_checkpoint.ckpt" in errors[1] and "missing from the file (e.g. aux_" in errors[1]
    assert f"ok nanodet-plus-m_320_checkpoint.ckpt: fits {PLUS_CONFIG} (all 887 tensors" in proc.stderr
    assert f"not in {dest} (none downloaded): nanodet-plus-m-1.5x_320_checkpoint.ckpt" in proc.stderr
    assert "README.md" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(
        f"1 verified, 2 failed, in {dest} (shufflenetv2_x0.5-f707e7126e.pth, nanodet-plus-m_416_checkpoint.ckpt)"
    )
    (dest / "shufflenetv2_x0.5-f707e7126e.pth").unlink()
    (dest / "nanodet-plus-m_416_checkpoint.ckpt").unlink()
    proc, _ = fetch(tmp_path, entries, "--verify-only", "--missing-ok")
    assert proc.returncode == 0 and "done: 1 verified, 0 failed" in proc.stderr, proc.stderr


def test_unlisted_files_are_checked_as_the_training_of_their_config_loads_them(served, tmp_path):
    """A weights file docker/weights.json does not name is what a training task of the config
    its name starts with would start from: it must fit that model's body, and a file no config
    name matches would never be used."""
    folder, url = served
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "nanodet-plus-m_320-finetuned.ckpt").write_bytes((folder / "coco.ckpt").read_bytes())
    wide = build_model(load_config(ROOT / "config" / "nanodet-plus-m-1.5x_416.yml").model.arch).state_dict()
    torch.save(lightning_checkpoint(wide), dest / "nanodet-plus-m_416-mine.pth")
    (dest / "yolo.pt").write_bytes((folder / "coco.ckpt").read_bytes())
    (dest / "notes.txt").write_text("not weights")
    proc, _ = fetch(tmp_path, [coco_entry(url + "x")], "--verify-only", "--missing-ok")
    assert proc.returncode == 1, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 2, errors
    assert "nanodet-plus-m_416-mine.pth: config/nanodet-plus-m_416.yml:" in errors[0]
    assert "backbone and neck tensors fit" in errors[0]
    assert "yolo.pt: not in docker/weights.json and its name starts with no bundled model config's name" in errors[1]
    assert "rename or remove it" in errors[1]
    ok = "ok nanodet-plus-m_320-finetuned.ckpt: not listed; fits config/nanodet-plus-m_320.yml as its training start"
    assert ok in proc.stderr and sha256(folder / "coco.ckpt") in proc.stderr
    assert "notes.txt" not in proc.stderr
