"""The README and docs/ point only at what an install holds: every relative
link reaches a file `git archive` keeps (CONTRIBUTING.md aside, for those
with a clone), and every #anchor names a heading of the file it points into."""

import re
import subprocess

import pytest

from conftest import ROOT

DOCUMENTS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def shipped():
    """The paths an install from git holds (.gitattributes' export-ignore left out)."""
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    ignored = subprocess.run(["git", "check-attr", "export-ignore", "--stdin"], cwd=ROOT, input="\n".join(out),
                             capture_output=True, text=True, check=True).stdout
    dropped = {line.split(":")[0] for line in ignored.splitlines() if line.endswith(": set")}
    return {path for path in out if path not in dropped}


def anchors(path):
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#") and " " in line:
            title = line.split(" ", 1)[1].strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_link_reaches_a_file_an_install_holds(document):
    kept = shipped()
    for target in LINK.findall(document.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        relative = str(path.relative_to(ROOT))
        if relative != "CONTRIBUTING.md":
            assert relative in kept, f"{document.name} links {target}, which an install does not hold"
        if anchor:
            assert anchor in anchors(path), f"{document.name} links {target}: no such heading"


def test_the_readme_is_for_users():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 600
