"""The kinds' options as the hub describes them (op launch_options, the panel's launch form)
agree with what build_kind enforces: each described default builds, each described choice is
taken and anything else refused, and no option build_kind reads goes undescribed."""

from __future__ import annotations

import inspect
import re

import pytest

from paraconnect.errors import ConfigError
from paraconnect.servers import (
    COMMON_OPTIONS,
    KIND_OPTIONS,
    RestartPolicy,
    build_kind,
    kind_descriptions,
)
from paraconnect.servers import _kinds as kinds_module
from paraconnect.vocab import COMMAND_KINDS, KINDS

COMMAND = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]


def _build(kind: str, options: dict[str, object]) -> None:
    if kind == "trame":
        options = {"app": "app.py", **options}
    build_kind(kind, options, COMMAND if kind in COMMAND_KINDS else ())


def test_every_kind_is_described_with_typed_options() -> None:
    described = kind_descriptions()
    assert [d["name"] for d in described] == list(KINDS)
    for d in described:
        assert d["summary"] and d["needs_command"] == (d["name"] in COMMAND_KINDS)
        for o in d["options"]:
            assert o["help"] and o["type"] in ("text", "int", "bool", "choice"), o
            assert bool(o["choices"]) == (o["type"] == "choice"), o
            if o["type"] == "choice":
                assert o["default"] in o["choices"], o


@pytest.mark.parametrize("kind", KINDS)
def test_described_defaults_and_choices_build_and_others_are_refused(kind: str) -> None:
    for o in KIND_OPTIONS[kind]:
        if o.default is not None:
            _build(kind, {o.key: o.default})
        for choice in o.choices:
            extra = {"log_regex": "ready"} if (o.key, choice) == ("probe", "log") else {}
            _build(kind, {o.key: choice, **extra})
        if o.type == "choice":
            with pytest.raises(ConfigError, match=o.key):
                _build(kind, {o.key: "not-a-choice"})
        if o.type == "bool":
            with pytest.raises(ConfigError, match=o.key):
                _build(kind, {o.key: "yes"})
        if o.type == "int":
            # probe_timeout is read only with a probe other than port.
            extra = {"probe": "http"} if o.key == "probe_timeout" else {}
            with pytest.raises(ConfigError, match=o.key):
                _build(kind, {o.key: 0, **extra})


def test_no_option_build_kind_reads_goes_undescribed() -> None:
    # Every key the kinds' code reads from the options (opts.get / options.get / _int) is in
    # the table the panel builds its form from.
    source = inspect.getsource(kinds_module)

    read = set(re.findall(r"""(?:opts|options)\.get\(\s*"(\w+)\"""", source))
    read |= set(re.findall(r"""_(?:int|bool)\(opts, "(\w+)\"""", source))
    described = {o.key for opts in KIND_OPTIONS.values() for o in opts}
    assert read and read <= described, read - described


def test_the_options_of_every_launch_are_described_as_the_supervisor_reads_them() -> None:
    described = {o.key: o for o in COMMON_OPTIONS}
    assert set(described) == {"walltime", "restart_policy", "restart_limit"}
    for mode in described["restart_policy"].choices:
        assert RestartPolicy.from_options({"restart_policy": mode}).mode == mode
    with pytest.raises(ConfigError, match="restart policy"):
        RestartPolicy.from_options({"restart_policy": "always"})
    limit = described["restart_limit"]
    assert RestartPolicy.from_options({}).limit == limit.default
    RestartPolicy.from_options({"restart_limit": limit.minimum})
    with pytest.raises(ConfigError, match="restart limit"):
        RestartPolicy.from_options({"restart_limit": limit.minimum - 1})
    for kind in kind_descriptions():
        assert [o["key"] for o in kind["options"]][-3:] == list(described)
