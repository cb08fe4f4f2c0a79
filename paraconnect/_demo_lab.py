"""`paraconnect demo`: the quickstart notebook, in JupyterLab or headless.

- ``paraconnect demo`` copies ``01-quickstart.ipynb`` into ``./paraconnect-demo/`` and opens it in
  JupyterLab (a ``jupyter lab`` subprocess; Ctrl-C stops it).
- ``paraconnect demo --headless --out picture.png`` runs the same notebook with nbclient (a real
  kernel, no browser) and leaves the picture that came through the tunnel.

Both use a data directory of their own (the demo never touches the user's sessions), and the
kernel embeds its hub there when the Jupyter server runs none: the embedded default, local
launcher, built-in renderer, reverse connection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._proc import end_process
from .errors import ConfigError, NetworkError

__all__ = ["open_lab", "run_headless"]

QUICKSTART = "01-quickstart.ipynb"


def find_notebook(name: str = QUICKSTART) -> Path:
    """The notebook shipped in the wheel (paraconnect/notebooks) or beside a source checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "notebooks", here.parent / "notebooks"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(
        f"cannot find the notebook {name} beside paraconnect ({here}); reinstall paraconnect"
    )


def _private_home(prefix: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o700)
    return home


def _cell_failure(exc: Any) -> str:
    # nbclient's CellExecutionError carries the kernel's exception name and value.
    name, value = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return f"{name}: {value}".strip()


def run_headless(out: str | None, dataset: str = "wavelet", keep: bool = False) -> int:
    try:
        import nbclient
        import nbformat
    except ImportError as exc:
        raise ConfigError(
            f"the headless demo needs nbclient: pip install 'paraconnect[jupyter]' ({exc})"
        ) from None
    picture = Path(out or "paraconnect-demo.png").absolute()
    home = _private_home("paraconnect-demo-")
    work = home / "work"
    work.mkdir()
    notebook = work / QUICKSTART
    shutil.copyfile(find_notebook(), notebook)
    # The kernel inherits this environment: the demo's data directory and the notebook's inputs.
    os.environ.update(
        PARACONNECT_HOME=str(home),
        PARACONNECT_NOTEBOOK_OUT=str(picture),
        PARACONNECT_NOTEBOOK_DATASET=dataset,
        JUPYTER_PLATFORM_DIRS="1",
    )
    print(f"running {QUICKSTART} headless (data in {home})", flush=True)
    from jupyter_client.manager import KernelManager

    book = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
    # IPC sockets in the 0700 data directory rather than Jupyter's default: TCP without
    # encryption, which any local user could reach.
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(home / "kernel"))
    client = nbclient.NotebookClient(
        book, km=kernel, timeout=300, resources={"metadata": {"path": str(work)}}
    )
    try:
        client.execute()
    except Exception as exc:  # a failed cell, or a kernel that died: one line, and the notebook
        nbformat.write(book, notebook)  # type: ignore[no-untyped-call]
        keep = True
        raise NetworkError(
            f"the quickstart notebook failed ({_cell_failure(exc).splitlines()[0]}); the "
            f"executed notebook is {notebook}"
        ) from exc
    finally:
        # nbclient leaves a kernel it was given running: shut it down so that its exit hooks
        # (the embedded hub stops its servers) run.
        if kernel.has_kernel:
            kernel.shutdown_kernel()
        if keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    for cell in book.cells:
        for output in cell.get("outputs", []):
            text = output.get("text") or ""
            if text and output.get("name") == "stdout":
                print(text, end="" if text.endswith("\n") else "\n")
    if not picture.is_file():
        raise NetworkError(f"the notebook ran but wrote no picture at {picture}")
    print(f"picture: {picture}")
    print("done: a session, a server that phoned home, and a picture through mutual TLS.")
    return 0


def open_lab(workdir: str | None = None, browser: bool = True) -> int:
    """Copy the quickstart into `workdir` and run JupyterLab on it until Ctrl-C."""
    folder = Path(workdir or "paraconnect-demo").absolute()
    folder.mkdir(exist_ok=True)
    target = folder / QUICKSTART
    if not target.exists():
        shutil.copyfile(find_notebook(), target)
    home = folder / "paraconnect-home"
    home.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "PARACONNECT_HOME": str(home), "JUPYTER_PLATFORM_DIRS": "1"}
    argv = [sys.executable, "-m", "jupyterlab", QUICKSTART]
    if not browser:
        argv.append("--no-browser")
    if os.geteuid() == 0:
        # Containers and CI machines often run as root; Jupyter refuses that unless told.
        argv.append("--allow-root")
    print(f"opening {target} in JupyterLab (data in {home}); Ctrl-C stops it", flush=True)
    try:
        proc = subprocess.Popen(argv, cwd=folder, env=env)
    except OSError as exc:
        raise ConfigError(f"cannot start JupyterLab: {exc}; pip install jupyterlab") from exc
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return end_process(proc, 30)
