"""Stream URL validation, credential masking and per-scheme FFmpeg open options.

FFmpeg follows URLs found *inside* media (HLS playlists, RTSP redirects, concat
lists), so each source is opened with a ``protocol_whitelist`` limited to what its
own scheme needs: an HTTP(S) HLS playlist can then never make FFmpeg read
``file:`` or talk ``udp:``. HLS playlists are additionally pre-checked (:mod:`.hls`) so
a refusal carries a clear message instead of FFmpeg's generic "invalid data".
"""
from __future__ import annotations

import base64
import errno
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit, urlunsplit

from engines.errors import DfscanError

# httpx logs every request's whole URL at INFO ("HTTP Request: GET http://cam/x.m3u8?token=..."),
# httpcore the response headers (a redirect's signed Location) at DEBUG: under `dfscan -v serve`
# the HLS check's and each webhook POST's secrets reached the log unmasked. dfscan logs these
# requests itself, masked; theirs are kept to warnings and errors.
for _lib in ("httpx", "httpcore"):
    logging.getLogger(_lib).setLevel(logging.WARNING)


class SourceError(DfscanError):
    """A live source URL is invalid, refused for security reasons, or cannot be opened."""


class Unsupported(SourceError):
    """This FFmpeg build cannot read the source at all (missing protocol or device); never retried."""


class RefusedURL(SourceError):
    """The URL (or something it references) uses a protocol this source may not use."""


class Untrusted(SourceError):
    """TLS cannot be verified as the stream asks (an untrusted certificate, or HLS with credentials,
    whose segments FFmpeg fetches unverified): the operator must decide, so it is never retried."""


# FFmpeg protocols each scheme may use (nested opens inherit the whitelist).
WHITELISTS: dict[str, str] = {
    "rtsp": "rtsp,rtp,udp,tcp",
    "rtsps": "rtsps,rtsp,rtp,udp,tcp,tls",
    "rtmp": "rtmp,tcp",
    "rtmps": "rtmps,rtmp,tcp,tls",
    "http": "http,https,tcp,tls,crypto",  # an http playlist may list https segments
    "https": "https,http,tcp,tls,crypto",
    "udp": "udp",
    "rtp": "rtp,udp",
    "srt": "srt",
    "file": "file",
}
NETWORK_SCHEMES = frozenset(WHITELISTS) - {"file"}
# RTSP lower transports (FFmpeg's ``rtsp_transport``); "auto" is ours: TCP, then UDP.
RTSP_TRANSPORTS = ("auto", "tcp", "udp", "udp_multicast", "http", "https")
# Extra protocols RTSP tunnelled over HTTP(S) needs (FFmpeg opens an http: GET/POST pair).
_TUNNEL_PROTOCOLS = {"http": "http", "https": "https,http,tls"}
DEVICE_RE = re.compile(r"^/dev/video\d{1,3}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class SourceURL:
    """A validated source: ``kind`` is ``network``, ``device`` or ``file``.

    ``url`` is what FFmpeg opens. For HTTP(S) the ``user:password@`` part is taken
    out of it and sent as an ``Authorization: Basic`` header instead (``headers``
    FFmpeg option, also used for HLS segments); RTSP/RTMP have no such option, so
    their credentials stay inside ``url`` for FFmpeg only. Nothing shown to a user
    ever uses ``url``: use :attr:`masked` and :meth:`redact`.
    """

    url: str = field(repr=False)
    scheme: str
    kind: str
    auth: str | None = field(default=None, repr=False)  # "Basic ..." for HTTP(S) sources
    secrets: tuple[str, ...] = field(default=(), repr=False)  # literal credentials to scrub from text
    shown: str = ""  # the URL as given, credentials masked
    # Certificate checks of every TLS connection FFmpeg makes (:func:`tls_options`); the
    # stream's settings replace these defaults (:func:`scanner.live.tls.with_trust`).
    tls_verify: bool = True
    ca_file: str | None = None  # PEM CA bundle or the camera's own certificate; None: certifi's

    @property
    def masked(self) -> str:
        return self.shown or mask_credentials(self.url)

    def redact(self, text: str) -> str:
        """``text`` with this source's URL masked and its credentials replaced by ``***``."""
        text = mask_text(text, self.url)
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def __repr__(self) -> str:
        return f"SourceURL({self.masked!r}, scheme={self.scheme!r}, kind={self.kind!r})"


# ``scheme://`` opening a command-line argument: a URL, not a path. Two characters or more,
# so a Windows drive ('C://x') stays a path; 'http:/x' (one slash) and a file named 'http:'
# inside a folder are paths too.
_URL_START_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(text: str) -> bool:
    """Whether ``text`` starts with ``scheme://`` (any scheme, not only the ones dfscan opens)."""
    return bool(_URL_START_RE.match(text))


def mask_credentials(url: str) -> str:
    """``rtsp://user:pass@host/x`` -> ``rtsp://***@host/x``; query secrets masked too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc
    tail = url.partition("://")[2]
    if _cut_userinfo(url, parts):  # everything up to the last '@' may be the password
        return mask_credentials(f"{parts.scheme}://***@{tail.rsplit('@', 1)[1]}")
    if parts.scheme.lower() == "srt" and "?" in url:  # its options may hold a '#' (:func:`_ffmpeg_query`)
        head, _, query = url.partition("?")
        query = _SRT_SECRET_RE.sub(r"\1***", _STREAMID_RE.sub(r"\1***", query))
        return f"{mask_credentials(head)}?{query}"
    userinfo, at, host = netloc.rpartition("@")
    if userinfo:  # an empty one ('udp://@:5000', listen) hides nothing: shown as '***@' it read as a password
        netloc = "***@" + host
    query = _QUERY_SECRET_RE.sub(r"\1***", parts.query)
    path = parts.path
    if _stream_key(parts):  # the last non-empty segment ('/app/KEY/' too)
        head, key, tail = re.match(r"(.*/)([^/]+)(/*)$", path).groups()
        path = f"{head}***{tail}"
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def _stream_key(parts) -> str | None:
    """The stream key of an RTMP URL (``rtmp://host/app/KEY``: the path after the
    application), or None. Servers (nginx-rtmp, SRS, the platforms' ingest) take it as the
    credential to publish under that name, so it is shown as ``***`` like a password; the
    stream's own ``name`` tells streams apart."""
    if not parts.scheme.lower().startswith("rtmp"):
        return None
    segments = parts.path.strip("/").split("/")
    return segments[-1] if len(segments) >= 2 and segments[-1] else None


# Query parameters that carry credentials (?token=, ?api_key=, ?password=, and the cameras'
# ?usr=admin&pwd=..., SRT's ?passphrase=, signed HLS/CDN URLs' ?md5= (nginx secure_link),
# ?hdnts=/?hdnea=/?hmac= (Akamai), ?jwt=, ?hash=, Foscam-style ?loginuse=admin&loginpas=...):
# any parameter whose name contains one of these.
_SECRET_NAMES = r"(?:token|key|pass|pwd|loginpas|secret|auth|sig|credential|hmac|hash|md5|jwt|hdnts|hdnea)"
_QUERY_SECRET_RE = re.compile(rf"(?i)((?:^|(?<=[&;]))[^=&;]*{_SECRET_NAMES}[^=&;]*=)[^&;]*")
# FFmpeg's SRT reader ends an option's value at '&' only: a ';' is part of the passphrase,
# and '?passphrase=ab;cdef' was shown as 'passphrase=***;cdef'.
_SRT_SECRET_RE = re.compile(rf"(?i)((?:^|(?<=&))[^=&]*{_SECRET_NAMES}[^=&]*=)[^&]*")


# The same parameters inside free text (an error quoting some other URL).
_TEXT_QUERY_SECRET_RE = re.compile(
    rf"(?i)([?&;][^=&;\s'\"?]*{_SECRET_NAMES}[^=&;\s'\"?]*=)[^&;\s'\"]*")

# SRT's streamid: what platforms' ingest (the stream key itself), SRS ('#!::r=live/x,secret=...')
# and access-controlled servers ('#!::r=...,u=alice,s=SESSION') take as the credential, like an
# RTMP stream key. FFmpeg reads SRT options from the text after the first '?', each up to the
# next '&' ('#', ';' and ',' included), percent-decoded.
_STREAMID_RE = re.compile(r"(?i)((?:^|(?<=&))[^=&]*streamid[^=&]*=)[^&]*")
# (Not one masked already: its value would take the ':' or ',' after it, which SRT values hold.)
_TEXT_STREAMID_RE = re.compile(r"(?i)([?&][^=&\s'\"?]*streamid[^=&\s'\"?]*=)(?!\*\*\*)[^&\s'\"]*")


def _ffmpeg_query(url: str, parts) -> str:
    """The query as FFmpeg reads it: for SRT all after the first '?', where Python's urlsplit
    ends it at a '#' (the '#!::' streamid syntax: the rest, a passphrase too, became a fragment)."""
    return url.partition("?")[2] if parts.scheme.lower() == "srt" else parts.query


def _secret_re(parts) -> re.Pattern:
    """What finds credential parameters in the query of a URL of ``parts``' scheme."""
    return _SRT_SECRET_RE if parts.scheme.lower() == "srt" else _QUERY_SECRET_RE


def _stream_ids(url: str, parts) -> list[str]:
    """The streamid values of an SRT URL (none for other schemes)."""
    if parts.scheme.lower() != "srt":
        return []
    return [m.group(0)[len(m.group(1)):] for m in _STREAMID_RE.finditer(_ffmpeg_query(url, parts))]


def _query_secrets(query: str, secret_re: re.Pattern = _QUERY_SECRET_RE) -> tuple[str, ...]:
    """Values of credential query parameters, raw and percent-decoded (to scrub from free text)."""
    vals = (m.group(0)[len(m.group(1)):] for m in secret_re.finditer(query))
    return tuple({x for v in vals for x in (v, unquote(v)) if len(x) >= 3})


_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"@]*@")


def mask_text(text: str, url: str | None = None) -> str:
    """Mask credentials in free text (FFmpeg error messages quote the raw URL).

    With ``url``, its password is also scrubbed wherever it appears on its own
    (e.g. Python's "nonnumeric port: 'secret@host'").
    """
    if url:
        text = text.replace(url, mask_credentials(url))
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        for secret in _secrets(parts.netloc, _ffmpeg_query(url, parts), _secret_re(parts)) if parts else ():
            text = text.replace(secret, "***")
        text = _scrub_stream_key(text, _stream_key(parts) if parts else None)
        for sid in _stream_ids(url, parts) if parts else ():
            text = _scrub_long(text, sid)
    text = _TEXT_STREAMID_RE.sub(r"\1***", text)  # a short streamid only as the parameter's value
    return _TEXT_QUERY_SECRET_RE.sub(r"\1***", _USERINFO_RE.sub(r"\1***@", text))


def _scrub_stream_key(text: str, key: str | None) -> str:
    """``text`` with an RTMP stream ``key`` masked, raw or percent-decoded: everywhere when
    it is 8 characters or more (platform keys are long and random), else only where it ends
    a path ('/KEY'): a short play name like 'stream' scrubbed as a bare word mangled every
    message ('no video *** found')."""
    for k in {key, unquote(key)} if key else ():
        text = text.replace(k, "***") if len(k) >= 8 else \
            re.sub(rf"(?<=/){re.escape(k)}(?=$|[/?#\s'\"])", "***", text)
    return text


def _scrub_long(text: str, value: str) -> str:
    """``text`` with ``value`` replaced by ``***`` in each form FFmpeg may quote it (raw, '+' as a
    space, percent-decoded) that is 8 characters or more: shorter ones are masked only as a
    parameter's value (a bare 'live' scrubbed everywhere mangled every message)."""
    for v in sorted({value, value.replace("+", " "), unquote(value), unquote_plus(value)}, key=len, reverse=True):
        if len(v) >= 8:
            text = text.replace(v, "***")
    return text


def _secrets(netloc: str, query: str = "", secret_re: re.Pattern = _QUERY_SECRET_RE) -> tuple[str, ...]:
    """Literal credential strings of a URL's ``user:password@`` part and query, longest first."""
    found = set(_query_secrets(query, secret_re))
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        pw = userinfo.partition(":")[2]
        # Raw and percent-decoded forms: either may show up in a library's error message.
        found |= {x for x in (userinfo, pw, unquote(pw)) if len(x) >= 3}
    return tuple(sorted(found, key=len, reverse=True))


def _split_credentials(url: str, parts) -> tuple[str, str | None, tuple[str, ...]]:
    """(url for FFmpeg, Basic auth header or None, literal secrets) of a network URL."""
    secrets = _secrets(parts.netloc, _ffmpeg_query(url, parts), _secret_re(parts))
    if "@" not in parts.netloc:
        return url, None, secrets
    user, _, pw = parts.netloc.rsplit("@", 1)[0].partition(":")
    if parts.scheme.lower() not in ("http", "https"):
        return url, None, secrets  # RTSP/RTMP/SRT read them from the URL (FFmpeg only, never shown)
    token = base64.b64encode(f"{unquote(user)}:{unquote(pw)}".encode()).decode()
    bare = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, parts.fragment))
    return bare, f"Basic {token}", secrets


def parse_source(url: str, allow_files: bool = False) -> SourceURL:
    """Validate a stream URL or device path; raise :class:`SourceError` / :class:`RefusedURL`."""
    # Any whitespace or control character (tab, ESC, DEL, U+2028...): Python's URL parser drops
    # some that FFmpeg keeps (two views of one URL), and logs/terminals would replay them.
    if not isinstance(url, str) or not url or len(url) > 4096 or not url.isprintable() or " " in url:
        raise SourceError("stream URL must be a non-empty string without whitespace or control characters")
    if DEVICE_RE.match(url):
        return SourceURL(url, "v4l2", "device")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in NETWORK_SCHEMES:
            _check_authority(url, parts)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:  # e.g. "http://[" or a non-numeric port
        raise SourceError(f"malformed stream URL {mask_credentials(url)}") from e
    # Schemes are case-insensitive, FFmpeg's protocol names are not: "HTTP://" was "no 'http' protocol".
    url = scheme + url[len(scheme):]
    if scheme in ("", "file") or url.startswith("/"):
        if not allow_files:
            raise RefusedURL(f"local files are not allowed as live sources: {mask_credentials(url)} "
                             "(allow_files: true in the config, dfscan watch --allow-files)")
        return SourceURL(url, "file", "file")
    if scheme not in NETWORK_SCHEMES:
        raise RefusedURL(f"unsupported stream scheme {scheme!r}; allowed: {', '.join(sorted(NETWORK_SCHEMES))}")
    if scheme != "udp" and scheme != "rtp" and not parts.hostname:
        raise SourceError(f"stream URL has no host: {mask_credentials(url)}")
    if scheme in ("udp", "rtp"):  # FFmpeg reads options after the first '?', a '#' before it too
        _check_udp_query(url.partition("?")[2], url)
    ffmpeg_url, auth, secrets = _split_credentials(url, parts)
    return SourceURL(ffmpeg_url, scheme, "network", auth=auth, secrets=secrets, shown=mask_credentials(url))


# FFmpeg's SRT, UDP and RTP readers take no ``user:password@``: their secrets are options
# (``?passphrase=``), copied as written, so a '@' in one cannot be percent-encoded away and is
# no sign of a cut password ('srt://h:9000?passphrase=a@b' was refused, the passphrase unusable).
_NO_USERINFO = frozenset({"srt", "udp", "rtp"})


def _cut_userinfo(url: str, parts) -> bool:
    """Whether ``user:password@`` may have been cut short: a password holding '/', '?' or '#'
    unencoded ends the authority there for Python and FFmpeg alike ('u:p/w@h' opens host 'u',
    port 'p'). Only then can a later '@' belong to a password: an authority without ':' holds
    none, so '@' in a path or query ('https://cdn/@channel/', '?mail=a@b') is just that."""
    return ("@" in url.partition("://")[2] and "@" not in parts.netloc and ":" in parts.netloc
            and parts.scheme.lower() not in _NO_USERINFO)


def _check_authority(url: str, parts) -> None:
    """Refuse a URL whose ``user:password@`` may have been cut short (:func:`_cut_userinfo`):
    it would open another host (the user name) and show the password in its path or query."""
    if _cut_userinfo(url, parts):
        raise SourceError(f"{parts.scheme}:// URL with a '@' after its host: percent-encode '/', '?', '#' "
                          "and '@' in a user name or password (%2F, %3F, %23, %40), and a '@' elsewhere as %40")


# FFmpeg's UDP reader takes buffer sizes from the URL's query, over the options dfscan
# sets: bounded here so one stream cannot make FFmpeg reserve gigabytes.
_UDP_LIMITS = {"fifo_size": 1_000_000, "buffer_size": 64 << 20}  # 188-byte packets; bytes
# FFmpeg's UDP ring by default: 65,536 packets of 188 bytes (12 MB; ~10 s of an 8 Mbit/s
# stream). It was 1,000,000 (188 MB a stream, all of it resident once the ring has wrapped),
# and a decoder slower than the stream then scored minutes-old footage under a current
# capture time; past the ring, packets are dropped (overrun_nonfatal) and the footage stays current.
UDP_FIFO_PACKETS = 65_536


def _check_udp_query(query: str, url: str) -> None:
    for key, value in parse_qsl(query, keep_blank_values=True):
        limit = _UDP_LIMITS.get(key.lower())
        # ASCII digits only: str.isdigit() takes "²" (int() then raised ValueError: a 500 from
        # POST /streams) and "٣" (3 to Python, 0 to FFmpeg's strtol).
        if limit is not None and not (re.fullmatch(r"[0-9]+", value) and int(value) <= limit):
            raise SourceError(f"{key} must be a whole number up to {limit} in {mask_credentials(url)}")


def open_options(src: SourceURL, timeout_s: float, rtsp_transport: str = "tcp") -> dict[str, str]:
    """FFmpeg options for opening ``src`` live with low latency and bounded waits.

    Timeouts are in microseconds where FFmpeg expects them. RTMP's ``timeout``
    means *listen* timeout, so only ``rw_timeout`` is used there.
    """
    us = str(int(timeout_s * 1e6))
    opts = {
        "flags": "low_delay",
        "probesize": "1000000",
        "analyzeduration": "1000000",
    }
    if src.kind == "device":
        return opts
    opts["protocol_whitelist"] = WHITELISTS[src.scheme]
    opts["rw_timeout"] = us
    if src.scheme in ("rtsp", "rtsps", "rtp", "udp", "srt"):
        # Real-time packet protocols: do not hold probed packets back. Not for
        # HTTP/files: there "nobuffer" discards the probed packets (an MP4 over
        # HTTP then decodes no frame at all).
        opts["fflags"] = "nobuffer"
    if src.scheme in ("rtsp", "rtsps"):
        if rtsp_transport not in RTSP_TRANSPORTS[1:]:
            raise SourceError(f"rtsp_transport must be one of {', '.join(RTSP_TRANSPORTS[1:])}, got {rtsp_transport!r}")
        opts.update(rtsp_transport=rtsp_transport, timeout=us)
        if rtsp_transport in _TUNNEL_PROTOCOLS:  # only a tunnelled stream may speak HTTP
            opts["protocol_whitelist"] += "," + _TUNNEL_PROTOCOLS[rtsp_transport]
    elif src.scheme in ("http", "https"):
        # Reconnects are ours (with backoff and metrics), not FFmpeg's silent ones.
        opts.update(timeout=us, reconnect="0")
        if src.auth:  # HLS passes "headers" on to its playlist and segment requests
            opts["headers"] = f"Authorization: {src.auth}\r\n"
            # FFmpeg sends "headers" along a redirect to any host: follow none (as webhooks do).
            opts["max_redirects"] = "0"
    elif src.scheme in ("udp", "rtp"):
        opts.update(timeout=us, overrun_nonfatal="1", fifo_size=str(UDP_FIFO_PACKETS))
    elif src.scheme in ("rtmp", "rtmps"):
        opts["rtmp_live"] = "live"
    if "tls" in opts["protocol_whitelist"].split(","):  # an http source too: a redirect may lead to https
        opts.update(tls_options(src))
    return opts


def tls_options(src: SourceURL) -> dict[str, str]:
    """FFmpeg's certificate options for ``src``.

    FFmpeg verifies nothing unless told (``tls_verify`` is 0 by default): any certificate was
    taken, and the credentials sent to whoever held it. certifi's bundle is named when no
    ``ca_file`` is, so FFmpeg trusts what httpx (the HLS pre-check) trusts, whatever system
    store the bundled GnuTLS build would look for. FFmpeg's HLS demuxer does not pass them on
    to segment, variant and reload requests (:mod:`.tls` says what follows from that).
    """
    if not src.tls_verify:
        return {"tls_verify": "0"}
    import certifi  # httpx's own dependency

    return {"tls_verify": "1", "ca_file": src.ca_file or certifi.where()}


# How to read a protocol PyAV's bundled FFmpeg lacks (its wheels are built without libsrt).
_RELAY_HINT = {
    "srt": "relay it to UDP, e.g. `srt-live-transmit srt://HOST:PORT udp://127.0.0.1:5000`, and read "
           "udp://127.0.0.1:5000",
}


def unsupported_reason(e: BaseException, scheme: str) -> str:
    """Why FFmpeg could not open a stream of ``scheme`` (a protocol this build lacks), with a way round."""
    import av  # loaded already by the source that failed

    if isinstance(e, Untrusted):  # says why already, and what to set
        return str(e)
    if not isinstance(e, av.error.ProtocolNotFoundError):
        return f"unsupported by this FFmpeg build: {e}"
    hint = _RELAY_HINT.get(scheme)
    return f"unsupported by this FFmpeg build: it has no {scheme!r} protocol" + (f"; {hint}" if hint else "")


def error_reason(e: BaseException) -> str:
    """One line saying why a stream failed (timeout, refused transport, or the error itself)."""
    import av

    if isinstance(e, av.error.ExitError) or getattr(e, "errno", None) == errno.ETIMEDOUT:
        return "timeout: no data in time"
    if getattr(e, "errno", None) == errno.EPROTONOSUPPORT:
        return "the server refused this transport (RTSP 461 Unsupported transport)"
    return f"{type(e).__name__}: {e}"
