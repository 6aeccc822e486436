"""The files a package and an install carry besides the code (issue 11, item 15): the licence
the metadata declares, a changelog in the Keep a Changelog format, and project URLs that lead
somewhere.
"""

from __future__ import annotations

import hashlib
import re
import tomllib

import pytest

from test_install import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# sha256 of the Apache License 2.0 as the Apache Software Foundation publishes it
# (LICENSE-2.0.txt; Debian ships the same bytes as /usr/share/common-licenses/Apache-2.0).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
SECTIONS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
RELEASE = re.compile(r"^## \[(\d+)\.(\d+)\.(\d+)\] - \d{4}-\d{2}-\d{2}$")


def anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer gives the file's headings (GitHub's and GitLab's rule)."""
    found = set()
    for line in markdown.splitlines():
        if match := re.match(r"^#{1,6} (.+)$", line):
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def test_the_licence_is_the_full_text_of_the_one_declared() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256


def test_the_changelog_keeps_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# Changelog"
    assert "[Keep a Changelog](https://keepachangelog.com/" in text
    versions = [line for line in lines if line.startswith("## ")]
    assert versions[0] == "## [Unreleased]"
    for heading in versions[1:]:
        assert RELEASE.match(heading), heading
    declared = tuple(int(n) for n in PYPROJECT["project"]["version"].split("."))
    for heading in versions[1:]:
        match = RELEASE.match(heading)
        assert match
        assert tuple(int(n) for n in match.groups()) <= declared, heading
    # Each version: known section names, each once, none empty.
    blocks = re.split(r"^## .*$", text, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(versions)
    for version, block in zip(versions, blocks, strict=True):
        names = re.findall(r"^### (.+)$", block, flags=re.MULTILINE)
        assert names, version
        assert len(names) == len(set(names)), version
        assert set(names) <= set(SECTIONS), (version, names)
        for section in re.split(r"^### .*$", block, flags=re.MULTILINE)[1:]:
            assert re.search(r"^- ", section, flags=re.MULTILINE), version


@pytest.mark.parametrize("key", ["Homepage", "Documentation", "Changelog", "Issues"])
def test_each_project_url_leads_somewhere(key: str) -> None:
    value = PYPROJECT["project"]["urls"][key]
    if re.match(r"^https?://[^/]+", value):
        return  # a repository URL, once there is one
    # Until then a path in the repository, and an anchor of a heading in that file.
    path, _, anchor = value.partition("#")
    assert (ROOT / path).is_file(), value
    if anchor:
        assert anchor in anchors((ROOT / path).read_text()), value


@pytest.mark.parametrize("document", ["edge/README.md", "CHANGELOG.md"])
def test_links_within_the_documents_lead_somewhere(document: str) -> None:
    text = (ROOT / document).read_text()
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors(text), anchor
