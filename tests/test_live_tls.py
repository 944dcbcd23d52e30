"""TLS certificates of live sources are verified, by default, on every connection FFmpeg makes.

FFmpeg's ``tls_verify`` is 0 unless set: ``https://viewer:pw@host/video.mp4`` was opened
against a server whose certificate named another host, and the server got the
``Authorization`` header. Every server here is real (Python's ssl on 127.0.0.1), with
certificates made by the ``openssl`` CLI at test time (no key is committed).
"""
from __future__ import annotations

import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import av
import pytest

from conftest import routes_handler, start_http, stop_http
from scanner.live.source import LiveSource, SourceSettings
from scanner.live.tls import with_trust
from scanner.live.urls import open_options, parse_source

SECRET = "Camera-Pa55-7731"
DATA = Path(__file__).parent / "data"
MPEGURL = "application/vnd.apple.mpegurl"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _cert(folder: Path, name: str, san: str) -> tuple[str, str]:
    """A self-signed certificate (CN and SAN as given) and its key: (cert.pem, key.pem)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={san}"], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    # "ip" names 127.0.0.1 only: 'localhost' is then a name it does not hold (the HLS probe)
    return {"local": _cert(d, "local", "IP:127.0.0.1,DNS:localhost"), "ip": _cert(d, "ip", "IP:127.0.0.1"),
            "evil": _cert(d, "evil.example", "DNS:evil.example")}


class HTTPSServer:
    """HTTPS on 127.0.0.1 answering ``routes[path] = (content type, body)``; records (path,
    Authorization) of every request it gets, so a test sees what reached it before a refusal."""

    def __init__(self, cert: tuple[str, str], routes: dict[str, tuple[str, bytes]]):
        self.requests: list[tuple[str, str | None]] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        self.httpd, self.port = start_http(routes_handler(routes, self.requests), ctx)

    def close(self):
        stop_http(self.httpd)


class TLSRecorder:
    """A bare TLS listener (rtsps/rtmps): records the first bytes each client sends after the handshake."""

    def __init__(self, cert: tuple[str, str]):
        self.got: list[bytes] = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    s.settimeout(2)
                    self.got.append(s.recv(200))
            except OSError:
                conn.close()  # the client refused the certificate: nothing was sent

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return (DATA / "d1.mp4").read_bytes()


@pytest.fixture(scope="module")
def segment() -> bytes:
    """The first ~2 s of d1.mp4 as an MPEG-TS segment."""
    buf = io.BytesIO()
    with av.open(str(DATA / "d1.mp4")) as src, av.open(buf, "w", format="mpegts") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for i, packet in enumerate(src.demux(vin)):
            if packet.dts is None or i > 60:
                continue
            packet.stream = vout
            out.mux(packet)
    return buf.getvalue()


def _playlist(segment_url: str) -> bytes:
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:2.0,\n{segment_url}\n#EXT-X-ENDLIST\n").encode()


def _play(url: str, **settings) -> LiveSource:
    """Run a source until it stops; ``max_retries`` None (forever): an error that ends it must be final."""
    kw = {"sample_fps": 5, "open_timeout_s": 3, "max_retries": None, "backoff_initial_s": 0.1,
          "backoff_max_s": 0.2, **settings}
    src = LiveSource("cam", url, SourceSettings(**kw))
    src.start()
    src._thread.join(15)
    if src.alive:  # retried as a network blip, or still playing
        src.stop()
    return src


# ---------------------------------------------------------------- refused by default
@pytest.mark.parametrize("user", ["", f"viewer:{SECRET}@"])  # with credentials: httpx's sniff; without: FFmpeg
@pytest.mark.parametrize("which", ["local", "evil"])  # one naming the host, one naming another
def test_untrusted_certificate_refused_by_default(certs, clip, user, which):
    server = HTTPSServer(certs[which], {"/video.mp4": ("video/mp4", clip)})
    try:
        src = _play(f"https://{user}127.0.0.1:{server.port}/video.mp4")
    finally:
        server.close()
    info = src.describe()
    assert server.requests == []  # no request at all: no Authorization header either
    assert info["state"] == "stopped" and info["errors"] == 1 and info["reconnects"] == 0, info  # never retried
    assert f"TLS certificate not trusted for host 127.0.0.1:{server.port}" in info["last_error"], info
    assert all(w in info["last_error"] for w in ("self-signed certificate", "tls_verify: false", "ca_file"))
    assert SECRET not in repr(info) and info["tls_verify"] is True


def test_ca_file_still_checks_the_host_name(certs, clip):
    """Trusting evil.example's certificate does not make it good for 127.0.0.1."""
    server = HTTPSServer(certs["evil"], {"/video.mp4": ("video/mp4", clip)})
    try:
        src = _play(f"https://127.0.0.1:{server.port}/video.mp4", ca_file=certs["evil"][0])
    finally:
        server.close()
    assert server.requests == [] and "mismatch" in src.stats.last_error, src.describe()
    assert "use the name the certificate holds" in src.stats.last_error


@pytest.mark.parametrize("scheme", ["rtsps", "rtmps"])
def test_rtsps_rtmps_refuse_a_self_signed_server(certs, scheme):
    """FFmpeg 8's RTSP and RTMP pass the options on to their TLS connection (unverified: 'OPTIONS rtsps://...')."""
    server = TLSRecorder(certs["local"])
    try:
        src = _play(f"{scheme}://viewer:{SECRET}@127.0.0.1:{server.port}/app/key", rtsp_transport="tcp")
        refused = list(server.got)
        server.got.clear()
        _play(f"{scheme}://viewer:{SECRET}@127.0.0.1:{server.port}/app/key", rtsp_transport="tcp",
              tls_verify=False, max_retries=0)
    finally:
        server.close()
    assert not any(refused), refused  # not a byte of RTSP/RTMP (TLS 1.3: the server sees the handshake end)
    assert "TLS certificate not trusted" in src.stats.last_error and src.stats.reconnects == 0, src.describe()
    assert SECRET not in src.stats.last_error
    assert any(server.got), server.got  # tls_verify false: the session went ahead


# ---------------------------------------------------------------- the opt-outs
@pytest.mark.parametrize("trust", ["tls_verify_false", "ca_file"])
def test_self_signed_camera_accepted_when_told(certs, clip, trust):
    kw = {"tls_verify": False} if trust == "tls_verify_false" else {"ca_file": certs["local"][0]}
    server = HTTPSServer(certs["local"], {"/video.mp4": ("video/mp4", clip)})
    try:
        src = LiveSource("cam", f"https://viewer:{SECRET}@127.0.0.1:{server.port}/video.mp4",
                         SourceSettings(sample_fps=5, open_timeout_s=3, max_retries=0, **kw)).start()
        deadline = time.monotonic() + 15
        while src.stats.sampled < 1 and src.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        src.stop()
    finally:
        server.close()
    assert src.stats.sampled >= 1, src.describe()
    assert server.requests and all(a is not None for _, a in server.requests)
    assert src.describe()["tls_verify"] is (trust == "ca_file")


def test_open_options_carry_the_trust(certs):
    import certifi

    for url in ("https://h/x.m3u8", "http://h/x", "rtsps://h/x", "rtmps://h/app/key"):
        opts = open_options(parse_source(url), 5)
        assert (opts["tls_verify"], opts["ca_file"]) == ("1", certifi.where()), url
    own = with_trust(parse_source("rtsps://h/x"), True, certs["local"][0])
    assert open_options(own, 5)["ca_file"] == certs["local"][0]
    off = with_trust(parse_source("https://h/x"), False, None)
    assert open_options(off, 5)["tls_verify"] == "0" and "ca_file" not in open_options(off, 5)
    tunnel = open_options(parse_source("rtsp://h/x"), 5, "https")
    assert tunnel["tls_verify"] == "1" and "tls_verify" not in open_options(parse_source("rtsp://h/x"), 5)


# ---------------------------------------------------------------- HLS
def _ffmpeg_reads(url: str, src_opts: dict) -> str:
    try:
        with av.open(url, options=src_opts, timeout=(3, 3)) as c:
            next(c.decode(video=0))
        return "read"
    except Exception as e:  # noqa: BLE001 - what FFmpeg said, for the assertion message
        return f"{type(e).__name__}: {e}"


def test_ffmpeg_hls_does_not_verify_segments(certs, segment):
    """Does FFmpeg pass tls_verify/ca_file on to HLS segment requests? The segment is on the same
    server, named 'localhost', which the certificate does not hold: a verified fetch is refused.

    It is not (FFmpeg 8.0): the playlist's own request is verified, the segment fetched unverified.
    This is why tls.refuse_hls_auth refuses credentials there. If this test fails because the
    segment is refused, FFmpeg verifies segments now: that refusal and warning can go."""
    routes = {"/seg0.ts": ("video/mp2t", segment)}
    server = HTTPSServer(certs["ip"], routes)
    routes["/live.m3u8"] = (MPEGURL, _playlist(f"https://localhost:{server.port}/seg0.ts"))
    base = f"https://127.0.0.1:{server.port}"
    try:
        direct = _ffmpeg_reads(f"https://localhost:{server.port}/seg0.ts", open_options(
            with_trust(parse_source(f"https://localhost:{server.port}/seg0.ts"), True, certs["ip"][0]), 3))
        assert direct != "read" and server.requests == []  # the name fails verification when it is checked
        if _ffmpeg_reads(f"{base}/live.m3u8", open_options(parse_source(f"{base}/live.m3u8"), 3) |
                         {"tls_verify": "0"}) != "read" or ("/seg0.ts", None) not in server.requests:
            pytest.skip("the segment is not reachable as 'localhost' here (control run)")
        server.requests.clear()
        verified = open_options(with_trust(parse_source(f"{base}/live.m3u8"), True, certs["ip"][0]), 3)
        result = _ffmpeg_reads(f"{base}/live.m3u8", verified)
    finally:
        server.close()
    assert ("/live.m3u8", None) in server.requests  # the playlist's request passed verification
    assert ("/seg0.ts", None) in server.requests and result == "read", (
        f"FFmpeg refused the unverifiable segment ({result}): it verifies HLS segments now")


def test_ffmpeg_hls_does_not_verify_playlist_reloads(certs, segment):
    """The same for a live playlist's reloads: once FFmpeg has opened it (verified), the server's
    certificate is swapped for evil.example's, which ca_file does not trust. Each request is a
    new connection (HTTP/1.0), so every one after the swap shows that certificate."""
    seq = [0]

    class Live(dict):
        def get(self, path, default=None):
            if path == "/live.m3u8":
                seq[0] += 1
                return MPEGURL, (f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{seq[0]}\n"
                                 + "".join(f"#EXTINF:1.0,\nseg{seq[0] + i}.ts\n" for i in range(3))).encode()
            return ("video/mp2t", segment) if path.startswith("/seg") else default

    server = HTTPSServer(certs["local"], Live())
    url = f"https://127.0.0.1:{server.port}/live.m3u8"
    try:
        with av.open(url, options=open_options(with_trust(parse_source(url), True, certs["local"][0]), 3),
                     timeout=(3, 3)) as c:
            server.httpd.socket.context.load_cert_chain(*certs["evil"])
            before, t_end = len(server.requests), time.monotonic() + 6
            for _ in c.decode(video=0):
                if time.monotonic() > t_end or [p for p, _ in server.requests[before:]].count("/live.m3u8") >= 2:
                    break
    except OSError as e:
        pytest.fail(f"FFmpeg refused the swapped certificate ({e}): it verifies HLS reloads now")
    finally:
        server.close()
    assert [p for p, _ in server.requests[before:]].count("/live.m3u8") >= 1, server.requests


def test_hls_with_credentials_over_https_refused_while_verifying(certs, segment):
    routes = {"/seg0.ts": ("video/mp2t", segment), "/live.m3u8": (MPEGURL, _playlist("seg0.ts"))}
    server = HTTPSServer(certs["local"], routes)
    try:
        src = _play(f"https://viewer:{SECRET}@127.0.0.1:{server.port}/live.m3u8", ca_file=certs["local"][0])
        refused = list(server.requests)
        server.requests.clear()
        plays = _play(f"https://viewer:{SECRET}@127.0.0.1:{server.port}/live.m3u8", tls_verify=False,
                      max_retries=0)
    finally:
        server.close()
    info = src.describe()
    assert info["state"] == "stopped" and info["reconnects"] == 0, info
    assert "HLS over https with credentials refused" in info["last_error"] and "tls_verify: false" in info["last_error"]
    assert SECRET not in repr(info)
    assert [p for p, _ in refused] == ["/live.m3u8"]  # the verified pre-check only; no segment
    assert plays.stats.sampled >= 1 and ("/seg0.ts", f"Basic {_b64(SECRET)}") in server.requests, plays.describe()


def _b64(pw: str) -> str:
    import base64

    return base64.b64encode(f"viewer:{pw}".encode()).decode()


def test_hls_without_credentials_over_https_warns(caplog):
    caplog.set_level("WARNING", logger="scanner.live.tls")
    LiveSource("news", "https://live.example.org/index.m3u8")
    assert "fetched without certificate verification" in caplog.text
    caplog.clear()
    LiveSource("news", "https://live.example.org/index.m3u8", SourceSettings(tls_verify=False))
    LiveSource("clip", "https://live.example.org/clip.mp4")
    assert caplog.text == ""


# ---------------------------------------------------------------- config, API, CLI
def test_serve_config_takes_and_checks_the_options(certs, tmp_path):
    from scanner.live.config import ConfigError, parse_config

    pem = certs["local"][0]
    cfg = parse_config({"defaults": {"tls_verify": False}, "streams": [
        {"name": "door", "url": "rtsps://door.lan/s", "ca_file": pem},  # its own ca_file: verified
        {"name": "lobby", "url": "rtsps://lobby.lan/s"}]})
    assert cfg.defaults.tls_verify is False
    assert (cfg.streams[0].tls_verify, cfg.streams[0].ca_file) == (True, str(Path(pem).resolve()))
    assert parse_config({}).defaults.tls_verify is True
    (tmp_path / "notpem.txt").write_text("hello")
    for bad, words in [({"defaults": {"tls_verify": False, "ca_file": pem}}, "only used with tls_verify: true"),
                       ({"defaults": {"ca_file": str(tmp_path / "none.pem")}}, "not a file"),
                       ({"defaults": {"ca_file": "/dev/zero"}}, "not a file"),
                       ({"defaults": {"ca_file": str(tmp_path / "notpem.txt")}}, "no PEM certificate"),
                       ({"streams": [{"name": "a", "url": "https://h/x", "tls_verfy": False}]}, "unknown key"),
                       ({"streams": [{"name": "a", "url": "https://h/x", "tls_verify": False, "ca_file": pem}]},
                        "only used with tls_verify: true")]:
        with pytest.raises(ConfigError, match=words):
            parse_config(bad)


def test_serve_yaml_example_loads():
    from scanner.live.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "serve.yaml")
    assert cfg.defaults.tls_verify is True and cfg.defaults.ca_file is None


def test_api_add_stream_takes_and_checks_the_options(certs):
    import httpx
    from test_api import AUTH, TOKEN, _serve

    svc, server = _serve(TOKEN)
    base = f"http://127.0.0.1:{server.port}"
    try:
        def post(body):
            return httpx.post(f"{base}/streams", json=body, headers=AUTH, timeout=10)

        r = post({"name": "door", "url": "https://127.0.0.1:9/live.m3u8", "tls_verify": False})
        assert r.status_code == 201 and r.json()["tls_verify"] is False, r.text
        r = post({"name": "gate", "url": "rtsps://127.0.0.1:9/s", "ca_file": certs["local"][0]})
        assert r.status_code == 201 and r.json()["tls_verify"] is True, r.text
        assert svc._streams["gate"].source.src.ca_file == str(Path(certs["local"][0]).resolve())
        for body in ({"tls_verfy": False}, {"ca_file": "/etc/hostname"}, {"tls_verify": "maybe"},
                     {"tls_verify": False, "ca_file": certs["local"][0]}):
            r = post({"name": "bad", "url": "https://127.0.0.1:9/x", **body})
            assert r.status_code == 400 and "error" in r.json(), (body, r.text)
    finally:
        server.stop()
        svc.stop()


def test_watch_flags(certs, capsys):
    from scanner.cli import build_parser, main

    p = build_parser("watch")
    args = p.parse_args(["watch", "rtsps://cam/1", "--no-tls-verify"])
    assert args.tls_verify is False and args.ca_file is None
    args = p.parse_args(["watch", "rtsps://cam/1", "--ca-file", certs["local"][0]])
    assert args.tls_verify is True and args.ca_file == certs["local"][0]
    assert main(["watch", "rtsps://cam/1", "--no-tls-verify", "--ca-file", certs["local"][0]]) == 2
    assert "only used with tls_verify: true" in capsys.readouterr().err
    assert main(["watch", "rtsps://cam/1", "--ca-file", "/nonexistent.pem"]) == 2
    assert "not a file" in capsys.readouterr().err
