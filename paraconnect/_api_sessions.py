"""The notebook API's hub handle and sessions: opening is not creating, and a passphrase is a
Python argument.

Part of the ``api`` unit (``api.py`` re-exports what is public here).  A session name typed
wrong must fail with the names that exist, as the command line does (``pki.no_such_session``
words both), never become a new session with a new CA; only ``"default"`` is made on first
use, as ``paraconnect launch`` makes it.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._fs import read_private, write_atomic
from ._runtime import Runtime, runtime
from .errors import ConfigError, CredentialError
from .hub import HubEvents
from .pki import check_name, no_such_session

__all__ = [
    "DEFAULT", "Bundle", "Hub", "PassphraseSource", "alaunch", "aopen_session", "ashare", "hub",
]  # fmt: skip

# -- the hub ---------------------------------------------------------------------------------


class Hub:
    """A handle on the hub this process talks to: ``pc.hub().request("servers")``."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    @property
    def home(self) -> Path:
        return self._rt.home

    @property
    def embedded(self) -> bool:
        """True when the hub runs inside this process (no Jupyter or ``paraconnect hub``)."""
        return self._rt.embedded

    def request(self, op: str, **fields: Any) -> Any:
        """Run one op of docs/hub-api.md and return its result."""
        return self._rt.call(functools.partial(self._rt.request, op, **fields))

    def events(self) -> HubEvents:
        """A started subscriber of the hub's events; ``.subscribe(callback)`` on it."""
        address = self.request("hub").get("events")
        if not address:
            raise ConfigError(
                "this hub publishes no ZeroMQ events (pyzmq missing); pip install "
                "'paraconnect[jupyter]'"
            )
        return HubEvents(str(address)).start()


def hub(home: Path | str | None = None) -> Hub:
    """The hub for `home` (default: $PARACONNECT_HOME, else the user data directory)."""
    return Hub(runtime(home))


# -- sessions --------------------------------------------------------------------------------

DEFAULT = "default"

# A file that holds the passphrase (readable by you alone, as for --passphrase-file), or a
# function that returns it (getpass.getpass, a keyring lookup).
PassphraseSource = str | os.PathLike[str] | Callable[[], bytes | str]


def passphrase_reader(source: PassphraseSource | None) -> Callable[[], str] | None:
    """A function that reads `source` when the hub needs the passphrase (and only then)."""
    if source is None:
        return None

    def read() -> str:
        if callable(source):
            value = source()
            where = "the passphrase function"
        else:
            value = read_private(Path(source).expanduser(), "passphrase file").rstrip(b"\r\n")
            where = f"passphrase file {source}"
        data = value.encode() if isinstance(value, str) else value
        if not isinstance(data, bytes) or not data:
            raise ConfigError(f"{where} gave an empty passphrase; give the session key's one")
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"{where} gave a passphrase that is not UTF-8 text") from None

    return read


def check_session_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"a session is given by its name (a string) or a pc.Session, not {name!r}"
        )
    return check_name(name, "session name")


async def aopen_session(
    rt: Runtime,
    name: str,
    *,
    create: bool | str = False,
    passphrase: Callable[[], str] | None = None,
    key_type: str | None = None,
    days: int | None = None,
    level: str | None = None,
) -> dict[str, Any]:
    """Open the session `name` (start its phone-home listener) and return its SessionInfo.

    `create`: False opens only (``"default"`` excepted), True also creates a missing one,
    ``"new"`` creates and refuses an existing name.  `passphrase` is called only when the hub
    does not hold the session key decrypted yet."""
    name = check_session_name(name)
    if not create and (key_type, days, level) != (None, None, None):
        raise ConfigError(
            "key_type, days and level are chosen when a session is created: "
            f"pc.Session.create({name!r}, ...) or pc.Session({name!r}, create=True, ...)"
        )
    sessions = {s["name"]: s for s in await rt.request("sessions")}
    info = sessions.get(name)
    if info is None:
        if not create and name != DEFAULT:
            raise no_such_session(
                name, sorted(sessions),
                f"create it with pc.Session.create({name!r}) or pc.Session({name!r}, "
                "create=True)",
            )  # fmt: skip
        fields: dict[str, Any] = {
            "name": name, "key_type": key_type or "ec-p256", "level": level or "mutual",
        }  # fmt: skip
        if days is not None:
            fields["days"] = days
        if passphrase is not None:
            fields["passphrase"] = passphrase()  # encrypts the new session key
        await rt.request("session_create", **fields)
        return dict(await rt.request("session_open", session=name))
    if create == "new":
        raise ConfigError(
            f"a session named {name!r} already exists; open it with pc.Session({name!r}) "
            "or choose another name"
        )
    fields = {"session": name}
    if info.get("owner") and info.get("ca_key_encrypted") and not info.get("ca_key_unlocked"):
        if passphrase is None:
            raise CredentialError(
                f"the session key of {name!r} is encrypted: give its passphrase, "
                f"pc.Session({name!r}, passphrase=FILE) or passphrase=a function that returns "
                "it (getpass.getpass)"
            )
        fields["passphrase"] = passphrase()
    return dict(await rt.request("session_open", **fields))


MANUAL = "manual"  # the launcher of agents someone starts by hand (op agent_command)


async def alaunch(
    rt: Runtime,
    kind: str,
    launcher: str,
    session: str,
    mode: str,
    options: dict[str, Any],
    command: list[str],
    launcher_options: dict[str, Any],
    passphrase: Callable[[], str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Open `session` (never create one, ``"default"`` excepted) and launch in it: the new
    ServerInfo, and for ``launcher="manual"`` the hub's ``{command, expires}``: the shell
    line to run by hand on the remote host (as ``paraconnect launch --launcher manual``)."""
    await aopen_session(rt, session, passphrase=passphrase)
    if launcher != MANUAL:
        info = await rt.request(
            "launch", kind=kind, launcher=launcher, session=session, mode=mode,
            options=options, command=command, launcher_options=launcher_options,
        )  # fmt: skip
        return dict(info), None
    if mode != "reverse":
        raise ConfigError("an agent started by hand phones home: use connect_reverse")
    if launcher_options:
        raise ConfigError(
            f"launcher manual takes no launcher options (given: {', '.join(launcher_options)}); "
            "the line it returns runs wherever you paste it"
        )
    got = await rt.request(
        "agent_command", kind=kind, session=session, options=options, command=command
    )
    return dict(got["server"]), {"command": str(got["command"]), "expires": got["expires"]}


# -- friend bundles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A friend's PKCS#12 bundle (encrypted with the passphrase given at issue)."""

    session: str
    friend: str
    serial: str
    filename: str
    data: bytes = dataclasses.field(repr=False)
    not_after: str
    path: Path | None = None

    def save(self, path: Path | str) -> Path:
        out = Path(path)
        write_atomic(out, self.data, mode=0o600)
        return out

    def __repr__(self) -> str:
        # What a notebook shows for `bundle`: who and what it is, never its (encrypted) bytes.
        where = f"saved to {self.path}" if self.path else "not saved yet: .save(PATH)"
        return (
            f"<paraconnect.Bundle {self.filename!r}: client certificate for {self.friend!r} "
            f"in session {self.session!r}, serial {self.serial}, valid until {self.not_after}, "
            f"{len(self.data)} bytes of encrypted PKCS#12, {where}>"
        )

    def _repr_html_(self) -> str:
        b64 = base64.b64encode(self.data).decode()
        name = html.escape(self.filename)
        return (
            f"<a download='{name}' href='data:application/x-pkcs12;base64,{b64}'>"
            f"download {name}</a> (for {html.escape(self.friend)}, serial {self.serial}, "
            f"valid until {html.escape(self.not_after)}; send the passphrase another way)"
        )


async def ashare(
    rt: Runtime,
    session: str,
    name: str,
    passphrase: str,
    days: float = 7,
    unique_id: str | None = None,
) -> Bundle:
    issued = await rt.request(
        "friend_issue", session=session, name=name, passphrase=passphrase, days=days,
        unique_id=unique_id,
    )  # fmt: skip
    cert = issued["certificate"]
    got = await rt.request("friend_bundle", session=session, serial=cert["serial"])
    return Bundle(
        session, name, str(cert["serial"]), str(got["filename"]),
        base64.b64decode(got["data_b64"]), str(cert["not_after"]),
    )  # fmt: skip
