#!/usr/bin/python3
"""Serve a video clip over RTSP with GStreamer's RTSP server, for tests and the demo.

Every client gets its own pipeline, so each connection plays the clip from the start in real
time; when it ends the stream closes (a camera reboot, as far as the daemon can tell).
Prints `PORT <n>` on stdout once listening. Run with Debian's /usr/bin/python3 (it has `gi`).

The clip is MP4 (H.264 or H.265, by its content) or raw H.264 Annex B (`.h264`). Clients may
ask for TCP or UDP transport. `--auth digest` asks for digest authentication instead of basic;
`--loss P` drops each RTP packet with probability P (a lossy radio link).

usage: rtsp_server.py --clip FILE [--port 0] [--path /cam] [--user U --password P]
                      [--auth basic|digest] [--loss P]
"""
import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True, help="MP4 file with H.264 video")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--auth", choices=["basic", "digest"], default="basic")
    ap.add_argument("--loss", type=float, default=0.0, help="probability of dropping each RTP packet")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    clip = args.clip.replace('"', '\\"')
    codec = "h265" if is_h265(args.clip) else "h264"
    if args.clip.endswith(".h264"):
        # Raw Annex B has no timestamps of its own: h264parse makes DTS from the frame rate, and
        # a probe copies them to PTS (else every RTP timestamp is 0).
        source = f'filesrc location="{clip}" ! h264parse name=parse'
    else:
        source = f'filesrc location="{clip}" ! qtdemux ! {codec}parse'
    pay = f"rtp{codec}pay pt=96 config-interval=-1"
    if args.loss > 0:
        pay = f"{pay} ! identity drop-probability={args.loss} name=pay0"
    else:
        pay = f"{pay} name=pay0"
    factory.set_launch(f"( {source} ! {pay} )")
    factory.set_shared(False)
    if args.clip.endswith(".h264"):
        factory.connect("media-configure", copy_dts_to_pts)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        if args.auth == "digest":
            auth.add_digest(args.user, args.password or "", token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", "media.factory.access", True)
        perms.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    print(f"PORT {server.get_bound_port()}", flush=True)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    loop.run()


def is_h265(path):
    """Whether an MP4 holds H.265 (its sample entry is hvc1 or hev1)."""
    if not path.endswith(".mp4"):
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return b"hvc1" in head or b"hev1" in head


def copy_dts_to_pts(_factory, media):
    parse = media.get_element().get_by_name("parse")

    def probe(_pad, info):
        buf = info.get_buffer()
        if buf.pts == Gst.CLOCK_TIME_NONE:
            buf.pts = buf.dts
        return Gst.PadProbeReturn.OK

    parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)


if __name__ == "__main__":
    main()
