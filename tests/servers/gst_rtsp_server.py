"""RTSP server for the live tests: GStreamer's gst-rtsp-server serving one clip.

Run with the *system* Python (it needs PyGObject and the GStreamer typelibs from
Debian: python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/bad):

    /usr/bin/python3 gst_rtsp_server.py PORT CLIP.mp4 [tcp|udp|any] [USER PASSWORD]

Serves ``rtsp://127.0.0.1:PORT/live`` (H.264 from the MP4, not re-encoded) on
loopback only. ``tcp`` offers only interleaved RTP over the RTSP connection (and
RTSP-over-HTTP tunnelling, which rides on it): clients asking for UDP get ``461``.
Every client gets the clip from its start (not shared), looping is the clip's job.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

LOWER = {
    "tcp": GstRtsp.RTSPLowerTrans.TCP,
    "udp": GstRtsp.RTSPLowerTrans.UDP,
    "any": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP,
}


def main() -> None:
    port, clip = sys.argv[1], sys.argv[2]
    lower = LOWER[sys.argv[3] if len(sys.argv) > 3 else "any"]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( filesrc location={clip} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_protocols(lower)
    if len(sys.argv) > 5:  # Basic auth with one user allowed to see the stream
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken.new_empty()
        token.get_structure().set_value(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(sys.argv[4], sys.argv[5]), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role_empty("viewer")
        perms.get_role("viewer").set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.get_role("viewer").set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print(f"rtsp://127.0.0.1:{port}/live", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
