"""Bearer-token checks of the ``dfscan serve`` API: the header test and the reloading token file."""
from __future__ import annotations

import hmac
import logging
import os
import threading

from .config import ConfigError, read_token_file

log = logging.getLogger(__name__)


def check_bearer(header: str | None, token: str | None) -> bool:
    """True when no token is required or ``header`` is ``Bearer <token>``."""
    if token is None:
        return True
    # The scheme is case-insensitive (RFC 9110 11.1): "bearer <token>" was refused on every request.
    if not header or header[:7].lower() != "bearer ":
        return False
    # Starlette decodes header bytes as latin-1: back to the bytes sent, compared with the token's
    # UTF-8 bytes. Only SP/HTAB are stripped: str.strip() took a last UTF-8 byte 0x85/0xA0 (NEL/NBSP).
    return hmac.compare_digest(header[7:].strip(" \t").encode("latin-1"), token.encode())


class TokenFile:
    """The bearer token of ``api.token_file``, read again whenever the file changes.

    A rotated token (a Kubernetes Secret is updated in place, an operator rewrites the file
    after a leak) must stop the old one at once, not at the next restart. A file that turns
    unreadable, empty or too short (:func:`read_token_file`, as at start) accepts no token at
    all (fail closed).
    """

    def __init__(self, path: str, token: str | None):
        self.path, self._token = path, token
        self._key = self._stat()
        self._lock = threading.Lock()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)  # follows the ..data symlink Kubernetes swaps
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def __call__(self) -> str | None:
        key = self._stat()
        with self._lock:
            if key != self._key:
                self._key, self._token = key, self._read()
            return self._token

    def _read(self) -> str | None:
        # The reader of the start (ApiConfig.token): the same rules and words, except that a
        # file emptied now is no token to accept rather than "no token required".
        try:
            tok = read_token_file(self.path, empty_ok=False)
        except ConfigError as e:  # names the file, never its content
            log.error("%s: the API now holds no token, every request needing it is refused", e)
            return None
        log.info("api.token_file %s changed: the new token is in use", self.path)
        return tok
