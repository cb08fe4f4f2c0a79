"""The hub's operations: one table that every front end maps onto (docs/hub-api.md).

The control socket (CLI, kernels, scripts), the Jupyter extension's REST routes and, through
them, the JupyterLab panel and the widgets all call :func:`dispatch`, on the hub's loop, with
an operation name and a JSON object of fields; the answer is JSON too.  A front end never
reaches into pki or the registry by itself, so a rule (say, "revocation is announced as an
event") holds whichever way the user came.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import ensure_private_dir, read_private
from .._version import __version__
from ..errors import ConfigError, NetworkError, NotFoundError, ProtocolError
from ..pki import Record, Session
from ..servers import kind_descriptions, launcher_entries
from ..vocab import Mode, choices

if TYPE_CHECKING:
    from ._core import Hub

__all__ = ["OPS", "call_in_thread", "dispatch"]

Op = Callable[["Hub", Mapping[str, Any]], Awaitable[Any]]
OPS: dict[str, Op] = {}


def op(name: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        OPS[name] = fn
        return fn

    return register


async def dispatch(hub: Hub, name: str, fields: Mapping[str, Any]) -> Any:
    """Run operation `name` with `fields`; a ParaconnectError says what was wrong."""
    fn = OPS.get(name)
    if fn is None:
        raise ProtocolError(f"unknown operation {name!r}; see docs/hub-api.md")
    try:
        return await fn(hub, fields)
    except KeyError as exc:
        raise ConfigError(f"operation {name!r} needs the field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"operation {name!r}: bad field: {exc}") from None


# -- fields -----------------------------------------------------------------------------------


def _str(fields: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = fields.get(key, default)
    if value is None:
        raise KeyError(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"field {key!r} must be a non-empty string")
    return value


def _opt_str(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    return None if value in (None, "") else str(value)


def _num(fields: Mapping[str, Any], key: str, default: float) -> float:
    value = fields.get(key, default)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"field {key!r} must be a number, not {value!r}") from None


def _dict(fields: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = fields.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"field {key!r} must be an object")
    return value


# -- sessions and certificates ---------------------------------------------------------------


def _session_info(hub: Hub, sess: Session) -> dict[str, Any]:
    info: dict[str, Any] = dict(sess.info())
    listening = sess.name in hub.sessions
    info["phone_home"] = hub.phone_home_address(sess.name) if listening else None
    info["enroll"] = hub.enroll_address(sess.name) if listening else None
    info["ca_key_unlocked"] = sess.name in hub.store.unlocked
    return info


def _cert(rec: Record, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    status = "valid"
    if rec.revoked:
        status = "revoked"
    elif dt.datetime.fromisoformat(rec.not_after) <= now:
        status = "expired"
    return {**rec.as_dict(), "status": status}


def _changed(hub: Hub, session: str, change: str, **extra: Any) -> None:
    hub.publish(
        {"event": "credentials", "session": session, "change": change, "at": time.time(), **extra}
    )


@op("hub")
async def _hub(hub: Hub, fields: Mapping[str, Any]) -> Any:
    rdir = hub.home / "run"
    return {
        "pid": os.getpid(),
        "home": str(hub.home),
        "version": __version__,
        "control": str(rdir / "hub.sock"),
        "events": hub.bus.address,
        "sessions": hub.sessions,
    }


@op("sessions")
async def _sessions(hub: Hub, fields: Mapping[str, Any]) -> Any:
    return [_session_info(hub, s) for s in hub.store.list_sessions()]


@op("session_create")
async def _session_create(hub: Hub, fields: Mapping[str, Any]) -> Any:
    from ..pki import DEFAULT_CA_DAYS

    passphrase = _opt_str(fields, "passphrase")
    sess = hub.store.create_session(
        _str(fields, "name"),
        key_type=_str(fields, "key_type", "ec-p256"),
        days=int(_num(fields, "days", DEFAULT_CA_DAYS)),
        level=_str(fields, "level", "mutual"),
        passphrase=passphrase,
    )
    if passphrase is not None:
        sess = hub.store.unlock(sess.name, passphrase)
    _changed(hub, sess.name, "session_created")
    return _session_info(hub, sess)


@op("session")
async def _session(hub: Hub, fields: Mapping[str, Any]) -> Any:
    sess = hub.store.open_session(_str(fields, "session"))
    now = dt.datetime.now(dt.UTC)
    return {**_session_info(hub, sess), "certificates": [_cert(r, now) for r in sess.records()]}


@op("session_open")
async def _session_open(hub: Hub, fields: Mapping[str, Any]) -> Any:
    name = _str(fields, "session")
    passphrase = _opt_str(fields, "passphrase")
    if passphrase is not None:
        hub.store.unlock(name, passphrase)  # a wrong one fails here, before anything starts
    await hub.open_session(name)
    return _session_info(hub, hub.store.open_session(name))


@op("certificates")
async def _certificates(hub: Hub, fields: Mapping[str, Any]) -> Any:
    now = dt.datetime.now(dt.UTC)
    return [_cert(r, now) for r in hub.store.open_session(_str(fields, "session")).records()]


@op("friends")
async def _friends(hub: Hub, fields: Mapping[str, Any]) -> Any:
    now = dt.datetime.now(dt.UTC)
    sess = hub.store.open_session(_str(fields, "session"))
    return [_cert(r, now) for r in sess.records() if r.for_friend is not None]


def _bundle_path(sess: Session, serial: str) -> Path:
    if not serial.isalnum():
        raise ConfigError(f"{serial!r} is not a certificate serial (hexadecimal)")
    return sess.path / "bundles" / f"{serial.lower()}.p12"


@op("friend_issue")
async def _friend_issue(hub: Hub, fields: Mapping[str, Any]) -> Any:
    from ..pki import DEFAULT_LEAF_DAYS, share

    sess = hub.store.open_session(_str(fields, "session"))
    friend = _str(fields, "name")
    passphrase = _str(fields, "passphrase")
    # The bundle is kept (encrypted with the friend's passphrase, 0600) so that it can be
    # downloaded again from the panel or a widget; revoking the certificate makes it useless.
    ensure_private_dir(sess.path / "bundles")
    tmp = sess.path / "bundles" / f".{friend}.{os.getpid()}.p12"
    try:
        issued = share(
            sess, friend, tmp, passphrase.encode(), days=_num(fields, "days", DEFAULT_LEAF_DAYS),
            unique_id=_opt_str(fields, "unique_id"),  # the friend's node, at level mutual
        )  # fmt: skip
        path = _bundle_path(sess, issued.record.serial)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _changed(hub, sess.name, "issued", serial=issued.record.serial, name=friend)
    return {"certificate": _cert(issued.record), "filename": f"{sess.name}-{friend}.p12"}


@op("friend_bundle")
async def _friend_bundle(hub: Hub, fields: Mapping[str, Any]) -> Any:
    sess = hub.store.open_session(_str(fields, "session"))
    serial = _str(fields, "serial")
    recs = [r for r in sess.records() if r.serial.lower() == serial.lower() and r.for_friend]
    path = _bundle_path(sess, serial)
    if not recs or not path.exists():
        raise NotFoundError(
            f"session {sess.name!r} keeps no friend bundle with serial {serial}; issue one with "
            "the friend_issue operation (or 'paraconnect share')"
        )
    data = read_private(path, "friend bundle")
    return {
        "filename": f"{sess.name}-{recs[0].for_friend}.p12",
        "data_b64": base64.b64encode(data).decode(),
    }


@op("revoke")
async def _revoke(hub: Hub, fields: Mapping[str, Any]) -> Any:
    sess = hub.store.open_session(_str(fields, "session"))
    revoked = sess.revoke(_str(fields, "target"), reason=_opt_str(fields, "reason"))
    for rec in revoked:
        _bundle_path(sess, rec.serial).unlink(missing_ok=True)
    _changed(hub, sess.name, "revoked", serials=[r.serial for r in revoked])
    return [_cert(r) for r in revoked]


# -- policy -------------------------------------------------------------------------------------


def _policy_of(hub: Hub, session: str) -> dict[str, Any]:
    """The session's policy with its warnings (lock-out, unknown identities).  Listeners
    re-read it within a second and close what it now refuses: no restart."""
    from ..pki import load_policy, policy_path, policy_warnings

    sess = hub.store.open_session(session)
    policy = load_policy(policy_path(sess))
    return {**policy.as_dict(), "warnings": policy_warnings(sess, policy)}


@op("policy")
async def _policy(hub: Hub, fields: Mapping[str, Any]) -> Any:
    return _policy_of(hub, _str(fields, "session"))


@op("policy_rule")
async def _policy_rule(hub: Hub, fields: Mapping[str, Any]) -> Any:
    from ..pki import Rule, add_rule

    session = _str(fields, "session")
    position = fields.get("position")
    rule = Rule.make(
        _str(fields, "action"),
        role=_opt_str(fields, "role"),
        name=_opt_str(fields, "name"),
        serial=_opt_str(fields, "serial"),
        unique_id=_opt_str(fields, "unique_id"),
    )
    add_rule(hub.store.open_session(session), rule, int(position) if position else None)
    _changed(hub, session, "policy")
    return _policy_of(hub, session)


@op("policy_remove")
async def _policy_remove(hub: Hub, fields: Mapping[str, Any]) -> Any:
    from ..pki import remove_rule

    session = _str(fields, "session")
    remove_rule(hub.store.open_session(session), index=int(_num(fields, "index", 0)))
    _changed(hub, session, "policy")
    return _policy_of(hub, session)


@op("policy_default")
async def _policy_default(hub: Hub, fields: Mapping[str, Any]) -> Any:
    from ..pki import set_default

    session = _str(fields, "session")
    set_default(hub.store.open_session(session), _str(fields, "verdict"))
    _changed(hub, session, "policy")
    return _policy_of(hub, session)


# -- servers ----------------------------------------------------------------------------------


def _command(fields: Mapping[str, Any]) -> list[str]:
    command = fields.get("command") or []
    if isinstance(command, str):
        import shlex

        command = shlex.split(command)
    if not isinstance(command, list):
        raise ConfigError("field 'command' must be a list of strings or a shell line")
    return [str(c) for c in command]


@op("servers")
async def _servers(hub: Hub, fields: Mapping[str, Any]) -> Any:
    return [i.as_dict() for i in await hub.servers()]


@op("server")
async def _server(hub: Hub, fields: Mapping[str, Any]) -> Any:
    return hub.server(_str(fields, "id")).as_dict()


async def _check_room(hub: Hub) -> None:
    hub.rules.check_room(sum(not i.final for i in await hub.servers()))


@op("launch")
async def _launch(hub: Hub, fields: Mapping[str, Any]) -> Any:
    launcher = _str(fields, "launcher", "local")
    launcher_options = hub.rules.launcher_options(launcher, _dict(fields, "launcher_options"))
    await _check_room(hub)
    info = await hub.launch(
        _str(fields, "kind"),
        launcher,
        _str(fields, "session", "default"),
        _str(fields, "mode", "reverse"),
        _dict(fields, "options"),
        _command(fields),
        launcher_options,
    )
    return info.as_dict()


@op("launch_options")
async def _launch_options(hub: Hub, fields: Mapping[str, Any]) -> Any:
    # What a launch form offers: described here, next to the rules the launch op applies, so
    # the panel builds its fields from this and never from a copy of its own.
    rules = hub.rules
    return {
        "kinds": kind_descriptions(),
        "launchers": [entry.as_dict() for entry in launcher_entries()],
        "modes": choices(Mode),
        "rules": {
            "max_servers": rules.max_servers,
            "ssh_hosts": list(rules.ssh_hosts),
            "slurm_defaults": dict(rules.slurm_defaults),
        },
    }


@op("agent_command")
async def _agent_command(hub: Hub, fields: Mapping[str, Any]) -> Any:
    await _check_room(hub)
    return await hub.agent_command(
        _str(fields, "kind"),
        _str(fields, "session", "default"),
        _dict(fields, "options"),
        _command(fields),
    )


@op("stop")
async def _stop(hub: Hub, fields: Mapping[str, Any]) -> Any:
    return (await hub.stop(_str(fields, "id"), _num(fields, "grace", 10.0))).as_dict()


@op("resubmit")
async def _resubmit(hub: Hub, fields: Mapping[str, Any]) -> Any:
    return (await hub.resubmit(_str(fields, "id"))).as_dict()


@op("logs")
async def _logs(hub: Hub, fields: Mapping[str, Any]) -> Any:
    tail = fields.get("tail", 100)
    return await hub.logs(_str(fields, "id"), int(tail) if tail not in (None, "") else None)


@op("wait")
async def _wait(hub: Hub, fields: Mapping[str, Any]) -> Any:
    sid = _str(fields, "id")
    state = _str(fields, "state", "connected")
    timeout = _num(fields, "timeout", 60.0)
    try:
        info = await hub.wait(sid, state, timeout)
    except TimeoutError:
        raise NetworkError(
            f"server {sid} did not reach state {state} within {timeout:g} s; "
            f"see 'paraconnect servers logs {sid}'"
        ) from None
    return info.as_dict()


@op("dial")
async def _dial(hub: Hub, fields: Mapping[str, Any]) -> Any:
    sid = _str(fields, "id")
    await hub.dial_client(sid, int(_num(fields, "port", 0)), _num(fields, "timeout", 60.0))
    return hub.server(sid).as_dict()


@op("listeners")
async def _listeners(hub: Hub, fields: Mapping[str, Any]) -> Any:
    out = []
    for name in hub.sessions:
        agents = hub.session_agents(name)
        out.append({
            "session": name,
            "bind": str(agents.address) if agents.address else None,
            "phone_home": hub.phone_home_address(name),
            "enroll": hub.enroll_address(name),
            "level": agents.level.value,
            "agents": sorted(link.server_id for link in agents.agents),
        })  # fmt: skip
    return out


# -- accounting -------------------------------------------------------------------------------


@op("accounting")
async def _accounting(hub: Hub, fields: Mapping[str, Any]) -> Any:
    from ..tunnel import Accounting, parse_since, summarize

    since_field = fields.get("since")
    since: float | None = None
    if isinstance(since_field, int | float):
        since = float(since_field)
    elif since_field:
        since = parse_since(str(since_field))
    session_ids: list[str] | None = None
    if fields.get("session"):
        session_ids = [hub.store.open_session(_str(fields, "session")).id]
    limit = int(_num(fields, "limit", 200))
    with Accounting.in_home(hub.home) as acc:
        records = acc.records(session=session_ids, since=since)
    return {
        "records": [r.as_dict() for r in records[-limit:]] if limit > 0 else [],
        "summary": [s.as_dict() for s in summarize(records)],
    }


def call_in_thread(hub: Hub, name: str, fields: Mapping[str, Any]) -> Any:
    """Blocking: run an operation on the hub's own loop from another thread."""
    return hub.call(functools.partial(dispatch, hub, name, fields))
