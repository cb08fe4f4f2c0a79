"""`paraconnect debug`: walk the path to a peer step by step and explain, in plain words and
with the fix, where and why a connection fails.

A library first (the CLI and, later, the Jupyter extension call the same functions):

* ``await diagnose_client("host:8443", "lab")``: dial an agent as ``paraconnect connect`` would;
* ``await diagnose_server("0.0.0.0:8443", "lab")``: listen once, as ``paraconnect listen`` does
  for agents phoning home, and explain what arrives;
* ``diagnose_creds("lab")``: our own credentials, offline.

Each returns a :class:`Report`: a list of :class:`Step` (name, PASS/FAIL/WARN/SKIP, reason,
fix, details), ``report.passed``, ``report.as_dict()`` for JSON and ``report.render()`` for
people.  :func:`explain` gives any error the tunnel raises a reason and a fix.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ..pki import Credentials, Passphrase, Role, SecurityLevel, Store
from ._client import diagnose_client
from ._creds import check_creds
from ._explain import explain
from ._report import Report, Status, Step
from ._server import diagnose_server

__all__ = [
    "Report",
    "Status",
    "Step",
    "diagnose_client",
    "diagnose_creds",
    "diagnose_server",
    "explain",
]


def diagnose_creds(
    creds: str | Path | Credentials,
    *,
    peer_ca: Path | str | None = None,
    role: Role | str | None = None,
    passphrase: Passphrase | None = None,
    level: SecurityLevel | str | None = None,
    unique_id: str | None = None,
    store: Store | None = None,
    now: dt.datetime | None = None,
) -> Report:
    """Check credentials offline: files and permissions, key vs certificate, the CA, validity
    (warning under 24 h left), revocation, the revocation list, role and node binding; with
    `peer_ca`, whether a peer holding that CA would trust us."""
    report = Report("creds", str(creds.source if isinstance(creds, Credentials) else creds))
    check_creds(
        report,
        creds,
        role=Role.parse(role) if role else None,
        passphrase=passphrase,
        store=store,
        peer_ca=Path(peer_ca) if peer_ca is not None else None,
        unique_id=unique_id,
        level=SecurityLevel.parse(level) if level else None,
        now=now,
    )
    return report
