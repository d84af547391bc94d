"""Each package is publishable on its own. It declares exactly what it imports (deptry,
against each package's own pyproject): nothing works only because the development venv
happens to hold it — `sheaf-server[ray]` once failed on a clean install for want of httpx;
what a package needs without importing it (a binary, a library another one loads) is
listed, with why, under `[tool.deptry.per_rule_ignores]` in its pyproject. It has one
version, the license text and the metadata an index page shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPTRY = Path(sys.executable).parent / "deptry"
PACKAGES = ["sheaf-core", "sheaf-server", "sheaf-batch", "plugins/sheaf-backend-chronos",
            "plugins/sheaf-diffusers", "plugins/sheaf-backend-flux",
            "plugins/sheaf-backend-sdxl", "plugins/sheaf-backend-graphcast"]


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_declares_what_it_imports_and_uses_what_it_declares(package: str) -> None:
    ran = subprocess.run([str(DEPTRY), "src", "--no-ansi"], cwd=ROOT / package,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_sheaf_core_pulls_neither_torch_ray_nor_fastapi() -> None:
    """`pip install sheaf-core sheaf-backend-chronos` must stay light on the core side."""
    text = (ROOT / "sheaf-core" / "pyproject.toml").read_text()
    declared = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    for heavy in ("torch", "ray", "fastapi", "uvicorn", "diffusers"):
        assert f'"{heavy}' not in declared


def test_each_package_has_one_version_read_from_its_code() -> None:
    """The version lives in the package's `__version__` only; pyproject reads it."""
    from importlib.metadata import version

    for package in PACKAGES:
        text = (ROOT / package / "pyproject.toml").read_text()
        assert 'dynamic = ["version"]' in text and "\nversion =" not in text, package
        module = text.split('[tool.hatch.version]\npath = "', 1)[1].split('"', 1)[0]
        code = (ROOT / package / module).read_text()
        written = code.split('__version__ = "', 1)[1].split('"', 1)[0]
        assert version(Path(package).name) == written, package


def test_dev_prints_help_without_setting_anything_up(tmp_path: Path) -> None:
    """`./dev --help` and `./dev test --help` answer at once, exit 0, and never start the
    (long) setup — shown by running them from a copy of the script with no venv beside it."""
    script = tmp_path / "dev"
    script.write_text((ROOT / "dev").read_text())
    for args, wanted in ((["--help"], "./dev serve"), (["test", "--help"], "./dev test")):
        ran = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                             timeout=30, cwd=tmp_path)
        assert ran.returncode == 0 and wanted in ran.stdout, ran.stderr
    assert not (tmp_path / ".venv").exists()
    assert subprocess.run(["bash", str(script), "nope"], capture_output=True,
                          timeout=30).returncode == 2


def test_every_package_ships_the_license_and_release_metadata(tmp_path: Path) -> None:
    """Apache-2.0's text at the root, in every package folder (so every wheel and sdist
    carries it), and the metadata an index page shows; one wheel built to prove it."""
    import zipfile

    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    for package in PACKAGES:
        assert (ROOT / package / "LICENSE").read_text() == license_text, package
        text = (ROOT / package / "pyproject.toml").read_text()
        for field in ("authors = ", "keywords = ", "classifiers = ", '"Typing :: Typed"'):
            assert field in text, (package, field)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(ROOT / "sheaf-core"), "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("sheaf_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "Classifier: Typing :: Typed" in metadata


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_readme_stands_alone_on_an_index_page(package: str) -> None:
    """An index page shows the README without the repository around it: no relative link,
    an install line, an example."""
    import re

    text = (ROOT / package / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert all(link.startswith("https://") for link in links), links
    assert "pip install" in text and "```" in text and "Apache-2.0" in text


@pytest.mark.parametrize("folders", [["tests/server", "tests/plugins/chronos"],
                                     ["tests/plugins", "tests/server"],
                                     ["tests/batch", "tests/server"],
                                     ["tests/server/test_http.py", "tests/plugins/flux"]])
def test_any_set_of_test_folders_collects_on_its_own(folders: list[str]) -> None:
    """Test modules import their helpers from modules named for them (hosts.py,
    cli_support.py, ...), never `from conftest import`: two folders' conftest modules share
    one name, and a run over both once failed to collect."""
    ran = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *folders],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "error" not in ran.stdout.splitlines()[-1], ran.stdout[-2000:]
    assert not any(line.startswith("from conftest import")
                   for path in (ROOT / "tests").rglob("test_*.py")
                   for line in path.read_text().splitlines())
