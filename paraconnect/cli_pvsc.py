"""``paraconnect pvsc``: a ParaView server-configuration file (``.pvsc``) for the desktop GUI,
so that a ParaView user's "File → Connect" starts or reaches a pvserver through paraconnect.

Entries, for session S:

- each pvserver of S the hub has connected now: ``cs://127.0.0.1:PORT`` (its local endpoint),
  started by hand (it runs already);
- "new pvserver (LAUNCHER)": ParaView's command startup runs ``paraconnect launch pvserver
  --session S --launcher LAUNCHER ... --wait --relay-port $PV_SERVER_PORT$`` and connects to
  ``cs://127.0.0.1:PORT`` (a loopback port free when the file was written; ParaView passes it
  as ``$PV_SERVER_PORT$``).  The hub's local endpoint port is its own choice, so once the
  server is connected the command listens on ParaView's port, leaves a relay behind and exits;
  ParaView (``delay='-1'``) connects only then: it does not retry a refused connection.  The
  relay lets this user only in, relays one client and stops the server when that client
  leaves: pvserver ends with its client anyway, and its state with it.

The hub must run (``paraconnect hub`` or JupyterLab) when ParaView starts the entry.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from ._cli_common import Command, add_commands
from .errors import ConfigError, NetworkError

if TYPE_CHECKING:
    from ._cli_common import Subparsers

RELAY_ACCEPT_TIMEOUT = 300.0  # how long a started server waits for ParaView to connect


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", default="default", metavar="S")
    p.add_argument("--launcher", default="local", metavar="NAME", help="for the new-server entry")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then more 'launch' options")


def add_parsers(sub: Subparsers) -> None:
    add_commands(sub, _COMMANDS)


def entry_name(session: str, what: str) -> str:
    return f"paraconnect {session}: {what}"


def pvsc_xml(
    session: str,
    launcher: str,
    servers: Sequence[dict[str, Any]],
    launch_args: Sequence[str] = (),
    paraconnect: str | None = None,
    port: int = 0,
) -> str:
    """The .pvsc text (see the module's docstring)."""
    exe = paraconnect or str(Path(sys.executable).with_name("paraconnect"))
    port = port or _free_port()
    lines = ["<Servers>"]
    for info in servers:
        if info.get("kind") != "pvserver" or info.get("state") != "connected":
            continue
        if not info.get("local"):
            continue
        name = entry_name(session, f"{info['id']} (running)")
        lines += [
            f"  <Server name={quoteattr(name)} resource={quoteattr('cs://' + info['local'])}>",
            "    <ManualStartup/>",
            "  </Server>",
        ]
    args = ["launch", "pvserver", "--session", session, "--launcher", launcher,
            *launch_args, "--wait", "--relay-port", "$PV_SERVER_PORT$"]  # fmt: skip
    name = entry_name(session, f"new pvserver ({launcher})")
    resource = f"cs://127.0.0.1:{port}"
    lines += [
        # No <Options>: ParaView would ask for them in a dialog; it sets $PV_SERVER_PORT$ from
        # the resource by itself.
        # timeout: ParaView retries the connection that long while the job starts.
        f"  <Server name={quoteattr(name)} resource={quoteattr(resource)} timeout='300'>",
        "    <CommandStartup>",
        # delay -1: ParaView connects once the command has exited, and the command exits when
        # the server is connected and the relay listens.
        f"      <Command exec={quoteattr(exe)} delay='-1'>",
        "        <Arguments>",
        *(f"          <Argument value={quoteattr(a)}/>" for a in args),
        "        </Arguments>",
        "      </Command>",
        "    </CommandStartup>",
        "  </Server>",
        "</Servers>",
    ]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    """A loopback port free now, for the new-server entry (the user may change it in
    ParaView's server settings should it be taken when they connect)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pvsc(args: argparse.Namespace) -> int:
    from .hub import HubClient

    rest = list(args.rest)
    if rest and rest[0] == "--":
        rest = rest[1:]
    with HubClient() as hub:
        servers = [s for s in hub.request("servers") if s.get("session") == args.session]
    text = pvsc_xml(args.session, args.launcher, servers, rest)
    if args.output:
        from ._fs import write_atomic

        write_atomic(Path(args.output), text.encode(), mode=0o644)
        new = entry_name(args.session, f"new pvserver ({args.launcher})")
        print(
            f"wrote {args.output}: load it in ParaView (File > Connect > Load Servers) or run: "
            f"paraview --servers-file {shlex.quote(args.output)} --server {shlex.quote(new)}"
        )
    else:
        sys.stdout.write(text)
    return 0


def relay_listener(port: int) -> socket.socket:
    """127.0.0.1:`port`, listening: before ParaView connects (it does not retry a refusal)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        listener.close()
        raise ConfigError(
            f"cannot listen on 127.0.0.1:{port} for ParaView ({exc.strerror}); write the .pvsc "
            "again ('paraconnect pvsc') or change the entry's port in ParaView"
        ) from None
    listener.listen(4)
    return listener


def relay(
    listener: socket.socket, target: tuple[str, int], timeout: float = RELAY_ACCEPT_TIMEOUT
) -> None:
    """Take one connection of this user on `listener`, relay it to `target` until both
    directions end."""
    from .servers import pump_both
    from .tunnel import peer_uid

    listener.settimeout(timeout)
    client = None
    try:
        while client is None:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                raise NetworkError("no ParaView client came in time") from None
            try:
                same = peer_uid(conn) == os.getuid()
            except OSError:
                same = False
            if same:
                client = conn
            else:
                conn.close()  # another local user: never relayed to our server
    finally:
        listener.close()
    with client, socket.create_connection(target, timeout=30) as upstream:
        upstream.settimeout(None)
        client.settimeout(None)
        pump_both(client, upstream)


def relay_in_background(port: int, target: tuple[str, int], on_end: Callable[[], None]) -> None:
    """Listen now, then relay in a child process of its own session and return: ParaView's
    command startup (``delay='-1'``) connects once this command has exited, so the listener
    must already be there, and the relay must outlive the command.  `on_end` runs in the child
    once the client left (or never came)."""
    listener = relay_listener(port)
    print(f"paraconnect: ParaView may connect to cs://127.0.0.1:{port}", flush=True)
    if os.fork() != 0:
        listener.close()
        return
    code = 0
    try:
        os.setsid()  # not ended with ParaView's startup command
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Nothing of the caller's: ParaView's QProcess waits for its pipes to close.
        keep = listener.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        try:
            relay(listener, target)
        finally:
            on_end()
    except BaseException:  # a forked child must never return into the caller
        code = 1
    finally:
        os._exit(code)


_COMMANDS = (
    Command(
        "pvsc",
        "write a ParaView server configuration (.pvsc) whose entries go through paraconnect",
        _pvsc,
        (_args,),
        description="Entries: each connected pvserver of the session, and one that launches a "
        "new pvserver (arguments after '--' go to 'paraconnect launch pvserver').  Load it in "
        "ParaView: File > Connect > Load Servers, or 'paraview --servers-file FILE --server NAME'.",
    ),
)
