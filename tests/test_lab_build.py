"""The labextension as installed: one version with the Python package, `jupyter labextension
list` shows it enabled, and the installed copy is the one built from labextension/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import paraconnect

REPO = Path(__file__).resolve().parent.parent
JUPYTER = str(Path(sys.executable).with_name("jupyter"))
INSTALLED = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "paraconnect"


def test_package_json_follows_the_python_version() -> None:
    pkg = json.loads((REPO / "labextension" / "package.json").read_text())
    assert pkg["version"] == paraconnect.__version__, (
        "labextension/package.json lags paraconnect/_version.py: run 'jlpm build:prod' in "
        "labextension/ (its build:version step copies the version)"
    )
    built = json.loads((INSTALLED / "package.json").read_text())
    assert built["version"] == paraconnect.__version__


def test_labextension_list_shows_it_enabled(tmp_path: Path) -> None:
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    out = subprocess.run(
        [JUPYTER, "labextension", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    line = next(
        (
            ln
            for ln in (out.stdout + out.stderr).splitlines()
            if ln.strip().startswith("paraconnect ")
        ),
        None,
    )
    assert line is not None, out.stdout + out.stderr
    assert f"v{paraconnect.__version__}" in line and "enabled" in line and "OK" in line, line


def test_installed_copy_is_the_built_one() -> None:
    built = REPO / "paraconnect" / "labextension" / "package.json"
    load = json.loads(built.read_text())["jupyterlab"]["_build"]["load"]
    installed = json.loads((INSTALLED / "package.json").read_text())["jupyterlab"]["_build"]
    assert installed["load"] == load, (
        "the installed labextension is older than the build in paraconnect/labextension: the "
        "editable install copies it; run 'make pytest' (or pip install --no-deps -e .)"
    )
