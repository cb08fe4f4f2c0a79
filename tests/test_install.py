"""The wheel as a scientist installs it: built from this tree, installed into a fresh venv
beside a JupyterLab of another minor version than the one constraints.txt pins (with no extras:
the server extension is enabled on install, so it must work with the core dependencies), and
both Jupyter extensions work there: listed enabled and OK, and a real ``jupyter lab`` from that
venv answers paraconnect's REST and serves the panel's code.

pip downloads from the index on a cold cache; later runs reuse pip's cache."""

from __future__ import annotations

import email.parser
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import paraconnect

from .helpers_jupyter import start_jupyter

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(110)]


def _pinned_minor(package: str) -> tuple[int, int]:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            major, minor, *_ = version.split(".")
            return int(major), int(minor)
    raise AssertionError(f"constraints.txt pins no {package}")


def _run(*args: str, env: dict[str, str], timeout: float = 90) -> str:
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stdout}{out.stderr}"
    return ANSI.sub("", out.stdout + out.stderr)


@pytest.fixture(scope="module")
def other_lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A fresh venv with the built wheel and a JupyterLab one minor version older than the
    pinned one; its bin directory, that JupyterLab's version and the wheel."""
    tmp = tmp_path_factory.mktemp("install")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
         str(REPO), env=env)  # fmt: skip
    [wheel] = (tmp / "dist").glob("paraconnect-*.whl")
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", str(venv), env=env)
    major, minor = _pinned_minor("jupyterlab")
    assert minor > 0, "pick another JupyterLab for this test: the pinned one is x.0"
    spec = f"jupyterlab>={major}.{minor - 1},<{major}.{minor}"
    _run(str(venv / "bin" / "pip"), "install", "-q", str(wheel), spec, env=env, timeout=100)
    version = _run(
        str(venv / "bin" / "python"), "-c", "import jupyterlab; print(jupyterlab.__version__)",
        env=env,
    ).strip()  # fmt: skip
    assert version.startswith(f"{major}.{minor - 1}."), version
    return venv / "bin", version, wheel


def test_wheel_metadata_says_what_it_is(other_lab: tuple[Path, str, Path]) -> None:
    """What PyPI and JupyterLab's Extension Manager read: the summary, the classifiers, where
    the project lives, the licence (in the wheel), and ranges rather than pins."""
    with zipfile.ZipFile(other_lab[2]) as whl:
        names = whl.namelist()
        [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(whl.read(meta_name).decode())
    classifiers = meta.get_all("Classifier") or []
    for wanted in ("Framework :: Jupyter", "Framework :: Jupyter :: JupyterLab :: 4",
                   "Framework :: Jupyter :: JupyterLab :: Extensions :: Prebuilt"):  # fmt: skip
        assert wanted in classifiers, classifiers
    assert "JupyterLab" in meta["Summary"] and "ParaView" in meta["Summary"]
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues"} <= set(urls), urls
    assert meta["License-Expression"] == "BSD-3-Clause" and meta["License-File"] == "LICENSE"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    requires = meta.get_all("Requires-Dist") or []
    assert not [r for r in requires if "==" in r.split(";")[0]], requires
    core = {re.split(r"[<>=;\[ ]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r}
    assert {"jupyter-server", "pyzmq", "ipywidgets"} <= core, core
    # The description opens with what it is.
    assert meta.get_payload().lstrip().startswith("# paraconnect\n\n**paraconnect lets you")


def test_both_extensions_work_beside_another_jupyterlab(
    other_lab: tuple[Path, str, Path], tmp_path: Path
) -> None:
    bin_dir, lab_version, _wheel = other_lab
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("VIRTUAL_ENV", None)
    jupyter = str(bin_dir / "jupyter")

    server_ext = _run(jupyter, "server", "extension", "list", env=env)
    assert re.search(r"paraconnect\.jupyter\s+enabled", server_ext), server_ext
    assert re.search(r"paraconnect\.jupyter\s+OK", server_ext), server_ext

    lab_ext = _run(jupyter, "labextension", "list", env=env)
    [line] = [ln for ln in lab_ext.splitlines() if ln.strip().startswith("paraconnect ")]
    # An "X" instead of "OK" is JupyterLab refusing the prebuilt panel (shared package ranges).
    assert f"v{paraconnect.__version__}" in line and "enabled" in line and "OK" in line, lab_ext
    assert "not compatible" not in lab_ext, lab_ext

    with start_jupyter(tmp_path, env=env, program=(jupyter, "lab", "--no-browser")) as lab:
        hub = lab.api("GET", "hub")
        assert hub.status == 200, hub.body
        assert lab.api("GET", "hub", token=False).status == 403
        assert lab.ok("GET", "sessions") == []
        page = lab.request("GET", "lab")
        assert page.status == 200
        config = re.search(rb'id="jupyter-config-data"[^>]*>(.*?)</script>', page.body, re.S)
        assert config is not None
        data = json.loads(config.group(1))
        assert data["appVersion"] == lab_version
        [ext] = [e for e in data["federated_extensions"] if e["name"] == "paraconnect"]
        entry = lab.request("GET", f"lab/extensions/paraconnect/{ext['load']}")
        assert entry.status == 200 and b"paraconnect" in entry.body
