"""Phone-home settings and pacing: the control message, jitter, capped backoff, the deadline
while the agent also listens."""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paraconnect.errors import ConfigError, ProtocolError
from paraconnect.tunnel import Agent, Backoff, Connector, Endpoint, Home, Program

from .helpers_tunnel import Pki, echo_command, free_port, make_pki, sha_check


def test_home_message_round_trip() -> None:
    home = Home.parse("[::1]:9000", interval=2.5, deadline=60)
    assert Home.from_message(home.to_message()) == home
    assert Home.from_message({"host": "h", "port": 1}) == Home(Endpoint("h", 1))


@pytest.mark.parametrize(
    "msg",
    [
        {"host": "h"},
        {"port": 1},
        {"host": "", "port": 1},
        {"host": "h", "port": "1"},
        {"host": "h", "port": 1, "interval": "5"},
        {"host": "h", "port": 1, "interval": -1},
        {"host": "h", "port": 1, "deadline": 0},
    ],
)
def test_bad_phone_home_messages(msg: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        Home.from_message(msg)


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="--interval"):
        Home.parse("h:1", interval=0)
    with pytest.raises(ConfigError, match="--deadline"):
        Home.parse("h:1", deadline=-5)
    with pytest.raises(ConfigError, match="Unix"):
        Home(Endpoint("", 0, "/x"))


@given(st.floats(0.01, 100), st.integers(0, 2**32))
def test_backoff_jitter_doubling_and_cap(interval: float, seed: int) -> None:
    home = Home(Endpoint("h", 1), interval=interval, max_backoff=300)
    backoff = Backoff(home, random.Random(seed))
    for _ in range(5):  # plain failures: the interval, ±20 %
        delay = backoff.next_delay(refused=False)
        assert 0.8 * interval <= delay <= 1.2 * interval
    cap = max(300, interval)
    previous = 0.0
    for n in range(1, 30):  # refusals: doubling, never past the cap (plus jitter)
        delay = backoff.next_delay(refused=True)
        base = min(interval * 2**n, cap)
        assert 0.8 * base <= delay <= 1.2 * base
        previous = max(previous, delay)
    assert previous <= 1.2 * cap
    backoff.reset()
    assert backoff.next_delay(refused=False) <= 1.2 * interval


def test_agents_started_together_do_not_dial_together() -> None:
    """The first dial waits up to a fifth of the interval: a hundred agents started in the
    same instant spread their first dials over that window instead of one burst."""
    home = Home(Endpoint("h", 1), interval=1.0)
    first = sorted(Backoff(home, random.Random(seed)).first_delay() for seed in range(100))
    assert first[0] >= 0.0 and first[-1] <= 0.2
    assert first[-1] - first[0] > 0.15  # spread over the window, not bunched
    assert max(b - a for a, b in itertools.pairwise(first)) < 0.05  # no big gap


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_deadline_stops_phoning_but_the_agent_keeps_listening(home: Path) -> None:
    pki: Pki = make_pki(home)
    stopped = anyio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "stopped phoning" in record.getMessage():
                stopped.set()

    watch = Watch()
    logging.getLogger("paraconnect.tunnel").addHandler(watch)
    nowhere = Home(Endpoint("127.0.0.1", free_port()), interval=0.05, deadline=0.3)
    agent = Agent(
        pki.server, program=Program(echo_command()), listen=["127.0.0.1:0"], phone_home=[nowhere]
    )
    async with anyio.create_task_group() as tg:
        [addr] = await tg.start(agent.run)
        with anyio.fail_after(20):
            await stopped.wait()
        logging.getLogger("paraconnect.tunnel").removeHandler(watch)
        local = await tg.start(Connector(pki.client, addr, "127.0.0.1:0").run)
        await sha_check(local, 1000)
        tg.cancel_scope.cancel()
