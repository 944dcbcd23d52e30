"""Certificate checks of live TLS sources: trust settings, their validation, and clear failures.

FFmpeg reports an untrusted certificate as a bare "Input/output error" (EIO), which read as
a network blip and was retried forever. After such a failure the same host is asked again
here, with Python's ssl and the same trust, to tell a certificate problem (then
:class:`~.urls.Untrusted`: never retried, named with what to set) from anything else.

Limit of PyAV's bundled FFmpeg (8.0, checked by ``tests/test_live_tls.py``): its HLS demuxer
passes ``tls_verify``/``ca_file`` to the first playlist request only; segments, variant
playlists and playlist reloads are fetched over TLS *unverified*. Without credentials that is
logged as a warning (:func:`warn_unverified`); with credentials, which FFmpeg sends on each of
those requests, the stream is refused unless ``tls_verify`` is false (:func:`refuse_hls_auth`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from .urls import SourceURL, Untrusted

log = logging.getLogger(__name__)

CA_FILE_MAX_BYTES = 16 << 20  # certifi's bundle is ~0.3 MB; bounded: the path may come from the API
DEFAULT_PORTS = {"https": 443, "rtsps": 322, "rtmps": 443}
HINT = ("set tls_verify: false (dfscan watch --no-tls-verify) for a camera with a self-signed "
        "certificate, or ca_file (--ca-file) naming its certificate or CA bundle")


def check_ca_file(path: str) -> str:
    """``path`` made absolute, once it is a readable regular file holding a PEM certificate.

    Checked when the stream is configured, so a typo is a config error, not an EIO at every
    connect. Only regular files: '/dev/zero' or a FIFO would block the API's request."""
    try:
        # Inside the try: '~nobody/x.pem' and a symlink loop raise RuntimeError (OSError from
        # Python 3.13), which was a 500 "Internal Server Error" to POST /streams, a traceback at start.
        p = Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:
        raise ValueError(f"ca_file {path}: cannot resolve it ({getattr(e, 'strerror', None) or e})") from None
    try:
        if not p.is_file():
            raise ValueError(f"ca_file {path}: not a file")
        with p.open("rb") as f:
            data = f.read(CA_FILE_MAX_BYTES + 1)
    except OSError as e:
        raise ValueError(f"ca_file {path}: cannot read it ({e.strerror or e})") from None
    if len(data) > CA_FILE_MAX_BYTES or b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"ca_file {path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    return str(p)


def check_trust(tls_verify: bool, ca_file: str | None) -> None:
    """A ``ca_file`` with verification off would look like a pinned certificate and pin nothing."""
    if ca_file and not tls_verify:
        raise ValueError("ca_file is only used with tls_verify: true (it names what to trust)")


def with_trust(src: SourceURL, tls_verify: bool, ca_file: str | None) -> SourceURL:
    """``src`` with a stream's trust settings. A ``ca_file`` from the defaults is dropped for a
    stream that turns verification off (set together at one level they are refused: :func:`check_trust`)."""
    return dataclasses.replace(src, tls_verify=tls_verify, ca_file=ca_file if tls_verify else None)


def ssl_context(src: SourceURL) -> ssl.SSLContext | bool:
    """What httpx (the HLS pre-check) verifies with: the trust FFmpeg is given, or False."""
    if not src.tls_verify:
        return False
    import certifi

    return ssl.create_default_context(cafile=src.ca_file or certifi.where())


def untrusted(src: SourceURL, host: str, why: str) -> Untrusted:
    # A certificate for another name (a camera reached by IP) is fixed in the URL, not by trusting it.
    fix = f"use the name the certificate holds in the URL, or {HINT}" if "mismatch" in why else HINT
    return Untrusted(src.redact(f"TLS certificate not trusted for host {host} ({why.rstrip('.')}): {fix}"))


def from_ssl_error(src: SourceURL, host: str, e: BaseException) -> Untrusted | None:
    """An :class:`Untrusted` when ``e`` (or what caused it: httpx wraps it) is a failed certificate check."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, ssl.SSLCertVerificationError):
            return untrusted(src, host, e.verify_message or "verification failed")
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def diagnose(src: SourceURL, e: BaseException, timeout_s: float) -> Untrusted | None:
    """Why FFmpeg's open of ``src`` failed with EIO, when the cause is the server's certificate.

    FFmpeg's GnuTLS error is logged, not raised; one handshake with Python's ssl and the same
    trust names it (self-signed, wrong host, expired). None when that handshake passes or the
    host cannot be reached: then it is not (or not only) the certificate, and the error stands."""
    port = DEFAULT_PORTS.get(src.scheme)
    if not src.tls_verify or port is None or getattr(e, "errno", None) != errno.EIO:
        return None
    parts = urlsplit(src.url)
    host, port = parts.hostname or "", parts.port or port
    try:
        ctx = ssl_context(src)
    except (OSError, ssl.SSLError) as err:  # the ca_file went away or was replaced since the start
        return Untrusted(f"ca_file {src.ca_file} cannot be used: {getattr(err, 'strerror', None) or err}")
    try:
        with socket.create_connection((host, port), timeout=min(timeout_s, 5.0)) as sock, \
                ctx.wrap_socket(sock, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as err:
        return untrusted(src, f"{host}:{port}", err.verify_message or "verification failed")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def diagnosed(src: SourceURL, timeout_s: float):
    """Run FFmpeg's open of ``src``; an EIO caused by the certificate is raised as :class:`Untrusted`."""
    try:
        yield
    except OSError as e:
        untrusted = diagnose(src, e, timeout_s)
        if untrusted is not None:
            raise untrusted from e
        raise


def refuse_hls_auth(src: SourceURL) -> None:
    """Refuse an HLS playlist over https with credentials while ``tls_verify`` is on.

    FFmpeg sends the credentials with every segment and reload request, and verifies none of
    those connections: an impostor on the path would receive them although the playlist's own
    certificate checked out. A warning would let the password go all the same."""
    if src.auth and src.tls_verify and src.scheme == "https":
        raise Untrusted(
            f"{src.masked}: HLS over https with credentials refused: FFmpeg verifies the certificate of "
            "the playlist's first request only, not of the segment and reload requests that carry the "
            "credentials too; set tls_verify: false to send them unverified knowingly, or serve the "
            "playlist without credentials (a signed URL)")


def warn_unverified(name: str, src: SourceURL, is_playlist: bool) -> None:
    """Say once per stream that an https HLS stream is verified for its first request only."""
    if is_playlist and src.tls_verify and src.scheme == "https" and not src.auth:
        log.warning("stream %s (%s): HLS segments and playlist reloads are fetched without certificate "
                    "verification (FFmpeg verifies the playlist's first request only): their content "
                    "could be replaced on the network", name, src.masked)
