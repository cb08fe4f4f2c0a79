"""A Jupyter authorizer for the REST authorisation tests, loaded by a real ``jupyter server``
(``--ServerApp.authorizer_class=tests.helpers_authz.ReadOnlyParaconnect``): the user may only
read the ``paraconnect`` resource, and everything else as usual."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth import Authorizer


class ReadOnlyParaconnect(Authorizer):  # type: ignore[misc]
    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource == "paraconnect":
            return action == "read"
        return True
