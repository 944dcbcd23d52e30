"""HLS playlist pre-check of HTTP(S) sources, before FFmpeg opens them.

FFmpeg follows every URI a playlist lists with the source's ``protocol_whitelist``
and headers: this check refuses a playlist (or one it nests) that names anything
but http/https, or, for a source with credentials, another host, with a clear
message instead of FFmpeg's generic "invalid data".

For a source with credentials this check is the only guard (FFmpeg sends them to every
host a playlist lists), so it reads a playlist as FFmpeg's HLS demuxer does -- lines end at
a NUL too, attribute values may be unquoted or hold backslash escapes, ``http:host/x`` names
host ``host`` -- and refuses what it could not read whole (a playlist over
``PLAYLIST_MAX_BYTES``, playlists nested deeper than it follows).
"""
from __future__ import annotations

import math
import re
import time
from typing import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from . import tls
from .deadline import Abandoned, Deadline
from .urls import RefusedURL, SourceError, SourceURL, mask_credentials

PLAYLIST_MAX_BYTES = 1 << 20
# Playlists one check reads, the source's own included (a master's variants and renditions are
# a few dozen). Unbounded, a playlist listing thousands of others, each listing thousands more,
# kept the check fetching until open_timeout_s, its list of URLs to read growing ~5 MB a second.
MAX_PLAYLISTS = 100


def is_playlist(src: SourceURL) -> bool:
    return src.scheme in ("http", "https") and urlsplit(src.url).path.lower().endswith((".m3u8", ".m3u"))


def needs_precheck(src: SourceURL) -> bool:
    """An HLS playlist by name, or any HTTP(S) source with credentials: FFmpeg also takes a
    playlist served under another name (by its MIME type) and would send the credentials
    to every host it lists, so such a source's response is sniffed."""
    return is_playlist(src) or (src.scheme in ("http", "https") and src.auth is not None)


# Tags whose URI="..." is itself a playlist (FFmpeg opens it as one, whatever its name).
_PLAYLIST_TAGS = ("#EXT-X-MEDIA:", "#EXT-X-I-FRAME-STREAM-INF:")
# FFmpeg ends a playlist line at '\n', '\r' or NUL (ff_get_line); splitlines() did not cut at
# NUL, so '#EXTINF:1,<NUL>http://other/seg.ts' was one comment here and a segment to FFmpeg.
_LINE_END_RE = re.compile(r"[\r\n\x00]")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _lines(text: str):
    """Every line of ``text`` as FFmpeg or Python would cut it (each FFmpeg line starts one)."""
    for part in _LINE_END_RE.split(text):
        yield from part.splitlines()


def _attributes(text: str) -> list[tuple[str, str]]:
    """``KEY=value`` pairs of a tag's attribute list as FFmpeg reads them (ff_parse_key_value):
    a value is quoted (a backslash escapes the next character) or runs to a space or ','.
    ``URI="...`` only was looked for: ``URI=http://other/key`` and ``URI="http\\://other/key"``
    were segments FFmpeg fetched, with the credentials, from a host never checked."""
    pairs, i, n = [], 0, len(text)
    while True:
        while i < n and (text[i] in " \t\n\v\f\r,"):
            i += 1
        eq = text.find("=", i)
        if i >= n or eq < 0:
            return pairs
        key, i, value = text[i:eq], eq + 1, []
        if text[i:i + 1] == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                if i < n:
                    value.append(text[i])
                i += 1
            i += 1
        else:
            while i < n and text[i] not in " \t\n\v\f\r,":
                value.append(text[i])
                i += 1
        pairs.append((key, "".join(value)))


def _playlist_uris(text: str) -> list[tuple[str, bool]]:
    """(URI, is a playlist) of an M3U8 text: segment/variant lines and ``URI=`` attributes."""
    uris, variant = [], False
    for line in _lines(text):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            nested = line.upper().startswith(_PLAYLIST_TAGS)
            found = re.findall(r'URI="([^"]*)"', line) + \
                [v for k, v in _attributes(line.partition(":")[2]) if k.strip().upper() == "URI"]
            uris += [(u, nested) for u in found]
            variant = variant or line.upper().startswith("#EXT-X-STREAM-INF:")
        else:
            uris.append((line, variant))  # the line after #EXT-X-STREAM-INF is a variant playlist
            variant = False
    return uris


def _target(base: str, ref: str) -> str:
    """The URL FFmpeg opens for ``ref`` listed in the playlist at ``base``: urljoin's, except that a
    ``ref`` with a scheme is whole (FFmpeg reads 'http:host/x' and 'http:/host/x' as host 'host',
    where urljoin put them on the playlist's own host)."""
    ref = ref.strip()
    m = _SCHEME_RE.match(ref)
    if m and not ref.startswith("//", m.end()):
        return f"{m.group(0)}//{ref[m.end():].lstrip('/')}"
    return urljoin(base, ref)


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
        try:  # urlsplit/.port raise ValueError: the stream was retried on a bare "Port out of range"
            full = _target(url, ref)
            scheme = urlsplit(full).scheme.lower()
            other = _origin(full) != _origin(url)  # also checks the port
        except ValueError as e:
            raise RefusedURL(f"HLS playlist {mask_credentials(url)} lists a malformed URI "
                             f"({mask_credentials(ref)[:80]}): {e}") from None
        if scheme not in ("http", "https"):
            raise RefusedURL(
                f"HLS playlist {mask_credentials(url)} references a {scheme or 'local'}: URI "
                f"({mask_credentials(ref)[:80]}); only http/https are allowed"
            )
        if same_origin and other:
            raise RefusedURL(
                f"HLS playlist {mask_credentials(url)} references another host ({mask_credentials(full)[:80]}); "
                "refused because the stream's credentials would be sent there"
            )
        if is_nested or urlsplit(full).path.lower().endswith((".m3u8", ".m3u")):
            nested.append(full)
    return nested


def _fetch_playlist(client: httpx.Client, url: str, sniff: bool = False, deadline: float = math.inf,
                    cancelled: Callable[[], bool] = lambda: False, trace: Callable | None = None,
                    whole: bool = False) -> str | None:
    """The playlist text (first MiB); with ``sniff``, None as soon as the body is not M3U;
    with ``whole``, :class:`RefusedURL` when it is longer (FFmpeg reads past the first MiB).

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
            if len(data) > PLAYLIST_MAX_BYTES:
                if whole:
                    raise RefusedURL(f"HLS playlist {mask_credentials(url)} is longer than {PLAYLIST_MAX_BYTES} "
                                     "bytes: refused, as the hosts it lists past that could not be checked")
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
    # It trusts what FFmpeg is told to trust (tls_verify, ca_file), so the two never disagree.
    with httpx.Client(timeout=timeout_s, headers=headers, follow_redirects=src.auth is None,
                      max_redirects=3, verify=tls.ssl_context(src)) as client:
        while todo and depth >= 0 and len(seen) + len(todo) <= MAX_PLAYLISTS:
            nxt: dict[str, None] = {}  # ordered, each URL once
            for i, url in enumerate(todo):
                seen.add(url)
                text = _fetch_checked(client, src, url, deadline, cancelled, stop, timeout_s)
                if text is not None and url == src.url:
                    tls.refuse_hls_auth(src)  # its segments would get the credentials unverified
                if text is not None:
                    nxt.update(dict.fromkeys(check_playlist(url, text, same_origin=src.auth is not None)))
                if len(seen) + len(nxt) > MAX_PLAYLISTS:  # the rest of this level stays to be read
                    nxt = {**dict.fromkeys(todo[i + 1:]), **nxt}
                    break
            todo, depth = [u for u in nxt if u not in seen], depth - 1
    # FFmpeg opens nested playlists at any depth: with credentials, one left unchecked could list any host.
    # Without, FFmpeg's protocol_whitelist still keeps them to http/https.
    if todo and src.auth is not None:
        many = len(seen) + len(todo) > MAX_PLAYLISTS
        why = f"lists more than {MAX_PLAYLISTS} playlists in all" if many else "nests playlists deeper than"
        raise RefusedURL(f"HLS playlist {src.masked} {why} the check follows ({mask_credentials(todo[0])[:80]}); "
                         "refused because the stream's credentials would be sent to every host they list")


def _fetch_checked(client: httpx.Client, src: SourceURL, url: str, deadline: float,
                   cancelled: Callable[[], bool], stop: Deadline, timeout_s: float) -> str | None:
    """:func:`_fetch_playlist` of ``url``; its errors raised as redacted SourceErrors."""
    shown = src.masked if url == src.url else mask_credentials(url)
    try:
        # The source itself may be a video: only named playlists are taken as one. A nested one is
        # always sniffed: FFmpeg parses no playlist that does not open with #EXTM3U, and reading
        # any text as one quoted its lines ('password: x' as a 'password:' URI) in the error that
        # GET /streams shows -- a playlist could nest an internal URL to read it back that way.
        text = _fetch_playlist(client, url, sniff=url != src.url or not is_playlist(src),
                               deadline=deadline, cancelled=cancelled, trace=stop.trace, whole=src.auth is not None)
    except httpx.HTTPStatusError as e:
        hint = "; a stream with credentials follows no redirect" if e.response.is_redirect else ""
        raise SourceError(f"cannot fetch {shown}: HTTP {e.response.status_code}{hint}") from e
    except httpx.HTTPError as e:
        if stop.fired:  # what the shut-down socket raised is not the reason
            raise _ended(stop, shown, timeout_s) from e
        untrusted = tls.from_ssl_error(src, urlsplit(url).netloc.rpartition("@")[2], e)
        if untrusted is not None:  # a certificate, not the network: said so, and not retried
            raise untrusted from e
        raise SourceError(src.redact(f"cannot fetch {shown}: {type(e).__name__}: {e}")) from e
    if stop.fired:  # a body cut off by the shutdown reads as a whole one when it has no length
        raise _ended(stop, shown, timeout_s)
    return text
