"""Pieces of the leg-protection tests: a second Unix user (made with useradd), what that user can
reach and read, the listening sockets of an agent's program wherever they live, and running an
agent where no user namespace can be made."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

OTHER = "pcleg-other"
NO_USERNS = [
    # A user namespace of our own whose limit of nested user namespaces is 0 (the limits are per
    # user namespace), then every capability dropped, so that not even a network namespace alone
    # can be made: a host where user namespaces are disabled, as some clusters are.
    "unshare", "-U", "-r", "sh", "-c",
    'echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --bounding-set=-all '
    '--inh-caps=-all -- "$@"', "no-userns",
]  # fmt: skip
# The same limit, capabilities kept: root where user namespaces are disabled, which may still
# make a network namespace alone.
NO_USERNS_ROOT = [
    "unshare", "-U", "-r", "sh", "-c",
    'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "no-userns-root",
]  # fmt: skip


@pytest.fixture(scope="session", name="other_user")
def other_user_fixture() -> Iterator[str]:
    """A second local user, as on any shared login or compute node."""
    if os.geteuid() != 0:
        pytest.skip("needs root to add a second Unix user")
    try:
        pwd.getpwnam(OTHER)
        made = False
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER],
            check=True,
        )
        made = True
    yield OTHER
    if made:
        subprocess.run(["userdel", OTHER], check=False)


_TRY = """
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        out[f"{host}:{port}"] = "refused: " + str(exc)
        continue
    s.settimeout(5)
    try:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    out[f"{host}:{port}"] = "open: " + data.decode(errors="replace")
print(json.dumps(out))
"""


def as_other(user: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "/usr/bin/python3", "-c", code, *args],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip


def other_connects(user: str, targets: list[tuple[str, int]]) -> dict[str, str]:
    """What the other user gets from each target: 'refused: …' or 'open: <its answer>'."""
    proc = as_other(user, _TRY, json.dumps(targets))
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


_CMDLINES = """
import json, os
out = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                out[pid] = fh.read().replace(b"\\0", b" ").decode(errors="replace")
        except OSError:
            pass
print(json.dumps(out))
"""


def others_view_of_cmdlines(user: str, agent: int) -> list[str]:
    """The command lines of the agent and every process under it, as another user reads them
    in /proc (as ps does).  Only those: the machine runs other people's tests too."""
    proc = as_other(user, _CMDLINES)
    assert proc.returncode == 0, proc.stderr
    seen = {int(pid): line for pid, line in json.loads(proc.stdout).items()}
    ours = [agent, *descendants(agent)]
    return [seen[pid] for pid in ours if pid in seen]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def program_listeners(agent: int) -> list[tuple[int, int, str]]:
    """(pid, port, network namespace) of every TCP socket that the descendants of the agent
    (its program, the broker) listen on, read from each process's own /proc/PID/net, which
    shows the namespace it lives in.  The agent's own --listen port is not among them."""
    found = []
    for p in descendants(agent):
        try:
            inodes = {
                os.readlink(f"/proc/{p}/fd/{fd}")[8:-1]
                for fd in os.listdir(f"/proc/{p}/fd")
                if os.readlink(f"/proc/{p}/fd/{fd}").startswith("socket:[")
            }
            netns = os.readlink(f"/proc/{p}/ns/net")
            lines = []
            for name in ("tcp", "tcp6"):
                lines += Path(f"/proc/{p}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue  # it ended meanwhile
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                found.append((p, int(fields[1].rsplit(":", 1)[1], 16), netns))
    return found


def host_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def host_addresses() -> list[str]:
    """The loopback and every IPv4 address of this host (where another host would connect)."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True)
    return [line.split()[3].split("/")[0] for line in out.stdout.splitlines()]


def program_unix_listeners(agent: int, comm: str) -> list[str]:
    """The Unix socket names (``@abstract`` or a path) that the agent's descendant processes
    named `comm` (e.g. Xvfb) listen on."""
    found = []
    for p in descendants(agent):
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() != comm:
                continue
            inodes = {
                os.readlink(f"/proc/{p}/fd/{fd}")[8:-1]
                for fd in os.listdir(f"/proc/{p}/fd")
                if os.readlink(f"/proc/{p}/fd/{fd}").startswith("socket:[")
            }
            lines = Path(f"/proc/{p}/net/unix").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; flags 00010000 = listening
            if len(fields) == 8 and fields[3] == "00010000" and fields[6] in inodes:
                found.append(fields[7])
    return found


_TRY_UNIX = """
import json, socket, sys
out = {}
for name in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\\0" + name[1:] if name.startswith("@") else name)
        out[name] = "open"
    except OSError as exc:
        out[name] = "refused: " + str(exc)
    s.close()
print(json.dumps(out))
"""


def other_connects_unix(user: str, names: list[str]) -> dict[str, str]:
    proc = as_other(user, _TRY_UNIX, json.dumps(names))
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))
