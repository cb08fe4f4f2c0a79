"""The hub's clients: the blocking HubClient (on the async one), errors mapped to their
categories, the ZeroMQ event subscriber, and a kernel finding a restarted hub again."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import paraconnect as pc
from paraconnect._hub._client import HubEvents
from paraconnect._runtime import runtime
from paraconnect.api import Hub
from paraconnect.errors import ConfigError, NetworkError, ProtocolError
from paraconnect.hub import HubClient

from .helpers_hubproc import start_hub, stop_hub

pytest.importorskip("zmq")
pytest_plugins = ["tests.helpers_api"]
pytestmark = pytest.mark.timeout(60)


def test_no_hub_is_a_config_error_that_says_how(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"no hub runs for .*start one with 'paraconnect hub'"):
        HubClient(home)


def test_blocking_client_ops_and_error_categories(api_hub: Hub, home: Path) -> None:
    with HubClient(home, timeout=30) as client:
        info = client.request("hub")
        assert info["home"] == str(home) and info["events"].startswith("ipc://")
        with pytest.raises(ProtocolError, match="unknown operation 'nope'"):
            client.request("nope")
        with pytest.raises(ConfigError, match="no server 'x'"):
            client.request("server", id="x")
        assert client.request("sessions") == []  # the connection survives failed ops
    with pytest.raises(NetworkError, match="closed"):
        client.request("hub")


def test_events_arrive_on_the_subscriber_thread(api_hub: Hub) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    arrived = threading.Event()

    def callback(topic: str, event: dict[str, Any]) -> None:
        seen.append((topic, event))
        if topic == "credentials":
            arrived.set()

    events = api_hub.events()
    assert isinstance(events, HubEvents) and events.connected.is_set()
    events.subscribe(callback)
    api_hub.request("session_create", name="lab")
    assert arrived.wait(30)
    events.close()
    events.close()  # twice is fine
    _topic, event = next(item for item in seen if item[0] == "credentials")
    assert event["session"] == "lab" and event["change"] == "session_created"


def test_a_kernel_finds_the_hub_again_after_a_restart(home: Path) -> None:
    first = start_hub(home)
    rt = runtime(home)
    try:
        hub = pc.connect_hub(home)
        assert not hub.embedded and hub.request("hub")["pid"] == first.pid
        stop_hub(first)
        second = start_hub(home)
        try:
            # The call that meets the dead connection fails (it is not retried: the old hub
            # may have done it); the next one finds the new hub.
            with pytest.raises(NetworkError):
                hub.request("hub")
            assert hub.request("hub")["pid"] == second.pid
        finally:
            stop_hub(second)
    finally:
        rt.close()
