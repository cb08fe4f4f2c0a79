"""Time from "launch" to "connected" per launcher and server kind, through a real hub; and
ParaView's first render through the hub's tunnel against a direct pvserver.

The hub runs on its own loop thread over a throw-away data directory; each launch enrols its
agent (a key made on the agent's side, a one-time token) and the agent phones home.  The ssh
launcher uses a throw-away sshd on loopback and the Slurm launcher a throw-away single-node
Slurm (the test fixtures' recipes), when their packages are installed.

    python benchmarks/launch.py [--repeat N] [--launchers local,ssh,slurm]
                                [--kinds builtin,command,pvserver] [--no-pv-render]

Medians of N launches (first launch included: no warm-up, that is what a user meets).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paraconnect.hub import Hub  # noqa: E402
from paraconnect.pki import Store  # noqa: E402
from paraconnect.servers import Launcher, LocalLauncher, SlurmLauncher, SshLauncher  # noqa: E402

ECHO = [sys.executable, str(REPO / "tests" / "helpers_echo.py"), "--port", "{port}"]
XVFB = [sys.executable, "-m", "paraconnect.servers._xvfb", "--always", "--"]
PV_CLIENT = str(REPO / "tests" / "paraview" / "pv_client.py")


@contextlib.contextmanager
def launchers(names: list[str], work: Path) -> Iterator[dict[str, Launcher]]:
    out: dict[str, Launcher] = {}
    with contextlib.ExitStack() as stack:
        if "local" in names:
            out["local"] = LocalLauncher(work / "local-runs")
        if "ssh" in names:
            from tests.fixtures_sshd import have_sshd, start_sshd

            if have_sshd():
                sshd = stack.enter_context(start_sshd(work / "sshd"))
                out["ssh"] = SshLauncher(
                    sshd.alias, config_file=sshd.config_file, remote_root=str(work / "ssh-runs")
                )
            else:
                print("ssh: openssh-server not installed; skipped", file=sys.stderr)
        if "slurm" in names:
            from tests.fixtures_slurm import have_slurm, start_slurm

            if have_slurm():
                # The munge socket path must stay short.
                short = Path(tempfile.mkdtemp(prefix="pcb-", dir="/tmp"))
                stack.callback(shutil.rmtree, short, True)
                cluster = stack.enter_context(start_slurm(short))
                out["slurm"] = SlurmLauncher(work / "slurm-jobs", slurm_conf=cluster.conf)
            else:
                print("slurm: slurmctld/slurmd/munge not installed; skipped", file=sys.stderr)
        yield out


def launch_once(hub: Hub, kind: str, launcher: Launcher) -> tuple[float, str, int | None, int]:
    command = ECHO if kind == "command" else []
    options = {"xvfb": "always"} if kind == "pvserver" else {}
    t0 = time.perf_counter()
    info = hub.call(hub.launch, kind, launcher, "bench", "reverse", options, command)
    info = hub.call(hub.wait, info.id, "connected", 120.0)
    elapsed = time.perf_counter() - t0
    if info.state != "connected":
        raise SystemExit(f"{kind} on {launcher.name}: {info.state}: {info.reason}")
    return elapsed, info.id, info.connect_id, info.local_port or 0


def pv_render(port: int, connect_id: int | None, out: Path) -> float:
    argv = [*XVFB, "pvpython"]
    if connect_id:
        argv.append(f"--connect-id={connect_id}")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*argv, PV_CLIENT, "connect", str(port), str(out)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    if f"rendered {out}" not in proc.stdout:
        raise SystemExit("pvpython failed:\n" + proc.stdout[-2000:] + proc.stderr[-2000:])
    return elapsed


def pv_direct(work: Path, out: Path) -> float:
    """pvserver on a loopback port with no tunnel (the same Xvfb wrapper), first render."""
    from paraconnect.tunnel._leg import free_loopback_port

    port = free_loopback_port()
    log = (work / "pvserver-direct.log").open("w")
    proc = subprocess.Popen(
        [*XVFB, "pvserver", f"--sp={port}", "--no-mpi"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while "Accepting connection" not in (work / "pvserver-direct.log").read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("direct pvserver did not start")
            time.sleep(0.05)
        return pv_render(port, None, out)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--launchers", default="local,ssh,slurm")
    ap.add_argument("--kinds", default="builtin,command,pvserver")
    ap.add_argument("--no-pv-render", action="store_true")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if "pvserver" in kinds and not (shutil.which("pvserver") and shutil.which("Xvfb")):
        print("pvserver: paraview/xvfb not installed; skipped", file=sys.stderr)
        kinds.remove("pvserver")
    work = Path(tempfile.mkdtemp(prefix="paraconnect-bench-launch-"))
    os.environ["PARACONNECT_HOME"] = str(work / "home")
    Store().create_session("bench")
    rows: list[tuple[str, str, list[float]]] = []
    pv: dict[str, list[float]] = {}
    try:
        with launchers(args.launchers.split(","), work) as found:
            hub = Hub(work / "home").start_in_thread()
            try:
                for lname, launcher in found.items():
                    for kind in kinds:
                        times = []
                        for _ in range(args.repeat):
                            elapsed, sid, _cid, _port = launch_once(hub, kind, launcher)
                            times.append(elapsed)
                            hub.call(hub.stop, sid, 5.0)
                        rows.append((lname, kind, times))
                        print(f"{lname:6} {kind:9} {statistics.median(times):6.2f} s", flush=True)
                if "pvserver" in kinds and not args.no_pv_render:
                    # One launched pvserver; the agent starts a fresh one for each client.
                    _t, sid, cid, port = launch_once(hub, "pvserver", found["local"])
                    pv["tunnel"] = [
                        pv_render(port, cid, work / f"tunnel{i}.png") for i in range(args.repeat)
                    ]
                    hub.call(hub.stop, sid, 5.0)
            finally:
                hub.stop_thread()
        if "pvserver" in kinds and not args.no_pv_render:
            pv["direct"] = [pv_direct(work, work / f"direct{i}.png") for i in range(args.repeat)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"launch -> connected (median of {args.repeat}; min-max), reverse, enrolled agent")
    print(f"{'launcher':9} {'kind':9} {'median s':>9} {'min s':>7} {'max s':>7}")
    for lname, kind, times in rows:
        med = statistics.median(times)
        print(f"{lname:9} {kind:9} {med:9.2f} {min(times):7.2f} {max(times):7.2f}")
    if pv:
        print()
        print("pvserver first render: pvpython start, connect, sphere, 320x240 screenshot")
        print(f"(median of {args.repeat}; min-max; each client meets a fresh pvserver)")
        for where in ("direct", "tunnel"):
            if where in pv:
                t = pv[where]
                med = statistics.median(t)
                print(f"  {where:7} {med:6.2f} s  ({min(t):.2f}-{max(t):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
