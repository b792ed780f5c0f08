"""Where the platform's absolute paths live on this machine.

In the container they are what they say (``/in/...``, ``/out/...``). For local runs
(``start.py --in DIR --out DIR``) every path in env.yaml and in the index files that
starts with ``/in`` or ``/out`` is moved under those folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PathMapper:
    in_dir: Path = Path("/in")
    out_dir: Path = Path("/out")

    def __call__(self, path: str | Path) -> Path:
        text = str(path)
        for prefix, target in (("/in", self.in_dir), ("/out", self.out_dir)):
            if text == prefix or text.startswith(prefix + "/"):
                return target / text[len(prefix):].lstrip("/")
        return Path(text)
