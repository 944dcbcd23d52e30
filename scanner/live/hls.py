"""HLS playlist pre-check of HTTP(S) sources, before FFmpeg opens them.

FFmpeg follows every URI a playlist lists with the source's ``protocol_whitelist``
and headers: this check refuses a playlist (or one it nests) that names anything
but http/https, or, for a source with credentials, another host, with a clear
message instead of FFmpeg's generic "invalid data".
"""
from __future__ import annotations

import math
import re
import time
from typing import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from .deadline import Abandoned, Deadline
from .urls import RefusedURL, SourceError, SourceURL, mask_credentials

PLAYLIST_MAX_BYTES = 1 << 20


def is_playlist(src: SourceURL) -> bool:
    return src.scheme in ("http", "https") and urlsplit(src.url).path.lower().endswith((".m3u8", ".m3u"))


def needs_precheck(src: SourceURL) -> bool:
    """An HLS playlist by name, or any HTTP(S) source with credentials: FFmpeg also takes a
    playlist served under another name (by its MIME type) and would send the credentials
    to every host it lists, so such a source's response is sniffed."""
    return is_playlist(src) or (src.scheme in ("http", "https") and src.auth is not None)


# Tags whose URI="..." is itself a playlist (FFmpeg opens it as one, whatever its name).
_PLAYLIST_TAGS = ("#EXT-X-MEDIA:", "#EXT-X-I-FRAME-STREAM-INF:")


def _playlist_uris(text: str) -> list[tuple[str, bool]]:
    """(URI, is a playlist) of an M3U8 text: segment/variant lines and ``URI="..."`` attributes."""
    uris, variant = [], False
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            nested = line.upper().startswith(_PLAYLIST_TAGS)
            uris += [(u, nested) for u in re.findall(r'URI="([^"]*)"', line)]
            variant = variant or line.upper().startswith("#EXT-X-STREAM-INF:")
        else:
            uris.append((line, variant))  # the line after #EXT-X-STREAM-INF is a variant playlist
            variant = False
    return uris


def _origin(url: str) -> tuple:
    p = urlsplit(url)
    return p.scheme.lower(), p.hostname, p.port or {"http": 80, "https": 443}.get(p.scheme.lower())


def check_playlist(url: str, text: str, same_origin: bool = False) -> list[str]:
    """Refuse a playlist that references anything but HTTP(S); return nested playlists.

    ``same_origin``: also refuse references to other hosts (set when the source
    carries credentials, which FFmpeg would send along with every segment request).
    """
    nested = []
    for ref, is_nested in _playlist_uris(text):
        full = urljoin(url, ref)
        scheme = urlsplit(full).scheme.lower()
        if scheme not in ("http", "https"):
            raise RefusedURL(
                f"HLS playlist {mask_credentials(url)} references a {scheme or 'local'}: URI "
                f"({mask_credentials(ref)[:80]}); only http/https are allowed"
            )
        if same_origin and _origin(full) != _origin(url):
            raise RefusedURL(
                f"HLS playlist {mask_credentials(url)} references another host ({mask_credentials(full)[:80]}); "
                "refused because the stream's credentials would be sent there"
            )
        if is_nested or urlsplit(full).path.lower().endswith((".m3u8", ".m3u")):
            nested.append(full)
    return nested


def _fetch_playlist(client: httpx.Client, url: str, sniff: bool = False, deadline: float = math.inf,
                    cancelled: Callable[[], bool] = lambda: False, trace: Callable | None = None) -> str | None:
    """The playlist text (first MiB); with ``sniff``, None as soon as the body is not M3U.

    httpx's timeout is per read: a server dripping a byte a second kept the stream
    'connecting' for days, its thread deaf to removal. ``deadline`` bounds the body read
    here; a :class:`.deadline.Deadline`'s ``trace`` also ends a read blocked on dripped headers.
    The request's timeouts (its connect's too) are bounded by the time left before ``deadline``."""
    left = deadline - time.monotonic()
    timeout = max(left, 0.01) if left < math.inf else httpx.USE_CLIENT_DEFAULT
    with client.stream("GET", url, timeout=timeout, extensions={"trace": trace} if trace else None) as r:
        r.raise_for_status()
        data = b""
        for chunk in r.iter_bytes():
            if cancelled():
                raise SourceError("stopped while the playlist was read")
            if time.monotonic() > deadline:
                raise SourceError(f"timeout: {mask_credentials(url)} not read whole in time (a slow or endless body)")
            data += chunk
            head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
            if sniff and len(head) >= 7 and not head.startswith(b"#EXTM3U"):
                return None  # a video (progressive HTTP, MPEG-TS): stop reading it here
            if len(data) >= PLAYLIST_MAX_BYTES:
                break
    if sniff and not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U"):
        return None
    return data[:PLAYLIST_MAX_BYTES].decode("utf-8", "replace")


def _ended(stop: Deadline, shown: str, timeout_s: float) -> SourceError:
    if not stop.expired:
        return SourceError("stopped while the playlist was read")
    return SourceError(f"timeout: no whole playlist from {shown} within {timeout_s:g}s "
                       "(a slow, dripping or unanswering server)")


def precheck_playlist(src: SourceURL, timeout_s: float, depth: int = 2,
                      cancelled: Callable[[], bool] = lambda: False) -> None:
    """Fetch an HLS playlist (and its variant playlists) and refuse foreign schemes.

    Credentials go in the Authorization header and then no redirect is followed.
    Every error message is redacted. The whole check takes at most about ``timeout_s``, even
    while a server drips its headers (a :class:`.deadline.Deadline` then shuts the socket down)
    or never answers a connect (the check runs in :meth:`.deadline.Deadline.run`, which stops
    waiting for it); ``cancelled()`` true (the stream is being removed) ends it within 0.5 s.
    """
    with Deadline(timeout_s, cancelled) as stop:
        try:
            stop.run(lambda: _check_all(src, timeout_s, depth, cancelled, stop))
        except Abandoned:  # blocked in a connect (or DNS lookup) no socket shutdown reaches
            raise _ended(stop, src.masked, timeout_s) from None


def _check_all(src: SourceURL, timeout_s: float, depth: int, cancelled: Callable[[], bool], stop: Deadline) -> None:
    headers = {"Authorization": src.auth} if src.auth else {}
    todo, seen, deadline = [src.url], set(), time.monotonic() + stop.left
    # With credentials, no redirect is followed, as FFmpeg's open that comes next (max_redirects 0).
    # A fresh client under the Deadline: every connection it uses reports its socket there.
    with httpx.Client(timeout=timeout_s, headers=headers, follow_redirects=src.auth is None,
                      max_redirects=3) as client:
        while todo and depth >= 0:
            nxt = []
            for url in todo:
                if url in seen:
                    continue
                seen.add(url)
                text = _fetch_checked(client, src, url, deadline, cancelled, stop, timeout_s)
                if text is not None:
                    nxt += check_playlist(url, text, same_origin=src.auth is not None)
            todo, depth = nxt, depth - 1


def _fetch_checked(client: httpx.Client, src: SourceURL, url: str, deadline: float,
                   cancelled: Callable[[], bool], stop: Deadline, timeout_s: float) -> str | None:
    """:func:`_fetch_playlist` of ``url``; its errors raised as redacted SourceErrors."""
    shown = src.masked if url == src.url else mask_credentials(url)
    try:
        # the source itself may be a video: only named playlists are taken as one
        text = _fetch_playlist(client, url, sniff=url == src.url and not is_playlist(src),
                               deadline=deadline, cancelled=cancelled, trace=stop.trace)
    except httpx.HTTPStatusError as e:
        hint = "; a stream with credentials follows no redirect" if e.response.is_redirect else ""
        raise SourceError(f"cannot fetch {shown}: HTTP {e.response.status_code}{hint}") from e
    except httpx.HTTPError as e:
        if stop.fired:  # what the shut-down socket raised is not the reason
            raise _ended(stop, shown, timeout_s) from e
        raise SourceError(src.redact(f"cannot fetch {shown}: {type(e).__name__}: {e}")) from e
    if stop.fired:  # a body cut off by the shutdown reads as a whole one when it has no length
        raise _ended(stop, shown, timeout_s)
    return text
