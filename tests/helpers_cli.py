"""Running `paraconnect serve | connect | listen` as real processes in tests: the command, a
process wrapper that waits for the JSON "ready" line, and a fixture that stops them all."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PARACONNECT = [str(Path(sys.executable).with_name("paraconnect"))]


class Proc:
    def __init__(self, args: list[str], home: Path, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.stderr = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [*PARACONNECT, *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "PARACONNECT_HOME": str(home), **env},
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read_lines, daemon=True)
        self._reader.start()

    def _read_lines(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)
        self._lines.put("")

    def next_event(self, timeout: float = 30) -> dict[str, object]:
        """The next JSON line on the command's stdout."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        assert line, f"no event; rc={self.popen.poll()}; log:\n{self.log.read_text()}"
        return dict(json.loads(line))

    def ready(self, timeout: float = 30) -> dict[str, object]:
        event = self.next_event(timeout)
        assert event["event"] == "ready", event
        return event

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.stderr.close()
        self._reader.join(10)  # it ends at EOF, once the process is gone
        if self.popen.stdout is not None and not self._reader.is_alive():
            self.popen.stdout.close()
        return self.popen.returncode

    def errors(self) -> list[str]:
        return [ln for ln in self.log.read_text().splitlines() if ln.startswith("paraconnect:")]


@pytest.fixture(name="procs")
def procs_fixture(home: Path, tmp_path: Path) -> Iterator[object]:
    """`procs(*args, env=...)` starts a paraconnect command; all are stopped at the end.
    (Import `procs_fixture` into a test module to use `procs`.)"""
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(list(args), home, tmp_path / f"proc{len(started)}.log", env or {})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
