"""Launchers are registered by name in one place (paraconnect.servers.register_launcher): a
launcher registered here, by a test, with no other file touched, shows in the CLI's ``launch
--help``, in ``make_launcher``, in ``paraconnect.vocab.LAUNCHERS``, and in ``GET /hub`` of a
real ``jupyter server`` (which also launches with it)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from paraconnect import vocab
from paraconnect.cli import main
from paraconnect.errors import ConfigError
from paraconnect.hub import make_launcher
from paraconnect.servers import (
    LauncherOption,
    LocalLauncher,
    launcher_entries,
    register_launcher,
    unregister_launcher,
)
from tests.helpers_jupyter import start_jupyter

REPO = Path(__file__).resolve().parent.parent


class TinyLauncher(LocalLauncher):
    """A test-only launcher: the local one, with a required option of its own."""

    name = "tiny"

    def __init__(self, run_root: str | None = None, *, flavour: str) -> None:
        super().__init__(run_root)
        self.flavour = flavour


# What the test (or the jupyter server it starts) runs to register it: one line.
REGISTER = (
    "register_launcher('tiny', 'tests.test_launchers_registry:TinyLauncher', 'a test launcher', "
    "[LauncherOption('flavour', 'which flavour of tiny', required=True), "
    "LauncherOption('run_root', 'where job directories go')])"
)


def register_in_server(tmp_path: Path) -> str:
    """The ``--config`` argument that makes a jupyter server register it, as a site plugin
    (a config file is Python that the server runs at start)."""
    config = tmp_path / "register_tiny.py"
    config.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from paraconnect.servers import LauncherOption, register_launcher\n"
        f"{REGISTER}\n"
    )
    return f"--config={config}"


@pytest.fixture
def tiny() -> Iterator[None]:
    exec(REGISTER, {"register_launcher": register_launcher, "LauncherOption": LauncherOption})  # noqa: S102
    try:
        yield
    finally:
        unregister_launcher("tiny")


def test_a_registered_launcher_is_in_the_cli_help(
    tiny: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["launch", "command", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    choices = out[out.index("--launcher {") :].split("}", 1)[0]
    assert choices == "--launcher {local,ssh,slurm,manual,tiny"
    assert "tiny: a test launcher" in out
    assert "--flavour FLAVOUR" in out and "tiny: which flavour of tiny (required)" in out


def test_the_cli_refuses_an_option_of_another_launcher(
    tiny: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before the hub is asked, so no hub runs here.
    assert main(["launch", "command", "--launcher", "local", "--flavour", "x", "--", "true"]) == 1
    err = capsys.readouterr().err
    assert "--flavour is an option of the tiny launcher, not of local" in err


def test_make_launcher_and_vocab_read_the_registry(tiny: None, tmp_path: Path) -> None:
    assert "tiny" in vocab.LAUNCHERS
    made = make_launcher("tiny", {"flavour": "mint", "run_root": str(tmp_path)})
    assert isinstance(made, TinyLauncher) and made.flavour == "mint"
    assert made.run_root == tmp_path
    with pytest.raises(ConfigError, match=r"the tiny launcher needs --flavour FLAVOUR"):
        make_launcher("tiny", {"run_root": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"does not take options \['colour', 'flavour'\]"):
        make_launcher("tiny", {"flavour": "mint", "colour": "red"})


def test_unregistered_it_is_gone_everywhere(tmp_path: Path) -> None:
    assert "tiny" not in vocab.LAUNCHERS
    assert "tiny" not in [e.name for e in launcher_entries()]
    with pytest.raises(ConfigError, match=r"unknown launcher 'tiny'; choose one of local, ssh"):
        make_launcher("tiny", {"flavour": "mint"})


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_launcher("local", LocalLauncher, "again")
    with pytest.raises(ConfigError, match="lower-case identifier"):
        register_launcher("No Such", LocalLauncher, "bad name")


def test_get_hub_lists_a_launcher_registered_in_the_server_and_launches_with_it(
    tmp_path: Path,
) -> None:
    with start_jupyter(tmp_path, extra_args=[register_in_server(tmp_path)]) as server:
        info = server.ok("GET", "hub")
        by_name = {entry["name"]: entry for entry in info["launchers"]}
        assert list(by_name) == ["local", "ssh", "slurm", "manual", "tiny"]
        assert by_name["tiny"] == {
            "name": "tiny",
            "summary": "a test launcher",
            "hub_runs": True,
            "options": [
                {"key": "flavour", "help": "which flavour of tiny", "required": True,
                 "type": "text", "flag": "--flavour"},
                {"key": "run_root", "help": "where job directories go", "required": False,
                 "type": "text", "flag": "--run-root"},
            ],
        }  # fmt: skip
        assert by_name["manual"]["hub_runs"] is False
        assert by_name["ssh"]["options"][0] == {
            "key": "host", "help": "host name or ssh config alias", "required": True,
            "type": "text", "flag": "--host",
        }  # fmt: skip

        program = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
        launch = {"kind": "command", "launcher": "tiny", "command": program}
        refused = server.api("POST", "servers", launch)
        assert refused.status == 400, refused.body
        assert "the tiny launcher needs --flavour" in refused.json()["error"]
        run_root = tmp_path / "tiny-runs"
        launch["launcher_options"] = {"flavour": "mint", "run_root": str(run_root)}
        started = server.ok("POST", "servers", launch)
        assert started["launcher"] == "tiny" and started["job_id"]
        # The hub made a TinyLauncher from the list: its job directory is under run_root.
        assert (run_root / started["job_id"]).is_dir()
