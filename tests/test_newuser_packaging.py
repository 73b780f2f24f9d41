"""The three distributions ship the MIT license, and their long descriptions (the READMEs
PyPI shows) hold no relative link, which would be broken there."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = (ROOT, ROOT / "integrations" / "langchain", ROOT / "integrations" / "litellm")
_RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)]*)\)")


def test_the_repository_license_is_mit_with_its_copyright_line() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the costledger authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


@pytest.mark.parametrize("project", PROJECTS[1:], ids=lambda p: p.name)
def test_each_integration_has_an_exact_copy_next_to_its_pyproject(project: Path) -> None:
    # hatchling puts LICEN[CS]E* found next to pyproject.toml in the wheel; the integrations
    # are built from their own directories, so each needs its copy.
    assert (project / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert 'license = "MIT"' in (project / "pyproject.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_the_long_description_has_no_relative_link(project: Path) -> None:
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert _RELATIVE_LINK.findall(readme) == []


@pytest.mark.slow
@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_the_built_wheel_contains_the_license(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="building a wheel offline needs hatchling")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*build, "-w", str(tmp_path), str(project)],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert len(licenses) == 1, names
        assert archive.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert "License-Expression: MIT" in text
    assert "License-File: LICENSE" in text
    assert _RELATIVE_LINK.findall(text) == []
