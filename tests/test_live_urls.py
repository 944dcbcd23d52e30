"""Stream URL credentials beyond ``user:password@``: secrets in the query string.

Many IP cameras take their login in the query (``?usr=admin&pwd=...``, Foscam CGI;
``?user=...&password=...``), SRT a ``?passphrase=``, signed CDN URLs a signature. They
were shown in /streams, the logs and every FFmpeg error as given, since only
``token=``/``password=``-like names were masked.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import routes_handler, start_http, stop_http
from scanner.live.source import LiveSource, SourceSettings
from scanner.live.urls import SourceError, mask_credentials, mask_text, open_options, parse_source

SECRET = "Sup3r-Secret-9"


@pytest.mark.parametrize("query", [f"usr=admin&pwd={SECRET}", f"user=admin&passwd={SECRET}",
                                   f"passphrase={SECRET}&streamid=x", f"api_key={SECRET}",
                                   f"X-Amz-Signature={SECRET}", f"access_token={SECRET}&q=1"])
def test_query_credentials_masked(query):
    src = parse_source(f"http://127.0.0.1:1/cgi-bin/CGIStream.cgi?cmd=GetMJStream&{query}")
    assert SECRET not in src.masked and "cmd=GetMJStream" in src.masked
    assert SECRET not in src.redact(f"Server returned 404 for {SECRET}")
    assert SECRET not in mask_text(f"Connection refused: 'http://other/seg.ts?{query}'")
    assert mask_credentials("http://h/x?q=keyframe&n=1") == "http://h/x?q=keyframe&n=1"  # others kept


def test_query_password_not_in_stream_error_or_log(caplog):
    caplog.set_level(logging.DEBUG)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    src = LiveSource("cam", f"rtsp://127.0.0.1:{port}/live?user=admin&pwd={SECRET}",
                     SourceSettings(open_timeout_s=1, max_retries=0))
    src.start()
    src._thread.join(10)
    info = src.describe()
    assert info["state"] == "stopped" and info["errors"] == 1 and info["last_error"]
    assert SECRET not in repr(info) and SECRET not in caplog.text


# ---------------------------------------------------------------- HLS by content, not by name
class _Server:
    """HTTP server answering ``routes[path] = (content type, body)``; records (path, Authorization)."""

    def __init__(self, routes: dict[str, tuple[str, bytes]]):
        self.requests: list[tuple[str, str | None]] = []
        self.httpd, self.port = start_http(routes_handler(routes, self.requests))

    def close(self):
        stop_http(self.httpd)


def _play(url: str) -> LiveSource:
    src = LiveSource("cam", url, SourceSettings(sample_fps=5, open_timeout_s=3, max_retries=0))
    src.start()
    src._thread.join(20)
    return src


@pytest.mark.parametrize("layout", ["media", "master"])
def test_credentials_not_sent_to_hosts_of_a_playlist_without_m3u8_name(layout):
    """FFmpeg takes a playlist by its MIME type whatever its name (and any variant of a master
    playlist): such a playlist listing another host got the camera's credentials sent there."""
    other = _Server({"/seg0.ts": ("video/mp2t", b"\x47" * 188)})
    media = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://localhost:{other.port}/seg0.ts\n".encode()
    mpegurl = "application/vnd.apple.mpegurl"
    routes = {"/live": (mpegurl, media)} if layout == "media" else {
        "/live": (mpegurl, b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nlow\n"), "/low": (mpegurl, media)}
    cam = _Server(routes)
    try:
        src = _play(f"http://viewer:{SECRET}@127.0.0.1:{cam.port}/live")
        assert "another host" in src.stats.last_error, src.describe()
        assert other.requests == []
        assert SECRET not in repr(src.describe())
    finally:
        cam.close()
        other.close()


def test_credentialed_progressive_http_still_plays():
    """The sniff reads the first bytes only; a video behind credentials decodes as before."""
    clip = (Path(__file__).parent / "data" / "d1.mp4").read_bytes()
    cam = _Server({"/video.mp4": ("video/mp4", clip)})
    try:
        src = _play(f"http://viewer:{SECRET}@127.0.0.1:{cam.port}/video.mp4")
        assert src.stats.sampled >= 1 and src.stats.errors == 0, src.describe()
        assert all(a is not None for _, a in cam.requests)
    finally:
        cam.close()


@pytest.mark.parametrize("bad", ["\t", "\x1b[31m", "\x7f", "\u2028", "\x85", "\u200b", "\x0b", "\u3000"])
def test_url_with_control_or_space_characters_refused(bad):
    """Only CR, LF, NUL and space were refused: a tab (dropped by urlsplit, kept by FFmpeg: the shown
    URL was not the one opened) or an ANSI escape (replayed into the operator's terminal by the log)
    passed, though the message says control characters are refused."""
    with pytest.raises(SourceError, match="control characters"):
        parse_source(f"rtsp://cam.local/live{bad}x")
    assert parse_source("http://cam.local/caf\u00e9/live.ts").kind == "network"  # non-ASCII text is fine


def test_udp_buffer_sizes_in_the_url_are_bounded():
    # FFmpeg's UDP reader takes fifo_size/buffer_size from the URL over dfscan's options:
    # udp://...?fifo_size=2000000000 asked FFmpeg for a 376 GB ring buffer for one stream.
    from scanner.live.urls import SourceError, parse_source

    assert parse_source("udp://239.0.0.1:5000?fifo_size=50000&localaddr=10.0.0.2").scheme == "udp"
    for bad in ("udp://239.0.0.1:5000?fifo_size=2000000000", "rtp://127.0.0.1:5004?buffer_size=1e12",
                "udp://:5000?FIFO_SIZE=-1", "udp://@:5000?buffer_size=",
                # not ASCII digits: "²" was a ValueError (POST /streams: 500), "٣" passed as 3
                "udp://@:5000?fifo_size=%C2%B2", "udp://@:5000?fifo_size=²", "udp://@:5000?buffer_size=٣",
                # after a '#': no query to Python's urlsplit, but FFmpeg's udp reads it (376 GB asked)
                "udp://239.0.0.1:5000#?fifo_size=2000000000", "rtp://127.0.0.1:5004#x?buffer_size=1e12"):
        with pytest.raises(SourceError, match="must be a whole number up to"):
            parse_source(bad)


@pytest.mark.parametrize("url", [f"rtsp://admin:{SECRET}?x@cam.local/live", f"rtsp://admin:{SECRET}#x@cam.local/live",
                                 "rtsp://admin:1234/Sup3r-Secret-9@cam.local/live",
                                 f"http://viewer:{SECRET}/x@cam.local:8080/live.m3u8"])
def test_password_with_an_unencoded_delimiter_never_shown(url):
    """A password holding '/', '?' or '#' (not percent-encoded) ends the authority early, for
    Python and FFmpeg alike: 'admin:...?' was refused as malformed with the password in the
    error (a 400 body, the config error line), and 'admin:1234/...' was accepted, shown whole
    in /streams and the log, and opened on host 'admin'. Refused now, quoting none of it."""
    with pytest.raises(SourceError, match="percent-encode") as e:
        parse_source(url)
    assert SECRET not in str(e.value) and "1234" not in str(e.value)
    assert SECRET not in mask_credentials(url) and SECRET not in mask_text(f"error opening '{url}'", url)
    assert parse_source("rtsp://admin:Sup3r%2FSecret%3F9@cam.local/live").masked == "rtsp://***@cam.local/live"
    assert parse_source("udp://@:5000").kind == "network"  # '@' inside the authority is fine


def test_at_sign_in_a_path_or_query_of_a_host_without_credentials_is_fine():
    """A '@' after a host with no ':' cannot end a cut password: '@handle' paths and e-mail
    query values were refused (and masked as 'https://***@b.example')."""
    for url in ("https://cdn.example/@channel/index.m3u8", "https://cdn.example/live.m3u8?mail=a@b.example"):
        assert parse_source(url).masked == url and mask_credentials(url) == url


def test_an_srt_passphrase_or_udp_option_holding_an_at_sign_is_accepted_and_masked():
    """SRT/UDP/RTP take no user:password@, and FFmpeg copies their options as written, so
    'srt://h:9000?passphrase=a@b' (a port, then '@') was refused as a cut password with advice
    to write %40, which SRT would then use literally: such a passphrase was unusable."""
    url = f"srt://ingest.example:9000?passphrase=Ab@{SECRET}"
    src = parse_source(url)
    assert src.url == url and SECRET not in src.masked and "passphrase=***" in src.masked
    assert SECRET not in src.redact(f"Connection setup failure: '{url}'")
    assert parse_source("udp://239.0.0.1:5000?localaddr=a@b").kind == "network"
    with pytest.raises(SourceError, match="percent-encode"):  # where credentials may stand: unchanged
        parse_source(f"rtsp://admin:1234/x@cam.local:554/live?k={SECRET}")


@pytest.mark.parametrize("query", [f"md5={SECRET}&expires=1700000000",  # nginx secure_link
                                   f"hdnts=exp=1700000000~acl=/*~hmac={SECRET}",  # Akamai token auth
                                   f"hdnea=st=1~exp=2~hmac={SECRET}", f"jwt={SECRET}", f"hash={SECRET}&e=1",
                                   f"hmac={SECRET}"])
def test_signed_url_parameters_masked(query):
    """Signed CDN/HLS URLs carry their signature in parameters named md5 (nginx secure_link),
    hdnts/hdnea/hmac (Akamai), jwt or hash: shown as given in /streams, the log and errors."""
    url = f"https://cdn.example/live/index.m3u8?{query}"
    src = parse_source(url)
    assert SECRET not in src.masked and src.masked.startswith("https://cdn.example/live/index.m3u8?")
    assert SECRET not in src.redact(f"HTTP error 403 Forbidden: '{url}'")
    assert SECRET not in mask_text(f"Connection refused: 'https://other/seg.ts?{query}'")


@pytest.mark.parametrize("url", ["HTTP://127.0.0.1:{port}/video.mp4", "Http://127.0.0.1:{port}/video.mp4"])
def test_uppercase_scheme_plays(url):
    """Schemes are case-insensitive (RFC 3986) and dfscan accepted 'HTTP://...', but FFmpeg looks
    protocols up by exact name: the stream stopped for good with "this FFmpeg build has no
    'http' protocol", a false reason, and was never scored."""
    clip = (Path(__file__).parent / "data" / "d1.mp4").read_bytes()
    cam = _Server({"/video.mp4": ("video/mp4", clip)})
    try:
        src = _play(url.format(port=cam.port))
        assert src.stats.sampled >= 1 and src.stats.errors == 0, src.describe()
    finally:
        cam.close()
    assert parse_source("RTSP://cam.local/live").url == "rtsp://cam.local/live"


def test_an_http_playlist_may_list_https_segments():
    """The pre-check accepts an http playlist listing https segments (CDNs serve them so), but
    FFmpeg's whitelist for http:// sources held no https/tls: the stream never played and was
    retried forever as "Invalid data found when processing input". Seen here by the TLS hello
    that reaches the segment's port."""
    import threading

    hello = socket.socket()
    hello.bind(("127.0.0.1", 0))
    hello.listen(4)
    hello.settimeout(8)
    got: list[bytes] = []

    def accept():
        try:
            conn, _ = hello.accept()
            conn.settimeout(3)
            got.append(conn.recv(5))
            conn.close()
        except OSError:
            pass

    waiter = threading.Thread(target=accept, daemon=True)
    waiter.start()
    media = (f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttps://127.0.0.1:{hello.getsockname()[1]}/seg0.ts\n"
             "#EXT-X-ENDLIST\n").encode()
    cam = _Server({"/live.m3u8": ("application/vnd.apple.mpegurl", media)})
    try:
        _play(f"http://127.0.0.1:{cam.port}/live.m3u8")
        waiter.join(10)
        assert got and got[0][:1] == b"\x16", got  # a TLS handshake record: FFmpeg went to the https segment
    finally:
        cam.close()
        hello.close()
    assert "file" not in open_options(parse_source("http://cam/live.m3u8"), 5)["protocol_whitelist"].split(",")


def test_rtmp_stream_key_is_masked_like_a_password():
    """rtmp://host/app/KEY: the key is what nginx-rtmp, SRS and ingest services take as the
    credential to publish under that name; it was shown as given in /streams, logs and errors."""
    from scanner.live.urls import mask_text, parse_source

    key = "x7Kq-93pa-Zr1t-mm0e"
    src = parse_source(f"rtmp://media.example:1935/live/{key}")
    assert src.masked == "rtmp://media.example:1935/live/***"
    assert key not in src.redact(f"rtmp://media.example:1935/live/{key}: Input/output error (key {key})")
    assert key not in repr(src) and src.url.endswith(key)  # FFmpeg still gets it
    assert mask_text(f"failed: rtmps://h/app/{key}", f"rtmps://h/app/{key}") == "failed: rtmps://h/app/***"
    assert parse_source(f"rtmp://h/app/{key}/").masked == "rtmp://h/app/***/"  # a trailing '/' too
    common = parse_source("rtmp://h/live/stream")  # a common play name: masked in URLs only
    assert common.redact("rtmp://h/live/stream: no video stream found") == "rtmp://h/live/***: no video stream found"
    assert parse_source("rtmp://h/live").masked == "rtmp://h/live"  # no key, only the application
    assert parse_source("rtsp://h/live/cam1").masked == "rtsp://h/live/cam1"  # RTSP paths are not keys


@pytest.mark.parametrize("streamid", ["#!::r=live/cam1,u=alice,s=SESSION123,m=request",  # access control
                                      "LIVEKEY-abcdef123456",  # platform ingest: the key is the streamid
                                      "#!::r=live/livestream,secret=abc123",  # SRS
                                      "%23%21%3A%3Ar%3Dlive%2Flivestream%2Csecret%3Dabc123"])
def test_srt_streamid_is_masked_like_a_stream_key(streamid):
    """SRT servers and platforms take the streamid as the credential to publish or read, like an
    RTMP stream key: it was shown as given in /streams, logs and errors, and a '#' in it (the
    '#!::' syntax) made the rest of the options, a passphrase too, a fragment no mask looked at."""
    url = f"srt://ingest.example:9000?mode=caller&streamid={streamid}&latency=200&passphrase={SECRET}"
    src = parse_source(url)
    assert src.masked == "srt://ingest.example:9000?mode=caller&streamid=***&latency=200&passphrase=***"
    assert src.url == url and src.kind == "network"  # FFmpeg still gets it as given
    forms = {streamid, unquote(streamid)}  # FFmpeg percent-decodes it and may quote either
    for form in forms:
        err = f"Connection to '{url}' failed: streamid '{form}' rejected ({SECRET})"
        for shown in (src.redact(err), mask_text(err, url)):
            assert not any(f in shown for f in forms) and SECRET not in shown, shown
            assert shown.startswith("Connection to 'srt://ingest.example:9000?mode=caller&streamid=***&"), shown
    assert not any(f in mask_text(f"error opening '{url}'") for f in forms)  # no URL known: the API's 400s
    assert not any(f in repr(src) for f in forms)


def test_a_short_srt_streamid_is_masked_only_as_the_parameter_value():
    src = parse_source("srt://h:9000?streamid=live")
    assert src.masked == "srt://h:9000?streamid=***"
    assert src.redact("srt://h:9000?streamid=live: no live video") == "srt://h:9000?streamid=***: no live video"
    assert parse_source("srt://h:9000?mode=listener").masked == "srt://h:9000?mode=listener"


def test_srt_streamid_not_in_stream_listing_error_or_log(caplog):
    """What GET /streams lists (LiveSource.describe) and the log: without a real SRT server (PyAV's
    FFmpeg has no libsrt: the stream stops at once, else its connect times out)."""
    caplog.set_level(logging.DEBUG)
    streamid = "#!::r=live/cam1,u=alice,s=SESSION123,m=request"
    src = LiveSource("cam", f"srt://127.0.0.1:9?streamid={streamid}", SourceSettings(open_timeout_s=1, max_retries=0))
    src.start()
    src._thread.join(10)
    info = src.describe()
    assert info["state"] == "stopped" and info["errors"] == 1 and info["last_error"], info
    assert info["url"] == "srt://127.0.0.1:9?streamid=***" and info["name"] == "cam"
    assert "SESSION123" not in repr(info) and "SESSION123" not in caplog.text


def test_an_srt_passphrase_holding_a_semicolon_is_masked_whole():
    """FFmpeg's SRT reader takes an option's value up to the next '&' only: a passphrase
    'ab;cd...' is all one. The generic mask also ended a value at ';' (as some HTTP servers
    split a query), so /streams, logs and errors showed 'passphrase=***;cd...'."""
    url = "srt://h:9000?passphrase=ab;cdSECRETPART&streamid=x&latency=200"
    src = parse_source(url)
    assert src.masked == "srt://h:9000?passphrase=***&streamid=***&latency=200"
    err = f"Connection to '{url}' failed (passphrase 'ab;cdSECRETPART' rejected)"
    for shown in (src.redact(err), mask_text(err, url)):
        assert "SECRETPART" not in shown, shown
    # an HTTP query keeps ';' as a separator there
    assert mask_credentials("https://h/x.m3u8?token=abc;v=1") == "https://h/x.m3u8?token=***;v=1"


@pytest.mark.parametrize("url, shown", [("udp://@:5000", "udp://@:5000"), ("udp://@239.1.1.1:5000", "udp://@239.1.1.1:5000"),
                                        ("rtsp://cam@h/x", "rtsp://***@h/x"), ("http://:pw@h/x", "http://***@h/x")])
def test_an_empty_userinfo_is_not_shown_as_a_masked_password(url, shown):
    """A UDP listen address ('@:5000') read 'udp://***@:5000', as if a password had been hidden."""
    assert mask_credentials(url) == shown


def test_a_udp_source_reserves_a_bounded_ring_by_default():
    """dfscan asked FFmpeg for a 1,000,000-packet UDP ring (188 MB per stream, resident once it
    wrapped: measured +188 MB after 372 MB of traffic), which also let a slow decoder fall
    minutes behind the stream. The default ring is 12 MB; a URL may still ask for more."""
    from scanner.live.urls import open_options, parse_source

    for url in ("udp://127.0.0.1:5000", "rtp://127.0.0.1:5004"):
        opts = open_options(parse_source(url), 5)
        assert int(opts["fifo_size"]) * 188 <= 16 << 20 and opts["overrun_nonfatal"] == "1"
