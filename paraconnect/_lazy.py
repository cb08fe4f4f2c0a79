"""Package faces that import on first use (PEP 562): ``paraconnect.pki``, ``paraconnect.hub`` and
``paraconnect.render`` name everything they export, and load a submodule (cryptography, the
tunnel, VTK) only when one of its names is asked for, so that ``paraconnect --help``, the
notebook API and the widgets stay light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    where: Mapping[str, str],
    namespace: MutableMapping[str, Any],
    names: Iterable[str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a face: `where` maps a name to its module,
    relative to `package` (``"._certs"``); a name is imported once, then kept in `namespace`."""
    listed = sorted(names)

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__
