"""The docs hold together: every relative link and picture in README.md, docs/*.md and the benchmark
history names a file of the repository, and every #anchor a heading of the page it points to; every
benchmark script and result file the README and docs/ name exists."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES = [*DOCS, ROOT / "bench" / "results" / "HISTORY.md"]


def _body(page: Path) -> str:
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, markup and punctuation dropped."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", _body(page), flags=re.M)}


def test_every_relative_link_resolves():
    broken, checked = [], 0
    for page in PAGES:
        body = _body(page)
        for target in re.findall(r"\]\(([^)\s]+)\)", body) + re.findall(r'<img[^>]*src="([^"]+)"', body):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            checked += 1
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target}: no heading #{anchor}")
    assert checked > 20, checked
    assert not broken, "\n".join(broken)


def _expand(path: str) -> list[str]:
    """``detect_run{1,2,3}.json`` -> the three names it stands for."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for part in m.group(1).split(",") for p in _expand(path[: m.start()] + part + path[m.end() :])]


def test_every_benchmark_and_result_named_exists():
    """A command or JSON that the README or docs/ name (``bench/x.py``, ``bench/results/x.json``) is in
    the repository: a renamed or retired script, or a result moved to the history, breaks this."""
    missing, checked = [], 0
    for page in DOCS:
        for name in re.findall(r"\bbench/[\w./{},-]+\.(?:py|sh|json|png)\b", page.read_text()):
            for path in _expand(name):
                checked += 1
                if not (ROOT / path).exists():
                    missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert checked > 20, checked
    assert not missing, "\n".join(missing)
