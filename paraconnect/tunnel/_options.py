"""The keywords every tunnel role (Agent, Connector, ReverseListener) takes for its Side, the end
of each connection it makes or accepts: said once here, passed through as they are."""

from __future__ import annotations

from typing import TypedDict

from ..pki import SecurityLevel, Store
from ._accounting import Accounting

__all__ = ["SideOptions"]


class SideOptions(TypedDict, total=False):
    """`level`: the session's own unless given; `unique_id`: this node's (the store's unless
    given); `handshake_timeout`: seconds for TLS and the hello; `accounting`: True for the data
    directory's database, False for none, or an `Accounting` the caller owns."""

    level: SecurityLevel | str | None
    unique_id: str | None
    store: Store | None
    handshake_timeout: float
    accounting: Accounting | bool
