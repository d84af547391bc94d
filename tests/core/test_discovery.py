"""Plugin discovery through real entry points of real (test) distributions.

The distributions under tests/core/dists are pip-installed into a temporary directory and
discovery runs in a fresh interpreter with that directory on its path — no monkeypatching.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DISTS = Path(__file__).parent / "dists"
BIN = Path(sys.executable).parent


def _install(target: Path, *names: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--target",
                    str(target), *(str(DISTS / n) for n in names)], check=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _install(target, "sheaf-test-echo", "sheaf-test-broken", "sheaf-test-echo-twin")
    return target


def _run(site: Path, code: str, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(site), **(env or {})},
                            check=True)
    return json.loads(result.stdout)


def _plugins_cli(site: Path, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run([str(BIN / "sheaf-server"), "plugins", "--json"],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(site), **(env or {})})
    return json.loads(result.stdout)


def test_builtin_plugin_registers_time_series_and_baseline() -> None:
    from sheaf_core import discover

    registry = discover()
    assert registry.contracts["time_series"].plugin.distribution == "sheaf-core"
    assert registry.backends["baseline"].plugin.distribution == "sheaf-core"


def test_broken_plugin_is_reported_and_the_others_work(site: Path) -> None:
    listing = _plugins_cli(site)
    broken = next(p for p in listing["plugins"] if p["name"] == "broken")
    assert broken["distribution"] == "sheaf-test-broken"
    assert broken["version"] == "0.3.0"
    assert "ModuleNotFoundError" in broken["error"]
    assert "sheaf_dependency_that_is_not_installed" in broken["error"]
    assert {"baseline", "twin-only"} <= set(listing["backends"])
    assert listing["model_types"]["echo"]["distribution"] == "sheaf-test-echo"


def test_duplicate_backend_is_an_error_naming_both_distributions(site: Path) -> None:
    listing = _plugins_cli(site)
    assert "echo" not in listing["backends"]
    problem = listing["problems"]["echo"]
    assert "sheaf-test-echo 1.2.3" in problem and "sheaf-test-echo-twin 0.0.1" in problem


def test_a_spec_needing_a_broken_or_duplicate_backend_fails_with_the_stored_error(
        site: Path) -> None:
    out = _run(site, """
import json
from sheaf_core import ModelSpec, build_backend, ConfigError
errors = {}
for backend in ("echo", "broken", "nope"):
    try:
        build_backend(ModelSpec(name="m", backend=backend))
    except ConfigError as exc:
        errors[backend] = str(exc)
print(json.dumps(errors))
""")
    assert "registered by both" in out["echo"]
    assert "failed to load" in out["broken"] and "ModuleNotFoundError" in out["broken"]
    assert "unknown backend 'nope'" in out["nope"] and "sheaf-test-broken" in out["nope"]


def test_disabling_a_plugin_by_name_skips_it_before_import(site: Path) -> None:
    listing = _plugins_cli(site, {"SHEAF_DISABLE_PLUGINS": "broken,echo_twin"})
    names = {p["name"] for p in listing["plugins"]}
    assert {"core", "echo"} <= names
    assert not names & {"broken", "echo_twin"}
    assert listing["backends"]["echo"]["distribution"] == "sheaf-test-echo"


def test_a_third_party_modality_is_served_by_the_union_of_requests(site: Path) -> None:
    out = _run(site, """
import json
from sheaf_core import discover
adapter = discover(disabled=["echo_twin"]).request_adapter
a = adapter.validate_python({"model_type": "echo", "text": "abc"})
b = adapter.validate_python({"model_type": "time_series", "history": [1, 2], "horizon": 1})
print(json.dumps([type(a).__name__, type(b).__name__]))
""")
    assert out == ["EchoRequest", "TimeSeriesRequest"]


def test_plugin_discovery_imports_no_heavy_library() -> None:
    code = ("import sys, json; from sheaf_core import discover; r = discover(); "
            "print(json.dumps(sorted(m for m in ('torch', 'chronos', 'fastapi', 'ray', "
            "'numpy', 'transformers', 'xarray', 'zarr', 'fsspec') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == []


def test_misspelled_hook_is_reported() -> None:
    from sheaf_core import discover

    class Typo:
        __name__ = "typo"

        def sheaf_register_backend(self, register):  # missing "s"
            raise AssertionError("never called")

    from sheaf_core.hookspecs import hookimpl

    Typo.sheaf_register_backend = hookimpl(Typo.sheaf_register_backend)
    registry = discover([Typo()])
    typo = next(p for p in registry.plugins if p.name == "typo")
    assert "unknown hook 'sheaf_register_backend'" in (typo.error or "")
