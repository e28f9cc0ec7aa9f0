#!/usr/bin/env python3
"""Reads `mosquitto_sub -v` lines (topic, space, JSON) and shows what the IOC would receive.

Reports are printed in one line each and saved as OUT/<time>-<event>.json with the snapshot
beside them as .jpg; status messages are printed as they come.
usage: mosquitto_sub ... -v | demo_listen.py OUT_DIR
"""
import base64
import json
import os
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for line in sys.stdin:
    topic, _, payload = line.partition(" ")
    try:
        msg = json.loads(payload)
    except json.JSONDecodeError:
        print(f"{topic}: (not JSON) {payload[:80]}", flush=True)
        continue
    if topic.endswith("/status"):
        print(f"[status] {topic}: {msg.get('state')} ({msg.get('reason')})", flush=True)
        continue
    if topic.endswith("/heartbeat"):
        cams = ", ".join(f"{c['id']} {c['frames_per_sec']} fps" for c in msg.get("cameras", []))
        print(f"[heartbeat] {topic}: {cams}; outbox {msg.get('outbox', {}).get('reports')}", flush=True)
        continue
    stem = f"{msg['observed_at'].replace(':', '-')}-{msg['event']}"
    jpeg = base64.b64decode(msg["snapshot"]["data"])
    with open(os.path.join(out, stem + ".jpg"), "wb") as f:
        f.write(jpeg)
    msg["snapshot"]["data"] = f"<{len(jpeg)} bytes, saved as {stem}.jpg>"
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(msg, f, indent=2, ensure_ascii=False)
    objects = ", ".join(f"{o['class']} {o['score']:.2f}" for o in msg["objects"]) or "none"
    print(f"[report] {msg['event'].upper():8} {msg['camera_id']}/{msg['rule_id']} incident {msg['incident_id'][:8]} "
          f"objects: {objects}\n         {msg['description']['en']}\n         {msg['description']['vi']}\n"
          f"         saved {stem}.json + .jpg", flush=True)
    clip = msg.get("evidence")
    if clip:
        print(f"         evidence clip: {clip['duration_secs']} s, {clip['bytes']} bytes, from {clip['start']} "
              f"(state/evidence/{os.path.basename(clip['url'])})", flush=True)
