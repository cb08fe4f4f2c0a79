"""Files that never lose data and never leak: the one place paraconnect touches its store.

- Directories are 0700 and must belong to us; keys are 0600, created with O_EXCL|O_NOFOLLOW.
- Every write goes to a temporary file in the same directory, is fsynced, then renamed (or
  hard-linked, when the target must not already exist), and the directory is fsynced too.
- A failed write (disk full, read-only) removes its temporary file and raises StorageError:
  the previous version of the file is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import CredentialError, StorageError

# What tells that a file changed without reading it: mtime, inode (a rename put a new file in
# place) and size; None while it does not exist.
FileStamp = tuple[int, int, int] | None

__all__ = [
    "FileStamp",
    "boot_id",
    "check_private_dir",
    "ensure_private_dir",
    "file_stamp",
    "fsync_dir",
    "locked",
    "read_all",
    "read_private",
    "read_public",
    "write_atomic",
]


def _os_error_message(path: Path, exc: OSError, doing: str) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full while {doing} {path}; free some space and retry (nothing was changed)"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while {doing} {path}; free some space and retry"
    if exc.errno == errno.EROFS:
        return f"{path} is on a read-only file system; choose another PARACONNECT_HOME"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied while {doing} {path}; check the owner and mode of its directory"
    return f"could not finish {doing} {path}: {exc.strerror or exc}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_private_dir(path: Path) -> None:
    """Refuse a directory that is a symlink, not ours, or open to group/others."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CredentialError(f"{path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise CredentialError(
            f"{path} is a symbolic link; paraconnect refuses symlinked directories: "
            "replace it with a real directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CredentialError(f"{path} is not a directory; move it away and retry")
    _refuse_shared(
        st,
        str(path),
        f" (uid {os.geteuid()}); use a directory of your own (set PARACONNECT_HOME) or fix its "
        "owner with chown",
        "accessible to",
        f"chmod 700 {path}",
    )


def _refuse_shared(st: os.stat_result, name: str, owner_fix: str, exposed: str, chmod: str) -> None:
    """Refuse what another user owns or group/others can reach: `name` is what and where,
    `owner_fix` ends the not-yours line, `chmod` is the command that closes it."""
    if st.st_uid != os.geteuid():
        raise CredentialError(f"{name} belongs to uid {st.st_uid}, not to you{owner_fix}")
    if st.st_mode & 0o077:
        raise CredentialError(
            f"{name} is {exposed} group/others (mode {stat.S_IMODE(st.st_mode):04o}); run '{chmod}'"
        )


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700, or check an existing one."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageError(_os_error_message(path, exc, "creating")) from exc
    check_private_dir(path)
    return path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a mix.

    With `exclusive`, fail with FileExistsError if `path` exists (the new file is linked into
    place, which cannot replace anything).
    """
    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise StorageError(_os_error_message(path, exc, "writing")) from exc
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.rename(tmp, path)
        fsync_dir(directory)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise StorageError(_os_error_message(path, exc, "writing")) from exc


def _read(path: Path, *, private: bool, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CredentialError(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CredentialError(
                f"{what} {path} is a symbolic link; paraconnect refuses symlinked credential "
                "files: replace the link with the file itself"
            ) from None
        if exc.errno == errno.EISDIR:
            raise CredentialError(f"{what} {path} is a directory, not a file") from None
        raise CredentialError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"{what} {path} is not a regular file")
        if private:
            _refuse_shared(
                st,
                f"{what} {path}",
                "; copy it into a file of your own with mode 0600",
                "readable by",
                f"chmod 600 {path}",
            )
        return read_all(fd)
    finally:
        os.close(fd)


def read_all(fd: int) -> bytes:
    """Everything left to read from `fd` (the caller opened it, O_NOFOLLOW, and closes it)."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def read_private(path: Path, what: str = "key file") -> bytes:
    """Read a secret: refuse symlinks, files of other users and modes open to group/others."""
    return _read(path, private=True, what=what)


def read_public(path: Path, what: str = "file") -> bytes:
    """Read a non-secret file (certificates, CRLs), still refusing symlinks."""
    return _read(path, private=False, what=what)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock shared by threads and processes (flock on a fresh open file)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(_os_error_message(lock_path, exc, "locking")) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def file_stamp(path: Path | None) -> FileStamp:
    """The :data:`FileStamp` of `path`, None when there is no such file (or no path)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def boot_id() -> str:
    """This boot of the kernel, so that a pid written before a reboot is not taken as alive."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        # Unknown, not a made-up id: the job wrapper (servers/_posix.py) reads an empty one as
        # "cannot tell", where any other value unlike the real one would claim a reboot.
        return ""
