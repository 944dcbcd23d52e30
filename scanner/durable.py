"""Append-only text files for results and events: every row whole, fsync'ed, a deletion noticed.

The one writer under the batch outputs (:mod:`scanner.output`, JSONL and CSV) and the live
service's JSONL event sink (:mod:`scanner.live.sinks`), so a fix reaches both.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)  # scanner.durable: serve sets its level with scanner.live


def make_parent(path: str | Path) -> None:
    """Create the folder ``path`` goes into. Where that name is a file, the error says so:
    ``mkdir`` reports EEXIST ("File exists"), which read as if the output itself existed
    (`--out results.jsonl/x.html`: "cannot write ...: File exists")."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory (a file has that name)",
                                 os.fspath(parent)) from e


class DurableFile:
    """A text file whose every row is written whole, fsync'ed, and noticed if deleted.

    A row that cannot be written whole (disk full) is cut off again, so the file
    ends on a row boundary: readers never meet a torn row, only ``--resume`` would.

    ``reopen_on_rotate`` (the live service's event file, which runs for months): when
    ``path`` stops naming the open file (logrotate's move-and-create, or a deleted file)
    the next row reopens ``path`` instead of going into the rotated file or failing for
    every row until a restart. Batch outputs leave it off: they hold a lock on the file
    they opened, and a file deleted under a scan is an error, never silently replaced.
    """

    def __init__(self, path: Path, append: bool, errors: str = "strict", reopen_on_rotate: bool = False):
        self.path, self.errors, self.reopen_on_rotate = path, errors, reopen_on_rotate
        self.fd = -1
        self._open(append)

    def _open(self, append: bool) -> None:
        make_parent(self.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        fd = os.open(self.path, flags, 0o666)
        st = os.fstat(fd)
        self.fd, self._id = fd, (st.st_dev, st.st_ino)
        # /dev/null, pipes and ttys cannot be fsync'ed, truncated or "deleted".
        self._regular = stat.S_ISREG(st.st_mode)

    def _rotated(self) -> bool:
        """Whether ``path`` no longer names the open file (moved away, or deleted)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._id

    def _reopen(self) -> None:
        old = self.fd
        self._open(append=True)  # an OSError here fails this row; the next one tries again
        os.close(old)
        log.info("%s was moved or deleted; writing a new file", self.path)

    def append(self, text: str) -> None:
        if self.reopen_on_rotate and self._rotated():
            self._reopen()
        try:
            self._append(text)
        except FileNotFoundError:  # deleted between the check and the write: its row went with it
            if not self.reopen_on_rotate:
                raise
            self._reopen()
            self._append(text)

    def _append(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", self.errors))
        start = os.fstat(self.fd).st_size if self._regular else 0
        try:
            while data:  # unbuffered: nothing is left behind to be written at close
                data = data[os.write(self.fd, data):]
            if self._regular:
                os.fsync(self.fd)  # a finished video survives a crash or kill
        except OSError:
            if self._regular:
                os.ftruncate(self.fd, start)
            raise
        if self._regular and os.fstat(self.fd).st_nlink == 0:  # writes would vanish silently
            raise FileNotFoundError(f"{self.path} was deleted during the scan")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
