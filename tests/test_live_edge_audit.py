"""Edge of live inputs and of the serve API: secrets in log lines, FFmpeg's protocol whitelist
against a crafted playlist, trust settings that cannot be resolved, the HLS check's bounds.

Every server here is real (Python's http.server on 127.0.0.1); nothing leaves the machine.
"""
from __future__ import annotations

import logging
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import av
import httpx
import pytest

from conftest import make_video, routes_handler, start_http, stop_http
from scanner.config import ConfigError
from scanner.live.config import parse_config
from scanner.live.hls import MAX_PLAYLISTS, precheck_playlist
from scanner.live.sinks import WebhookSink
from scanner.live.urls import RefusedURL, open_options, parse_source

MPEGURL = "application/vnd.apple.mpegurl"
TOKEN, SEG_SIG, HOOK_PATH, HOOK_TOKEN = "Tok3n-Secret-4417", "SegSig-Secret-0993", "Hook-Path-Secret-2281", "Hook-Tok-5120"


class _Hook(BaseHTTPRequestHandler):
    """Takes any POST (a webhook receiver)."""

    def log_message(self, *a):
        pass

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()


def test_http_request_lines_never_log_a_stream_or_webhook_secret(caplog):
    """httpx logs each request's whole URL at INFO ("HTTP Request: GET http://.../live.m3u8?token=...")
    and httpcore the response headers at DEBUG: under `dfscan -v serve` the HLS check's query
    token and every webhook POST's secret path reached the log unmasked, on each connect and event."""
    caplog.set_level(logging.DEBUG)  # the root logger, as `dfscan -vv` sets it
    playlist = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8?sig={SEG_SIG}\n".encode()
    low = f"#EXTM3U\n#EXTINF:1,\nseg.ts?sig={SEG_SIG}\n#EXT-X-ENDLIST\n".encode()
    httpd, port = start_http(routes_handler({f"/live.m3u8?token={TOKEN}": (MPEGURL, playlist),
                                             f"/low.m3u8?sig={SEG_SIG}": (MPEGURL, low)}, requests := []))
    hook, hook_port = start_http(_Hook)
    try:
        precheck_playlist(parse_source(f"http://127.0.0.1:{port}/live.m3u8?token={TOKEN}"), 5.0)
        assert [p for p, _ in requests] == [f"/live.m3u8?token={TOKEN}", f"/low.m3u8?sig={SEG_SIG}"]
        sink = WebhookSink(f"http://127.0.0.1:{hook_port}/services/{HOOK_PATH}?token={HOOK_TOKEN}", timeout_s=5)
        sink.deliver({"id": "r-1", "type": "verdict"})
    finally:
        stop_http(httpd)
        stop_http(hook)
    for secret in (TOKEN, SEG_SIG, HOOK_PATH, HOOK_TOKEN):
        assert secret not in caplog.text, caplog.text


def _mpegts(tmp_path: Path) -> Path:
    clip = make_video(tmp_path / "local.ts", frames=12, fmt="mpegts")
    with av.open(str(clip)) as c:  # the file itself plays: only the whitelist can keep it out
        assert sum(1 for _ in c.decode(video=0)) == 12
    return clip


@pytest.mark.parametrize("ref", ["file://{p}", "file:{p}", "crypto+file://{p}", "crypto:file://{p}",
                                 "subfile,,start,0,end,0,,:file://{p}", "concat:file://{p}", "hls+file://{p}"])
def test_ffmpeg_never_reads_a_local_file_a_served_playlist_lists(tmp_path, ref):
    """The whitelist alone (no m3u8 name, no credentials: the pre-check does not run): FFmpeg opens
    the playlist from a real HTTP server with the options an http source gets, and decodes
    nothing from the local MPEG-TS file it lists, whatever protocol wraps it."""
    clip = _mpegts(tmp_path)
    body = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{ref.format(p=clip)}\n#EXT-X-ENDLIST\n".encode()
    httpd, port = start_http(routes_handler({"/live": (MPEGURL, body)}, requests := []))
    src = parse_source(f"http://127.0.0.1:{port}/live")
    opts = open_options(src, 5.0)
    assert opts["protocol_whitelist"] == "http,https,tcp,tls,crypto"
    frames = 0
    try:
        with av.open(src.url, options=opts, timeout=(5.0, 5.0)) as c:
            frames = sum(1 for s in c.streams.video for _ in c.decode(s))
    except av.error.FFmpegError:
        pass
    finally:
        stop_http(httpd)
    assert frames == 0 and [p for p, _ in requests] == ["/live"]


@pytest.mark.parametrize("kind", ["loop", "unknown_user"])
def test_a_ca_file_that_cannot_be_resolved_is_refused_by_name(tmp_path, kind):
    """A symlink loop or '~nosuchuser/...' raised RuntimeError from pathlib: POST /streams
    answered a plain-text 500 "Internal Server Error" (traceback in the log) and a config
    holding it stopped `dfscan serve` with a traceback instead of one line naming the key."""
    from test_api import AUTH, TOKEN as API_TOKEN, _serve

    if kind == "loop":
        (tmp_path / "a.pem").symlink_to(tmp_path / "b.pem")
        (tmp_path / "b.pem").symlink_to(tmp_path / "a.pem")
        ca = str(tmp_path / "a.pem")
    else:
        ca = "~no-such-user-dfscan-audit/ca.pem"
    with pytest.raises(ConfigError, match=r"streams\.0\.ca_file: .*cannot resolve it"):
        parse_config({"streams": [{"name": "door", "url": "rtsps://door.lan/s", "ca_file": ca}]})
    with pytest.raises(ConfigError, match=r"defaults\.ca_file: .*cannot resolve it"):
        parse_config({"defaults": {"ca_file": ca}})
    svc, server = _serve(API_TOKEN)
    try:
        r = httpx.post(f"http://127.0.0.1:{server.port}/streams", headers=AUTH, timeout=10,
                       json={"name": "door", "url": "rtsps://127.0.0.1:9/s", "ca_file": ca})
        assert r.status_code == 400 and "cannot resolve it" in r.json()["details"][0]["msg"], r.text
        assert "door" not in svc.names()
    finally:
        server.stop()
        svc.stop()


class _Fanout(BaseHTTPRequestHandler):
    """Every playlist lists 300 other playlists of its own: thousands, each a few KB."""

    paths: list[str] = []

    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        self.paths.append(self.path)
        stem = re.sub(r"\W", "", self.path.rsplit("/", 1)[-1].removesuffix(".m3u8"))
        body = ("#EXTM3U\n" + "".join(f"#EXT-X-STREAM-INF:BANDWIDTH={i + 1}\n{stem}-{i}.m3u8\n"
                                      for i in range(300))).encode()
        self.send_response(200)
        self.send_header("Content-Type", MPEGURL)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("user", ["", "viewer:Pw-7731@"])
def test_the_playlist_check_reads_a_bounded_number_of_playlists(user):
    """A playlist listing 300 playlists, each listing 300 more, kept the check fetching until
    open_timeout_s (~5 MB more URLs held each second, ~200 MB after 30 s; the stream never
    started, its check timing out on every connect). Now it reads at most MAX_PLAYLISTS; with
    credentials the rest could list any host, so the stream is refused saying so."""
    _Fanout.paths = []
    httpd, port = start_http(_Fanout)
    src = parse_source(f"http://{user}127.0.0.1:{port}/live.m3u8")
    try:
        if user:
            with pytest.raises(RefusedURL, match=f"more than {MAX_PLAYLISTS} playlists"):
                precheck_playlist(src, 20.0)
        else:
            precheck_playlist(src, 20.0)  # FFmpeg's whitelist guards what is left unread
    finally:
        stop_http(httpd)
    assert 0 < len(_Fanout.paths) <= MAX_PLAYLISTS and len(set(_Fanout.paths)) == len(_Fanout.paths)


def test_a_foscam_style_loginpas_is_masked():
    """Foscam-style cameras take ?loginuse=admin&loginpas=SECRET: no masked name was in
    'loginpas', so its password was shown in logs, /streams and errors."""
    from scanner.live.urls import mask_credentials

    url = "http://cam.local:88/cgi-bin/CGIStream.cgi?cmd=GetMJStream&loginuse=admin&loginpas=Hunter2x"
    assert "Hunter2x" not in mask_credentials(url)
    assert "Hunter2x" not in parse_source(url).masked
    assert "loginuse=admin" in mask_credentials(url)  # a user name is not a secret


@pytest.mark.parametrize("ref", ["http://127.0.0.1:99999/x.m3u8", "http://[fe80::1/x.m3u8", "http://[zz]/a.ts"])
def test_a_malformed_uri_in_a_playlist_is_refused_naming_it(ref):
    """urlsplit's ValueError ("Port out of range", "Invalid IPv6 URL") escaped the check: the
    stream was retried on a bare message instead of refused with its reason."""
    from scanner.live.hls import check_playlist

    text = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{ref}\n"
    for same_origin in (False, True):
        with pytest.raises(RefusedURL, match="malformed URI"):
            check_playlist("http://user:pw@127.0.0.1:8080/live.m3u8", text, same_origin=same_origin)
