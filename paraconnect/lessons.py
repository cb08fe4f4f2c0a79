"""Helpers of the lesson notebooks (``notebooks/01`` to ``04``), so that their cells show the
lesson and nothing else.

Each lesson starts with a check of what it needs (``check_renderer``, ``check_paraview``,
``check_slurm``) that says, when something is missing, the one line that fixes it.  The rest
plays the parts a lesson needs but does not teach: a friend on this machine (``Friend``, with
a data directory of her own), pvpython with a display (``ParaViewClient``), and where
``paraconnect demo`` wants its picture (``demo_choices``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .api import Server
    from .render import Frame

__all__ = [
    "Friend",
    "Missing",
    "ParaViewClient",
    "check_paraview",
    "check_renderer",
    "check_slurm",
    "demo_choices",
]


class Missing(ConfigError):
    """Something this lesson needs is not here; the message ends with the line that fixes it."""


def check_renderer() -> None:
    """The built-in renderer (VTK) and the widgets."""
    absent = [m for m in ("vtk", "ipywidgets", "anywidget") if importlib.util.find_spec(m) is None]
    if absent:
        raise Missing(
            f"this lesson needs {', '.join(absent)}; in a terminal of this environment run: "
            "pip install 'paraconnect[jupyter,render]'"
        )
    print("ready: the built-in renderer (VTK) and the widgets are installed")


def demo_choices(dataset: str, picture: str) -> tuple[str, str]:
    """`dataset` and `picture`, unless ``paraconnect demo --dataset/--out`` chose others."""
    return (
        os.environ.get("PARACONNECT_NOTEBOOK_DATASET", dataset),
        os.environ.get("PARACONNECT_NOTEBOOK_OUT", picture),
    )


# -- 02: a friend on this machine ---------------------------------------------------------------


class Friend:
    """A friend played on this machine: her own data directory, her own ``paraconnect``
    commands (what she would type on her laptop)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = Path(tempfile.mkdtemp(prefix=f"paraconnect-{name}-"))
        self._env = {**os.environ, "PARACONNECT_HOME": str(self.folder / "home")}
        self._tunnels: list[subprocess.Popen[str]] = []

    def run(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "paraconnect.cli", *args], env=self._env, input=stdin,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ConfigError(f"{self.name}'s 'paraconnect {args[0]}' failed: {done.stderr}")
        return done.stdout

    def node_id(self) -> str:
        """What ``paraconnect unique-id`` prints on her machine."""
        return self.run("unique-id").split()[-1]

    def import_bundle(self, path: Path | str | None, passphrase: str) -> None:
        """She saves the bundle you sent and types the passphrase you told her."""
        if path is None:
            raise ConfigError("give the bundle's file: pc.share(..., out=FOLDER) writes one")
        self.run("import", str(path), "--passphrase-file", "-", stdin=passphrase + "\n")

    def connect(self, address: str, session: str) -> int:
        """``paraconnect connect ADDRESS --creds SESSION``: her tunnel; returns its local port."""
        tunnel = subprocess.Popen(
            [sys.executable, "-m", "paraconnect.cli", "connect", address, "--creds", session,
             "--local", "127.0.0.1:0", "--json"],
            env=self._env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._tunnels.append(tunnel)
        assert tunnel.stdout is not None  # noqa: S101 - asked for above
        line = tunnel.stdout.readline()
        if not line:
            raise ConfigError(f"{self.name}'s tunnel ended: {tunnel.communicate()[1][-2000:]}")
        return int(json.loads(line)["local"].rsplit(":", 1)[1])

    def render(self, port: int, picture: Path | str, dataset: str = "sphere") -> Frame:
        """Her own picture of your server, through her tunnel."""
        from .render import RenderClient

        with RenderClient(port=port, timeout=60) as client:
            client.load(dataset)
            return client.save_png(picture)

    def can_render(self, port: int) -> bool:
        from .errors import ParaconnectError
        from .render import RenderClient

        try:
            with RenderClient(port=port, timeout=10) as client:
                client.load("sphere")
                client.render()
        except ParaconnectError:
            print(f"{self.name} is refused")
            return False
        return True

    def close(self) -> str:
        """End her tunnels; the last lines her side logged."""
        said = []
        for tunnel in self._tunnels:
            tunnel.terminate()
            said += tunnel.communicate(timeout=60)[1].splitlines()[-2:]
        self._tunnels.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        return "\n".join(said)


# -- 03: ParaView -------------------------------------------------------------------------------


class ParaViewClient:
    """pvpython with a display: the one set, else a virtual one (Xvfb) that :meth:`close`
    stops."""

    def __init__(self) -> None:
        self.display = os.environ.get("DISPLAY") or ""
        self._xvfb: subprocess.Popen[bytes] | None = None
        if not self.display:
            read_end, write_end = os.pipe()
            # -displayfd: Xvfb picks a free display itself and writes its number there.
            self._xvfb = subprocess.Popen(
                ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", "-noreset"],
                pass_fds=[write_end], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            os.close(write_end)
            with os.fdopen(read_end) as numbers:
                self.display = ":" + numbers.readline().strip()

    def run(self, script: Path | str, server: Server, picture: Path | str) -> str:
        """``pvpython SCRIPT PORT PICTURE`` against `server`'s local endpoint."""
        cid = [f"--connect-id={server.connect_id}"] if server.connect_id else []
        done = subprocess.run(
            ["pvpython", *cid, str(script), str(server.port), str(picture)],
            env={**os.environ, "DISPLAY": self.display}, capture_output=True, text=True,
            timeout=150, check=False,
        )  # fmt: skip
        if not Path(picture).is_file():
            raise ConfigError(
                f"pvpython wrote no picture: {done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return str(picture)

    def close(self) -> None:
        if self._xvfb is not None:
            self._xvfb.terminate()
            self._xvfb.wait(30)
            self._xvfb = None


def check_paraview() -> ParaViewClient:
    """pvserver and pvpython on PATH, and a display for pvpython (or Xvfb to make one)."""
    if not (shutil.which("pvserver") and shutil.which("pvpython")):
        raise Missing(
            "this lesson needs ParaView's pvserver and pvpython on PATH; on Debian or Ubuntu: "
            "sudo apt-get install paraview"
        )
    if not os.environ.get("DISPLAY") and not shutil.which("Xvfb"):
        raise Missing(
            "pvpython needs a display and none is set (DISPLAY); a virtual one will do: "
            "sudo apt-get install xvfb"
        )
    print("ready: pvserver, pvpython and a display for pvpython")
    return ParaViewClient()


# -- 04: Slurm ----------------------------------------------------------------------------------


def check_slurm() -> dict[str, Any]:
    """Slurm's clients here and a cluster that answers; returns the launcher's options, from
    PARACONNECT_SLURM_CONF, PARACONNECT_SLURM_PARTITION and PARACONNECT_SLURM_JOB_ROOT."""
    if not shutil.which("sbatch"):
        raise Missing(
            "this lesson needs Slurm's commands (sbatch, squeue) where Jupyter runs: run it on "
            "the cluster's login node, or: sudo apt-get install slurm-client"
        )
    conf = os.environ.get("PARACONNECT_SLURM_CONF")
    env = {**os.environ, **({"SLURM_CONF": conf} if conf else {})}
    try:
        answer = subprocess.run(
            ["sinfo", "--noheader", "--format=%P"], env=env, capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
        partitions = answer.stdout.split() if answer.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        partitions = []
    if not partitions:
        raise Missing(
            "no Slurm cluster answers here (sinfo failed); name your cluster's slurm.conf "
            "before starting Jupyter: export PARACONNECT_SLURM_CONF=/etc/slurm/slurm.conf"
        )
    partition = os.environ.get("PARACONNECT_SLURM_PARTITION") or partitions[0].rstrip("*")
    print(f"ready: Slurm answers; the job goes to partition {partition}")
    options = {
        "slurm_conf": conf,
        "partition": os.environ.get("PARACONNECT_SLURM_PARTITION"),
        "job_root": os.environ.get(
            "PARACONNECT_SLURM_JOB_ROOT", str(Path.home() / "paraconnect-jobs")
        ),
        "time": "00:30:00",  # longer than the hub's first wall-time warning (10 min)
    }
    return {key: value for key, value in options.items() if value}
