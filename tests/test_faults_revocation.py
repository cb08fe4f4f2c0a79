"""Credentials changing under a running agent in `cluster`: revocation lists reloaded while
ten streams are in flight (none is disturbed, a broken file keeps the previous list in
force), and a friend revoked while connected.

A new list reaches the agent by whichever path is first: the laptop's listener pushes it over
the control channel, or the agent sees the crl.pem beside its credentials change (the test
copies it there, as an administrator would).

What a revocation does to a connection that is already open is the agent's choice: the code
under test checks open connections again whenever its list changes and closes the ones now
refused, so the revoked friend's open streams are cut, and its listener is refused when the
agent phones again.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures_netns import Hosts, NsProc, Pki

pytest_plugins = ["tests.fixtures_netns"]
pytestmark = pytest.mark.timeout(120)

RELOADED = r"revocation list (\S+ changed: reloaded|\d+ from .* applied)"
ECHO = [sys.executable, "tests/helpers_echo.py", "--port", "{port}"]


def _listen(hosts: Hosts, host: str, *extra: str) -> tuple[NsProc, str, str]:
    proc = hosts.start(
        host, "listen", f"{hosts.addr(host)}:0", "--creds", "lab", "--local", "127.0.0.1:0",
        "--json", *extra,
    )  # fmt: skip
    event = proc.ready()
    return proc, str(event["listen"]), str(event["local"]).rsplit(":", 1)[1]


def _agent(hosts: Hosts, pki: Pki, home: str) -> NsProc:
    agent = hosts.start(
        "cluster", "serve", "--creds", str(pki.cluster_creds), "--phone-home", home,
        "--interval", "0.2", "--json", "--", *ECHO,
    )  # fmt: skip
    agent.ready()
    return agent


def _go(client: NsProc) -> dict[str, object]:
    assert client.popen.stdin is not None
    client.popen.stdin.write("go\n")
    client.popen.stdin.flush()
    return client.event(timeout=90)


def test_crl_reloads_under_load_and_a_broken_file_keeps_the_old_list(hosts: Hosts) -> None:
    pki = hosts.pki()
    hosts.friend_bundle("bob")
    for i in range(4):  # bundles for friends elsewhere (the laptop keeps no key of theirs)
        out = hosts.cli("laptop", "share", f"victim{i}", "--session", "lab", "--out",
                        str(hosts.root / f"victim{i}.p12"), "--passphrase-file",
                        str(hosts.root / "friend.pass"), "--unique-id", f"victim-{i}")  # fmt: skip
        assert out.returncode == 0, out.stderr
    friend, friend_address, _ = _listen(hosts, "friend")
    laptop, address, local = _listen(
        hosts, "laptop", "--on-exit-phone-home", friend_address, "--interval", "0.2"
    )
    agent = _agent(hosts, pki, address)
    laptop.wait_event("server")
    streams = hosts.client_proc("laptop", "sha", "127.0.0.1", local, "--size", "6000000",
                                "--streams", "10", "--gated")  # fmt: skip
    assert streams.event()["event"] == "halfway"
    agent.wait_log("relaying to the program", count=10)

    victims = [f"victim{i}" for i in range(4)] + ["bob"]  # the friend last
    for n, victim in enumerate(victims, start=1):
        out = hosts.cli("laptop", "revoke", victim, "--session", "lab")
        assert out.returncode == 0, out.stderr
        pki.push_crl()
        # The new list reaches the agent by one of two paths, whichever comes first: the
        # listener pushes it over its control channel, or the agent sees its file change.
        agent.wait_log(RELOADED, count=n)
        # A new connection after each reload: a fresh handshake under the new list.
        assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "100000",
                            "--seed", str(100 + n))["ok"]  # fmt: skip

    pki.push_crl(b"-----BEGIN X509 CRL-----\nnot a list\n-----END X509 CRL-----\n")
    agent.wait_log(r"keeping the previous revocation list")
    assert hosts.client("laptop", "sha", "127.0.0.1", local, "--size", "100000")["ok"]

    done = _go(streams)  # the ten streams were in flight through all of it
    assert done["ok"], done
    assert len(done["results"]) == 10  # type: ignore[arg-type]

    # The list in force is still the last good one: the friend (revoked in it) is refused
    # when the laptop leaves and sends the agent there.
    assert laptop.stop() == 0
    agent.wait_log(r"refused this server: .*peer certificate was revoked")
    friend.wait_log(r"refused our certificate: it says our certificate was revoked")
    assert agent.popen.poll() is None
    assert "Traceback" not in agent.text()


def test_revoked_friend_is_cut_off_and_refused_on_reconnect(hosts: Hosts) -> None:
    pki = hosts.pki()
    hosts.friend_bundle("bob")
    friend, friend_address, friend_local = _listen(hosts, "friend")
    agent = _agent(hosts, pki, friend_address)
    friend.wait_event("server")
    assert hosts.client("friend", "sha", "127.0.0.1", friend_local, "--size", "200000")["ok"]
    streams = hosts.client_proc("friend", "sha", "127.0.0.1", friend_local, "--size",
                                "4000000", "--streams", "2", "--gated")  # fmt: skip
    assert streams.event()["event"] == "halfway"
    agent.wait_log("relaying to the program", count=3)

    out = hosts.cli("laptop", "revoke", "bob", "--session", "lab")
    assert out.returncode == 0, out.stderr
    pki.push_crl()  # the agent's copy of the list, beside its credentials on the cluster

    # What the code does: open connections of the revoked peer are closed at once ...
    agent.wait_log(r"closing the data connection with client 'bob' on friend-node .* revoked",
                   count=2)  # fmt: skip
    agent.wait_log(r"closing the control connection with client 'bob' .* was revoked")
    done = _go(streams)
    assert not done["ok"]
    assert not any(r["ok"] for r in done["results"])  # type: ignore[attr-defined]
    # ... and when the agent phones the friend again, each side says why it is refused.
    agent.wait_log(r"refused this server: .*peer certificate was revoked")
    friend.wait_log(r"refused our certificate: it says our certificate was revoked")
    assert agent.popen.poll() is None  # the agent itself keeps serving
