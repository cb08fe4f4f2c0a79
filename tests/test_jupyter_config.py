"""The extension's settings (``c.Paraconnect.*``): coerced where a value has one obvious
meaning, refused with a message that names the setting otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config

from paraconnect.jupyter import Paraconnect


def test_defaults() -> None:
    conf = Paraconnect()
    assert conf.listen == "127.0.0.1:0" and conf.advertise == "" and conf.data_dir == ""
    assert conf.default_level == "mutual" and conf.max_servers == 0
    assert conf.ssh_hosts == [] and conf.slurm_defaults == {}


def test_values_are_coerced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = Config()
    config.Paraconnect.data_dir = "~/pc"
    config.Paraconnect.listen = " 0.0.0.0:08765 "
    config.Paraconnect.default_level = "Encrypt"
    config.Paraconnect.ssh_hosts = [" node7", "node8", "node7", ""]
    config.Paraconnect.slurm_defaults = {"slurm-conf": "/etc/slurm.conf", "partition": "gpu"}
    conf = Paraconnect(config=config)
    assert conf.data_dir == str(tmp_path / "pc") and conf.home == tmp_path / "pc"
    assert conf.listen == "0.0.0.0:8765"
    assert conf.default_level == "encrypt"
    assert conf.ssh_hosts == ["node7", "node8"]
    assert conf.slurm_defaults == {"slurm_conf": "/etc/slurm.conf", "partition": "gpu"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("listen", "8765", "Paraconnect.listen '8765': give HOST:PORT"),
        ("listen", "host:99999", "give HOST:PORT"),
        ("enroll_listen", "host:", "Paraconnect.enroll_listen"),
        ("advertise", "login.example.org:8765", "without a port"),
        ("default_level", "paranoid", "Paraconnect.default_level 'paranoid': choose one of"),
        ("connect_timeout", 0, "Paraconnect.connect_timeout must be positive"),
        ("max_servers", -1, "Paraconnect.max_servers must be 0"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: object, message: str) -> None:
    with pytest.raises(TraitError, match=message):
        Paraconnect(**{name: value})
