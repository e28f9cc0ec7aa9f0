#!/usr/bin/env python3
"""Check a model made by darknet2onnx.py against OpenCV's own darknet reader (`cv2.dnn`), an
implementation that shares no code with ours.

Each image (photos, and frames taken from video clips) is letterboxed into the model's input
tensor as the reference for the person model does (PIL bilinear, grey 114 padding). The same
tensor goes through Python onnxruntime on our ONNX and through `cv2.dnn` on the original cfg
and weights. OpenCV's YOLO layers give, per head, rows of (cx, cy, w, h) as fractions of the
input, objectness, and objectness x class probability, zeroed below the layer's `thresh` (0.2
by default). Ours gives [1, 4 + C, N] in input pixels. For every candidate of every head this
compares the box (as fractions of the input) and every class score OpenCV kept; a score OpenCV
zeroed must be under its threshold in ours. It also counts the candidates above 0.25, so a check
over empty images cannot pass unseen.

Prints one JSON object (largest differences, candidates compared) and exits 1 if any box or
score differs by more than --tolerance (1e-4).

Usage: check_darknet.py --onnx M.onnx --cfg M.cfg --weights M.weights [--clip C.mp4 ...] IMAGE...
"""
import argparse
import json
import sys

import cv2
import numpy as np
from PIL import Image

from darknet2onnx import ints, parse_cfg
from reference_person import letterbox
from reference_person import session as reference_session

FRAMES_PER_CLIP = 4
OPENCV_THRESH = 0.2


def clip_frames(path, count):
    """`count` frames spread over a clip, as RGB images."""
    cap = cv2.VideoCapture(path)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    images = []
    for i in range(count):
        cap.set(cv2.CAP_PROP_POS_FRAMES, (i * total) // count)
        ok, bgr = cap.read()
        if not ok:
            sys.exit(f"check_darknet: cannot read frame {(i * total) // count} of {path}")
        images.append((f"{path}#{(i * total) // count}", Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
    cap.release()
    return images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--clip", action="append", default=[])
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()

    session = reference_session(args.onnx)
    _, _, height, width = session.get_inputs()[0].shape
    net = cv2.dnn.readNetFromDarknet(args.cfg, args.weights)
    heads = net.getUnconnectedOutLayersNames()
    masks = [len(ints(p["mask"])) for kind, p in parse_cfg(args.cfg) if kind == "yolo"]

    inputs = [(p, Image.open(p).convert("RGB")) for p in args.images]
    for clip in args.clip:
        inputs += clip_frames(clip, FRAMES_PER_CLIP)

    worst_box = worst_score = worst_zeroed = 0.0
    compared = confident = 0
    for name, image in inputs:
        tensor, _ = letterbox(image, width, height)
        ours = session.run(None, {session.get_inputs()[0].name: tensor})[0][0]  # [4 + C, N]
        net.setInput(tensor)
        theirs = net.forward(heads)
        classes = ours.shape[0] - 4
        at = 0
        for head, anchors in zip(theirs, masks):  # rows ordered (cell, anchor); ours (anchor, cell)
            n = head.shape[0]
            cells = n // anchors
            mine = ours[:, at : at + n].reshape(4 + classes, anchors, cells).transpose(2, 1, 0).reshape(n, 4 + classes)
            scale = np.array([width, height, width, height], dtype=np.float32)
            worst_box = max(worst_box, float(np.abs(mine[:, :4] / scale - head[:, :4]).max()))
            kept = head[:, 5:] > 0
            if kept.any():
                worst_score = max(worst_score, float(np.abs(mine[:, 4:][kept] - head[:, 5:][kept]).max()))
            if (~kept).any():
                worst_zeroed = max(worst_zeroed, float(mine[:, 4:][~kept].max()))
            compared += n
            confident += int((head[:, 5:].max(axis=1) > 0.25).sum())
            at += n
        if at != ours.shape[1]:
            sys.exit(f"check_darknet: {name}: OpenCV gave {at} candidates, ours {ours.shape[1]}")

    result = {
        "images": len(inputs),
        "candidates": compared,
        "confident": confident,
        "max_box_diff": worst_box,
        "max_score_diff": worst_score,
        "max_score_opencv_zeroed": worst_zeroed,
        "tolerance": args.tolerance,
    }
    print(json.dumps(result))
    ok = worst_box <= args.tolerance and worst_score <= args.tolerance and worst_zeroed <= OPENCV_THRESH + args.tolerance
    sys.exit(0 if ok and confident > 0 else 1)


if __name__ == "__main__":
    main()
