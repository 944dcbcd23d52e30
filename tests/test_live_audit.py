"""Audit of the live service: an HLS playlist read differently by the pre-check and by FFmpeg.

For a stream with credentials the playlist pre-check (:mod:`scanner.live.hls`) is the only
thing that keeps FFmpeg from sending them to another host, so it must find every URI that
FFmpeg's HLS demuxer finds. Each playlist below names a second server that FFmpeg fetched
with the camera's ``Authorization`` header while the check passed it.
"""
from __future__ import annotations

import pytest
from test_live_urls import SECRET, _play, _Server

from scanner.live.hls import PLAYLIST_MAX_BYTES, check_playlist
from scanner.live.urls import RefusedURL

MPEGURL = "application/vnd.apple.mpegurl"
HEAD = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n"

# name -> media playlist listing {other} (http://host:port of the other server) the way FFmpeg reads it
TRICKS = {
    "NUL ends a line": HEAD + "#EXTINF:1,\x00{other}/seg0.ts\n",
    "unquoted MAP URI": HEAD + "#EXT-X-MAP:URI={other}/init.mp4\n#EXTINF:1,\nseg0.ts\n",
    "unquoted KEY URI": HEAD + "#EXT-X-KEY:METHOD=AES-128,URI={other}/key\n#EXTINF:1,\nseg0.ts\n",
    "escaped KEY URI": HEAD + '#EXT-X-KEY:METHOD=AES-128,URI="{escaped}/key"\n#EXTINF:1,\nseg0.ts\n',
    "scheme without //": HEAD + "#EXTINF:1,\n{noslash}/seg0.ts\n",
    "scheme with one /": HEAD + "#EXTINF:1,\n{oneslash}/seg0.ts\n",
    "past the first MiB": HEAD + "#" + "x" * PLAYLIST_MAX_BYTES + "\n#EXTINF:1,\n{other}/seg0.ts\n",
}


def _fill(template: str, hostport: str) -> str:
    return template.format(other=f"http://{hostport}", escaped=f"http\\://{hostport}",
                           noslash=f"http:{hostport}", oneslash=f"http:/{hostport}")


@pytest.mark.parametrize("trick", [t for t in TRICKS if t != "past the first MiB"])
def test_check_playlist_reads_uris_as_ffmpeg_does(trick):
    with pytest.raises(RefusedURL, match="another host"):
        check_playlist("http://127.0.0.1:1/live.m3u8", _fill(TRICKS[trick], "localhost:2"), same_origin=True)


def test_check_playlist_still_takes_a_same_host_playlist():
    text = (HEAD + '#EXT-X-KEY:METHOD=AES-128,URI=key.bin,IV=0x1\n#EXT-X-MAP:URI="init.mp4"\n'
            "#EXTINF:1,\nseg0.ts\n#EXTINF:1,\nhttp://127.0.0.1:1/live/seg1.ts\n")
    assert check_playlist("http://127.0.0.1:1/live/index.m3u8", text, same_origin=True) == []


@pytest.mark.parametrize("trick", list(TRICKS))
def test_credentials_never_reach_a_host_the_playlist_hides(trick):
    other = _Server({"/seg0.ts": ("video/mp2t", b"\x47" * 188), "/init.mp4": ("video/mp4", b"\0" * 16),
                     "/key": ("application/octet-stream", b"k" * 16)})
    playlist = _fill(TRICKS[trick], f"localhost:{other.port}").encode()
    cam = _Server({"/live.m3u8": (MPEGURL, playlist), "/seg0.ts": ("video/mp2t", b"\x47" * 188)})
    try:
        src = _play(f"http://viewer:{SECRET}@127.0.0.1:{cam.port}/live.m3u8")
        assert other.requests == [], src.describe()
        assert src.stats.connects == 0 and "refused" in src.stats.last_error, src.describe()
        assert SECRET not in repr(src.describe())
    finally:
        cam.close()
        other.close()


def test_credentials_never_reach_a_host_listed_deeper_than_the_check_follows():
    """FFmpeg opens a variant's own variants at any depth; the check stopped at three levels."""
    other = _Server({"/seg0.ts": ("video/mp2t", b"\x47" * 188)})
    variant = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nl{}.m3u8\n"
    routes = {f"/l{i}.m3u8": (MPEGURL, variant.format(i + 1).encode()) for i in range(3)}
    routes["/l3.m3u8"] = (MPEGURL, (HEAD + f"#EXTINF:1,\nhttp://localhost:{other.port}/seg0.ts\n").encode())
    cam = _Server(routes)
    try:
        src = _play(f"http://viewer:{SECRET}@127.0.0.1:{cam.port}/l0.m3u8")
        assert other.requests == [], src.describe()
        assert "nests playlists deeper" in src.stats.last_error, src.describe()
    finally:
        cam.close()
        other.close()
