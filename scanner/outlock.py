"""One scan at a time per output file.

Two ``dfscan scan --out r.jsonl --resume`` started together each read the file, found
the same inputs missing, scanned them all and appended: every row twice, exit 0. (And a
``--retry-errors`` rewrite replaced the file under the other scan's open descriptor.)
A scan now holds an exclusive ``flock`` on ``.NAME.lock`` beside each output from before
it reads them (resume) until they are closed; a second scan is refused at once.

The lock is a file of its own because ``--retry-errors`` replaces the output (a lock on
the output's inode would go with the old file). It is removed on release; a kill leaves
it behind unlocked (the kernel drops the lock), and the next scan takes it over.

A second hard-link name of an output has a lock file of its own, so the scan also locks
the output file itself (its inode) once it exists: a scan writing ``b.jsonl``, another name
of ``a.jsonl``, is then refused while a scan of ``a.jsonl`` runs.
"""
from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from .output import OutputError


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _take(path: Path) -> tuple[Path, int] | None:
    """Lock ``path``'s lock file; None when it cannot be created (a read-only folder: the
    output's own open then reports the reason, as before)."""
    lock = _lock_path(path)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise OutputError(f"cannot write {path}: another dfscan scan (pid {holder or '?'}) is writing "
                              f"it; wait for it to end or use another --out (lock file {lock})") from None
        except OSError:  # a file system without locks
            os.close(fd)
            return None
        try:  # the previous holder may have removed the file we opened: lock the one in place
            in_place = os.path.samestat(os.fstat(fd), os.stat(lock))
        except OSError:
            in_place = False
        if in_place:
            _write_pid(fd)
            return lock, fd
        os.close(fd)


def _write_pid(fd: int) -> None:
    """Record our pid in the lock file we hold, for the refusal message of a second scan.

    Best effort: on a full disk the write fails with ENOSPC. That failure used to send
    :func:`_take` round its loop again (it read as "lock file replaced"), forever: the scan
    hung instead of stopping with exit 4 once its first row could not be written."""
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass


def _take_inode(path: str) -> tuple[tuple[int, int], int] | None:
    """Lock the regular file ``path`` itself (all its names): its (st_dev, st_ino) and
    locked descriptor; None when it is not there, not a regular file or not lockable."""
    try:  # O_NONBLOCK: a FIFO put there meanwhile must not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return (st.st_dev, st.st_ino), fd
    except BlockingIOError:
        os.close(fd)
        raise OutputError(f"cannot write {path}: another dfscan scan is writing this file under another "
                          "name (a hard link); wait for it to end or use another --out") from None
    except OSError:  # a file system without locks
        os.close(fd)
        return None


class OutputLocks:
    """Context manager: :meth:`acquire` output paths, all released on exit."""

    def __init__(self):
        self._held: list[tuple[Path, int]] = []
        self._files: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> locked descriptor

    def acquire(self, paths) -> None:
        for p in paths:
            if os.path.exists(p) and not os.path.isfile(p):
                continue  # /dev/stdout, a FIFO: nothing to resume or duplicate in
            taken = _take(Path(os.path.realpath(p)))  # one lock however the file is reached
            if taken is not None:
                self._held.append(taken)
        self.acquire_files(paths)

    def acquire_files(self, paths) -> None:
        """Lock the output files that exist (again after they were created or rewritten)."""
        for p in map(str, paths):
            try:
                st = os.stat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in self._files:
                continue  # /dev/stdout, a FIFO: never opened; flock twice on one file would refuse us
            taken = _take_inode(p)
            if taken is not None:
                self._files[taken[0]] = taken[1]

    def release(self) -> None:
        while self._held:
            lock, fd = self._held.pop()
            try:  # removed while still locked, so no one locks a file about to vanish
                lock.unlink()
            except OSError:
                pass
            os.close(fd)
        while self._files:
            os.close(self._files.popitem()[1])

    def __enter__(self) -> "OutputLocks":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
