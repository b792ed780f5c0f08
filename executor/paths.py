"""Where things are: the platform's paths on this machine, the outputs' confinement to /out,
and the image's own files.

In the container the platform's paths are what they say (``/in/...``, ``/out/...``). For
local runs (``start.py --in DIR --out DIR``) every path in env.yaml and in the index files
that starts with ``/in`` or ``/out`` is moved under those folders.

Every output is written under ``output.root_dir``, which is ``/out`` or a folder under it:
an env.yaml naming an output path anywhere else is refused (300001) before anything is
written. Paths are compared as written, ``..`` collapsed, links not followed (the platform
may make ``/out/tensorboard`` a link to a folder it mounts).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .protocol import OutputPaths

APP_ROOT = Path(__file__).resolve().parent.parent  # /app in the image
OUT_ROOT = "/out"
MONITOR_NAME = "monitor.txt"
# env.yaml ``output`` keys the executor writes to (``executor_log_file`` belongs to the platform)
WRITTEN_OUTPUTS = (
    "monitor_file",
    "models_dir",
    "tensorboard_dir",
    "training_result_file",
    "mining_result_file",
    "infer_result_file",
)


@dataclass(frozen=True)
class PathMapper:
    in_dir: Path = Path("/in")
    out_dir: Path = Path("/out")

    def __call__(self, path: str | Path) -> Path:
        text = str(path)
        for prefix, target in (("/in", self.in_dir), ("/out", self.out_dir)):
            if text == prefix or text.startswith(prefix + "/"):
                return target / text[len(prefix) :].lstrip("/")
        return Path(text)


def normal_path(path: str) -> str:
    """``path`` with ``.``, ``..`` and repeated slashes collapsed, without looking at the disk."""
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


def is_under(path: str, root: str) -> bool:
    """Whether the absolute platform path ``path`` is ``root`` or inside it."""
    path, root = normal_path(path), normal_path(root)
    return path.startswith("/") and (path == root or path.startswith(root.rstrip("/") + "/"))


def output_root(output: OutputPaths) -> str:
    """``output.root_dir`` when it is /out or under it, else /out."""
    return normal_path(output.root_dir) if is_under(output.root_dir, OUT_ROOT) else OUT_ROOT


def monitor_path(output: OutputPaths) -> str:
    """Where monitor.txt is written: ``output.monitor_file``, or ``monitor.txt`` in the output root
    when that is not under it (then :func:`check_output_paths` fails and says so)."""
    root = output_root(output)
    return output.monitor_file if is_under(output.monitor_file, root) else posixpath.join(root, MONITOR_NAME)


def check_output_paths(output: OutputPaths, source: str = "env.yaml") -> None:
    """ConfigError (300001) naming the key and the path when ``output.root_dir`` is not /out or
    under it, or an output path is not under ``output.root_dir``."""
    monitor = monitor_path(output)
    note = f"; this failure is recorded in {monitor} instead" if monitor != output.monitor_file else ""
    if not is_under(output.root_dir, OUT_ROOT):
        raise ConfigError(
            f"{source}: key 'output.root_dir': {output.root_dir!r} is not {OUT_ROOT} or a folder under it{note}"
        )
    root = output_root(output)
    for key in WRITTEN_OUTPUTS:
        value = getattr(output, key)
        if not is_under(value, root):
            raise ConfigError(f"{source}: key 'output.{key}': {value!r} is not under the output root {root}{note}")


def bundled_configs() -> list[Path]:
    """The model configs in the image's ``config/`` folder."""
    return sorted((APP_ROOT / "config").glob("*.yml"))


def model_config_path(config_file: str) -> Path:
    """``config_file`` names a file in the image's ``config/`` folder (no other paths)."""
    name = Path(config_file).name
    path = APP_ROOT / "config" / name
    if not path.is_file() or Path(config_file).parent not in (Path("."), Path("config")):
        available = ", ".join(p.name for p in bundled_configs())
        raise ConfigError(
            f"config.yaml: key 'config_file': {config_file!r} is not a bundled model config ({available})"
        )
    return path
