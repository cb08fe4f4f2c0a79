"""Build the C relay (paraconnect/tunnel/_crelay.c) next to its source.

Run by hatchling as the package's build hook (pip install, editable or not), and by `make` as
a script (``python hatch_build.py``) when the source changes.  It needs a C compiler and the
headers of the Python that runs it, nothing of OpenSSL's (the module finds OpenSSL through
Python's own _ssl at import).  Without a compiler the package still installs and works: relays
run on the event loop only, and this says so on stderr; ``PARACONNECT_REQUIRE_C=1`` makes that
an error instead (the test command sets it, so a missing compiler cannot go unnoticed).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "paraconnect" / "tunnel" / "_crelay.c"


def target() -> Path:
    return SOURCE.with_name("_crelay" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def build() -> Path | None:
    """Compile the module in place (atomically); its path, or None where it cannot be built."""
    out = target()
    cc = shlex.split(str(sysconfig.get_config_var("CC") or "cc")) or ["cc"]
    include = sysconfig.get_paths()["include"]
    fd, tmp = tempfile.mkstemp(prefix=".crelay-", suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [
        *cc, "-O2", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra",
        f"-I{include}", str(SOURCE), "-o", tmp, "-ldl",
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        done = subprocess.CompletedProcess(cmd, 127, "", str(exc))
    if done.returncode != 0:
        os.unlink(tmp)
        why = (done.stderr or done.stdout).strip().splitlines()
        message = (
            f"paraconnect: the C relay ({SOURCE.name}) was not built ({' '.join(cmd[:1])}: "
            f"{why[-1] if why else 'failed'}); relays will run on the event loop only. "
            "Install a C compiler (apt-get install gcc libc6-dev) and reinstall for the fast path."
        )
        if os.environ.get("PARACONNECT_REQUIRE_C") == "1":
            raise SystemExit(message)
        print(message, file=sys.stderr)
        return None
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return out


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script by make, where hatchling need not be installed
    BuildHookInterface = object  # type: ignore[assignment,misc]


class CRelayBuildHook(BuildHookInterface):  # type: ignore[misc]
    """hatchling's custom build hook (pyproject.toml: [tool.hatch.build.hooks.custom])."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":  # type: ignore[attr-defined]
            return
        built = build()  # in place: an editable install imports it from the tree
        if built is None or version == "editable":
            return
        # The module is ignored by git (a build output): ship it as an artifact, in a wheel
        # tagged for this Python and platform.
        build_data["artifacts"].append(str(built.relative_to(ROOT)))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


if __name__ == "__main__":
    sys.exit(0 if build() is not None else 1)
