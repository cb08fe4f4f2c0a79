from collections.abc import Callable
from typing import Any

class Relay:
    """A relay's steady state on a thread of its own, in C (_crelay.c)."""

    def __init__(
        self,
        sslobj: Any,
        context: Any,
        incoming: Any,
        outgoing: Any,
        tls_fd: int,
        plain_fd: int,
        size: int,
        slice: int,
        record: int,
        notify: Callable[[], object],
    ) -> None: ...
    def start(self) -> None:
        """Start the thread: from now on only it reads and writes the sockets and the SSL."""
    def stop(self) -> tuple[int, int, bool, str, str, bytes, bytes] | None:
        """Stop the thread (or collect one that ended by itself): (end, errno, eof, library,
        reason, plaintext left, records left); None if it was not running."""
    @property
    def counts(self) -> tuple[int, int]:
        """(bytes sent to the plain peer, bytes from it encrypted) by the thread, all runs."""
    @property
    def running(self) -> bool: ...
