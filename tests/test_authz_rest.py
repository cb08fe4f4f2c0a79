"""REST authorisation, read versus write, through a real ``jupyter server`` whose authorizer
grants only "read" on the paraconnect resource (the mutation audit's survivor: every handler
was tested without credentials, never with credentials that may read but not write).  Reads
answer; every write is refused with 403 and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import REPO
from .helpers_jupyter import JupyterServer, start_jupyter
from .test_jupyter_rest import _routes

pytestmark = pytest.mark.timeout(120)

AUTHORIZER = "tests.helpers_authz.ReadOnlyParaconnect"


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("jupyter-read-only")
    args = [f"--ServerApp.authorizer_class={AUTHORIZER}"]
    with start_jupyter(tmp, env={"PYTHONPATH": str(REPO)}, extra_args=args) as server:
        yield server


def test_reads_answer_and_writes_are_refused(reader: JupyterServer) -> None:
    routes = _routes()
    reads = [(p, m) for p, m in routes if m == "GET"]
    writes = [(p, m) for p, m in routes if m != "GET"]
    assert len(reads) >= 10 and len(writes) >= 8, routes
    for path, method in writes:
        body = {} if method in ("POST", "PUT") else None
        resp = reader.request(method, path, body)
        assert resp.status == 403, f"{method} {path} answered {resp.status} to a reader"
        assert b"not authorized to write on resource: paraconnect" in resp.body, resp.body
    for path, method in reads:
        if path.endswith("/events"):
            continue  # the websocket: below
        if path.endswith("/view") or path.startswith("paraconnect/proxy/"):
            # A view's line changes what the session's other viewers see, and a web app acts
            # for the session: writes, refused to a reader before the upgrade or the app.
            assert reader.request(method, path).status == 403, path
            continue
        resp = reader.request(method, path)
        assert resp.status != 403, f"GET {path} refused a reader: {resp.body!r}"
    assert reader.ok("GET", "sessions") == []


def test_a_refused_write_changes_nothing(reader: JupyterServer) -> None:
    assert reader.api("POST", "sessions", {"name": "lab"}).status == 403
    assert reader.api("POST", "servers", {"kind": "builtin"}).status == 403
    assert reader.ok("GET", "sessions") == []
    assert reader.ok("GET", "servers") == []
    assert not (reader.home / "sessions" / "lab").exists()


def test_a_reader_may_follow_the_events(reader: JupyterServer) -> None:
    import websocket

    ws = websocket.create_connection(
        reader.ws_base + "paraconnect/api/events",
        header=[f"Authorization: token {reader.token}"],
        timeout=30,
    )
    ws.close()
