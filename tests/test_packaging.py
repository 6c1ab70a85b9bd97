"""What pip installs is what the checkout has: every module, subpackage, recipe, page
file and sample of bpcli/ is in the wheel (a normal install, not -e)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shipped_sources():
    """bpcli's files as the repository holds them (git's list when there is one)."""
    try:
        out = subprocess.run(["git", "ls-files", "bpcli"], cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    if not out:
        out = [str(p.relative_to(REPO)) for p in (REPO / "bpcli").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    return sorted(out)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of a copy of the checkout (building writes build/ and egg-info beside the source)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in shipped_sources():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    wheel, = out.glob("bp-*.whl")
    return wheel


def test_the_wheel_holds_every_file_of_the_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        inside = set(z.namelist())
    missing = [name for name in shipped_sources() if name not in inside]
    assert missing == []
    assert "bpcli/fast/__init__.py" in inside and "bpcli/samples/seven.png" in inside


def test_the_wheel_holds_nothing_but_the_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/")[0] for name in z.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"bpcli"}
