"""The docs hold together: every relative link and picture in README.md and docs/*.md names a
file of the repository, and every #anchor a heading of the page it points to."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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
