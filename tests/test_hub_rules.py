"""Launch rules (a server limit, the ssh hosts offered, Slurm defaults) hold in the operation
layer, so a kernel or a script on the control socket meets the same refusal as the REST route
(tests/test_jupyter_rest.py checks REST and the control socket of a Jupyter server's hub)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from paraconnect.errors import ConfigError
from paraconnect.hub import HubClient, LaunchRules

from .conftest import PARACONNECT


def test_rules_refuse_an_unoffered_ssh_host_and_merge_slurm_defaults() -> None:
    rules = LaunchRules(2, ("node7",), {"partition": "gpu", "time": "1:00:00"})
    assert rules.launcher_options("slurm", {"time": "0:10:00"}) == {
        "partition": "gpu",
        "time": "0:10:00",
    }
    assert rules.launcher_options("ssh", {"host": "node7"}) == {"host": "node7"}
    with pytest.raises(ConfigError, match=r"ssh host 'node8' is not one this hub offers"):
        rules.launcher_options("ssh", {"host": "node8"})
    rules.check_room(1)
    with pytest.raises(ConfigError, match=r"2 servers run, .*max_servers=2"):
        rules.check_room(2)
    with pytest.raises(ConfigError, match="max_servers must be 0"):
        LaunchRules(-1)


def test_paraconnect_hub_applies_its_rules_on_the_control_socket(tmp_path: Path) -> None:
    env = {**os.environ, "PARACONNECT_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [PARACONNECT, "hub", "--json", "--ssh-host", "node7", "--max-servers", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and '"ready"' in proc.stdout.readline()
        with HubClient(tmp_path, timeout=30) as hub:
            with pytest.raises(ConfigError, match=r"ssh host 'elsewhere' is not one this hub"):
                hub.request(
                    "launch", kind="builtin", launcher="ssh",
                    launcher_options={"host": "elsewhere"},
                )  # fmt: skip
            # Refused before anything was recorded: no server, no job.
            assert hub.request("servers") == []
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_bad_slurm_default_is_one_line_naming_the_option(tmp_path: Path) -> None:
    env = {**os.environ, "PARACONNECT_HOME": str(tmp_path)}
    done = subprocess.run(
        [PARACONNECT, "hub", "--slurm-default", "partition"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "--slurm-default 'partition': write KEY=VALUE" in done.stderr
