"""Every relative link in the repository's Markdown resolves: the README is the user's front door, and reports,
plans and the study log point at one another by path; a moved or uncopied file shows here, not to a reader."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    """The tracked Markdown files (git's list; a clone without git falls back to a walk that skips build folders)."""
    try:
        out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / f for f in out.splitlines() if f]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "runs", ".git", "node_modules", "build", "dist"}
        files = [f for f in ROOT.rglob("*.md") if not skip & set(f.relative_to(ROOT).parts)]
    return [f for f in files if f.is_file()]


def broken_links(md: Path) -> list[str]:
    bad = []
    for target in LINK.findall(md.read_text(encoding="utf-8", errors="replace")):
        path = target.split("#", 1)[0]
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path):  # an anchor in the same file, or a URL
            continue
        if not (md.parent / path).exists():
            bad.append(target)
    return bad


def test_the_link_finder_sees_a_broken_link(tmp_path):
    md = tmp_path / "a.md"
    (tmp_path / "there.md").write_text("x")
    md.write_text("[ok](there.md) [anchor](#top) [web](https://example.org/x) ![plot](plots/roc.png) "
                  "[gone](docs/missing.md#part)")
    assert broken_links(md) == ["plots/roc.png", "docs/missing.md#part"]


def test_the_readme_is_among_the_files_checked():
    assert ROOT / "README.md" in markdown_files()


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(md):
    assert broken_links(md) == [], f"{md.relative_to(ROOT)} links to files that are not there"
