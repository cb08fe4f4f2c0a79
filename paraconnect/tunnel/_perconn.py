"""A program started afresh for each connection (inetd style): the connection is one end of a
socketpair on its stdin and stdout (the private leg at its most private: no address at all),
and the peer identity that TLS proved is in its environment:

``PARACONNECT_PEER_NAME``, ``_ROLE``, ``_SESSION_ID``, ``_UNIQUE_ID``, ``_SERIAL``,
``_SHA256``, ``_NOT_AFTER``, ``_TLS_VERSION``, ``_CIPHER``, ``_ADDR`` (absent when unknown,
e.g. at level none).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc

from ..errors import ConfigError, NetworkError
from ..tls import PeerIdentity

__all__ = ["PerConnection", "peer_environment"]

log = logging.getLogger("paraconnect.tunnel")

GRACE = 5.0


def peer_environment(peer: PeerIdentity, where: str) -> dict[str, str]:
    env = {
        f"PARACONNECT_PEER_{key.upper()}": str(value)
        for key, value in peer.as_dict().items()
        if value is not None
    }
    env["PARACONNECT_PEER_ADDR"] = where
    return env


class PerConnection:
    """Run `command` once per connection. `run()` must be running (it reaps the processes)."""

    def __init__(
        self, command: Sequence[str], *, env: dict[str, str] | None = None, grace: float = GRACE
    ) -> None:
        if not command:
            raise ConfigError("no program given: put its command line after '--'")
        self.command = list(command)
        self.name = Path(command[0]).name
        self.extra_env = env or {}
        self.grace = grace
        self.endpoint = None
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started(None)
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    async def connect(self, peer: PeerIdentity, where: str) -> socket.socket:
        tg = self._tg
        if tg is None:
            raise NetworkError(f"program {self.name!r} is not being served")
        ours, theirs = socket.socketpair()
        env = {**os.environ, **self.extra_env, **peer_environment(peer, where)}
        try:
            proc = await anyio.open_process(
                self.command,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=None,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise NetworkError(f"cannot start program {self.command[0]!r}: {exc}") from exc
        except BaseException:
            ours.close()  # cancelled
            raise
        finally:
            theirs.close()
        log.info("started %s (pid %d) for %s at %s", self.name, proc.pid, peer.label, where)
        tg.start_soon(self._reap, proc, peer.label)
        return ours

    async def _reap(self, proc: anyio.abc.Process, label: str) -> None:
        try:
            code = await proc.wait()
        finally:
            with anyio.CancelScope(shield=True):
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    with anyio.move_on_after(self.grace):
                        await proc.wait()
                    if proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        await proc.wait()
                await proc.aclose()
        log.info("%s (pid %d) for %s exited with status %d", self.name, proc.pid, label, code)
