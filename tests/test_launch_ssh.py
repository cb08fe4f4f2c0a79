"""The ssh launcher against a real sshd: refusals say what is wrong and what to do, unknown host
keys are never accepted, and nothing secret goes on a command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paraconnect.errors import ConfigError, CredentialError, NetworkError, TrustError
from paraconnect.servers import JobState, LaunchSpec, SshLauncher, reattach

if TYPE_CHECKING:
    from tests.fixtures_sshd import Sshd

# Imported by pytest (not above) so that it can rewrite their asserts.
pytest_plugins = ["tests.fixtures_sshd"]


@pytest.mark.anyio
async def test_wrong_key_is_a_config_error_naming_host_and_fix(sshd: Sshd, tmp_path: Path) -> None:
    other_key = sshd.dir / "ssh_host_ed25519_key"  # a real key, just not an authorized one
    config = sshd.client_config("wrong-key", identity_file=other_key)
    launcher = SshLauncher(sshd.alias, config_file=config, remote_root=str(tmp_path / "r"))
    with pytest.raises(ConfigError) as info:
        await launcher.submit(LaunchSpec(["true"]))
    message = str(info.value)
    assert repr(sshd.alias) in message
    assert "Permission denied" in message
    assert "IdentityFile" in message
    assert "authorized_keys" in message
    assert "\n" not in message
    with pytest.raises(ConfigError):
        await launcher.check()
    assert not (tmp_path / "r").exists()


@pytest.mark.anyio
async def test_unknown_host_key_is_refused_and_not_recorded(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = sshd.client_config("no-known-hosts", known_hosts=empty)
    launcher = SshLauncher(sshd.alias, config_file=config, remote_root=str(tmp_path / "r"))
    with pytest.raises(TrustError) as info:
        await launcher.submit(LaunchSpec(["true"]))
    assert repr(sshd.alias) in str(info.value)
    assert "known_hosts" in str(info.value)
    assert empty.read_text() == ""  # never accept-new
    assert not (tmp_path / "r").exists()


@pytest.mark.anyio
async def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    other = (sshd.dir / "client_ed25519.pub").read_text().split()
    wrong.write_text(f"[{sshd.address}]:{sshd.port} {other[0]} {other[1]}\n")
    config = sshd.client_config("changed", known_hosts=wrong)
    with pytest.raises(TrustError):
        await SshLauncher(sshd.alias, config_file=config).check()


@pytest.mark.anyio
async def test_connection_refused_is_a_network_error(sshd: Sshd, tmp_path: Path) -> None:
    config = sshd.client_config("closed-port", port=1)
    with pytest.raises(NetworkError) as info:
        await SshLauncher(sshd.alias, config_file=config).submit(LaunchSpec(["true"]))
    assert "connection refused" in str(info.value)
    assert repr(sshd.alias) in str(info.value)


def test_bad_arguments_are_config_errors(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SshLauncher(sshd.alias, config_file=tmp_path / "missing")
    with pytest.raises(CredentialError, match="does not exist"):
        SshLauncher(sshd.alias, identity_file=tmp_path / "missing")
    for host in ("", "-oProxyCommand=x", "a b", "a;b"):
        with pytest.raises(ConfigError):
            SshLauncher(host)
    with pytest.raises(ConfigError):
        SshLauncher("h", port=0)
    with pytest.raises(ConfigError):
        SshLauncher("h", ssh_options=["StrictHostKeyChecking=no\nHost *"])


def test_command_line_is_batch_mode_and_holds_no_job_data(sshd: Sshd) -> None:
    launcher = SshLauncher(
        sshd.alias, config_file=sshd.config_file, port=sshd.port, identity_file=sshd.client_key
    )
    argv = launcher.ssh_argv()
    assert argv[:4] == ["ssh", "-T", "-o", "BatchMode=yes"]
    assert argv[-3:] == ["--", sshd.alias, "sh -s"]
    assert ["-F", str(sshd.config_file)] == argv[argv.index("-F") : argv.index("-F") + 2]
    assert "IdentitiesOnly=yes" in argv
    assert not any("StrictHostKeyChecking" in a for a in argv)


@pytest.mark.anyio
async def test_explicit_options_without_a_config_file(sshd: Sshd, tmp_path: Path) -> None:
    """Host, port, user and key given to the launcher; known hosts from an -o option."""
    launcher = SshLauncher(
        sshd.address,
        port=sshd.port,
        user=sshd.user,
        identity_file=sshd.client_key,
        ssh_options=[f"UserKnownHostsFile={sshd.known_hosts}", "GlobalKnownHostsFile=/dev/null"],
        remote_root=str(tmp_path / "r"),
    )
    job = await launcher.submit(LaunchSpec(["sh", "-c", "echo hello-$USER"]))
    assert (await job.wait(30)).state is JobState.COMPLETED
    assert f"hello-{sshd.user}" in await job.logs()
    again = reattach(json.loads(json.dumps(job.describe())))
    assert (await again.state()).state is JobState.COMPLETED


@pytest.mark.anyio
async def test_unreachable_host_makes_state_unknown_not_an_exception(
    sshd: Sshd, tmp_path: Path
) -> None:
    launcher = SshLauncher(
        sshd.alias, config_file=sshd.config_file, remote_root=str(tmp_path / "r")
    )
    job = await launcher.submit(LaunchSpec(["sleep", "30"], grace=0.5))
    described = job.describe()
    described["options"]["ssh"]["config_file"] = str(sshd.client_config("gone", port=1))
    status = await reattach(described).state()
    assert status.state is JobState.UNKNOWN
    assert "connection refused" in status.reason
    with pytest.raises(NetworkError):
        await reattach(described).logs()
    assert (await job.stop(grace=0.5)).state is JobState.CANCELLED


@pytest.mark.anyio
async def test_home_relative_workdir_is_the_remote_home(sshd: Sshd, tmp_path: Path) -> None:
    launcher = SshLauncher(
        sshd.alias, config_file=sshd.config_file, remote_root=str(tmp_path / "r")
    )
    job = await launcher.submit(LaunchSpec(["sh", "-c", 'pwd; echo "home=$HOME"'], workdir="~"))
    assert (await job.wait(30)).state is JobState.COMPLETED
    first, second = (await job.logs()).splitlines()
    assert second == f"home={first}"
