"""The project's documentation holds together: every document the code points at exists, every
relative link in README.md and docs/ reaches a file (and a heading, when it names one), and
nothing points at a document outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_TEXT_SUFFIXES = {".py", ".mjs", ".js", ".ts", ".tsx", ".md", ".graphql", ".json", ".toml", ""}


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [ROOT / name for name in listed]
    return [f for f in files if f.suffix in _TEXT_SUFFIXES and f.is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_the_four_documents_exist() -> None:
    for name in ("architecture", "protocol", "security", "local-cloud"):
        assert (ROOT / "docs" / f"{name}.md").is_file()


def test_every_document_the_code_points_at_exists() -> None:
    pointed = set()
    for path in tracked_text_files():
        pointed.update(re.findall(r"\bdocs/[a-z-]+\.md", path.read_text(errors="replace")))
    assert pointed, "no file points at docs/: the pattern is wrong"
    missing = sorted(p for p in pointed if not (ROOT / p).is_file())
    assert missing == []


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_reach_a_file_and_heading(doc: str) -> None:
    source = ROOT / doc
    text = re.sub(r"```.*?```", "", source.read_text(), flags=re.S)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path_part, _, anchor = target.partition("#")
        linked = (source.parent / path_part).resolve() if path_part else source
        exists = linked.exists()
        if not exists or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


def test_nothing_refers_to_a_document_outside_the_repository() -> None:
    # Built from parts, so this file does not match itself.
    needles = ["DESIGN" + ".md", "../" + "shared", "research" + "/"]
    hits = [
        f"{path.relative_to(ROOT)}: {needle}"
        for path in tracked_text_files()
        for needle in needles
        if needle in path.read_text(errors="replace")
    ]
    assert hits == []
