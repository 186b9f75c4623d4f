"""A real RTSP server for the tests: GStreamer's gst-rtsp-server (Debian's
gir1.2-gst-rtsp-server-1.0) serving one H.264 .mp4 at ``rtsp://127.0.0.1:PORT/clip``.

Run with the system Python that has PyGObject (``/usr/bin/python3 rtsp_server.py CLIP PORT``);
prints ``ready`` once it listens. The clip's H.264 is sent as it is (qtdemux, h264parse,
rtph264pay: no re-encoding, so the server costs almost no CPU), at its own frame rate; each
client gets its own session from the clip's start.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

CHECK = "--check" in sys.argv


def main() -> None:
    Gst.init(None)
    missing = [e for e in ("qtdemux", "h264parse", "rtph264pay")
               if Gst.ElementFactory.find(e) is None]
    if missing:
        raise SystemExit(f"missing GStreamer elements: {', '.join(missing)}")
    if CHECK:
        print("ok")
        return
    clip, port = sys.argv[1], sys.argv[2]
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! h264parse config-interval=-1 '
                       '! rtph264pay name=pay0 pt=96 config-interval=1 )')
    factory.set_shared(False)
    server.get_mount_points().add_factory("/clip", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


main()
