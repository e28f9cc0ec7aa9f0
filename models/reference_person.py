#!/usr/bin/env python3
"""Reference detections for the real-model test, computed without any fieldwatch code.

For each image: letterbox it (PIL bilinear, grey 114 padding, centred) into the model's input
tensor, save that tensor as raw little-endian float32 ([1, 3, H, W]), run Python onnxruntime on
it, decode the YOLOv8 output ([1, 4 + C, N], cx/cy/w/h in model pixels) in numpy, undo the
letterbox and run class-wise NMS. The Rust test feeds the same tensor through its own output
decoding and letterbox undo and must land within 2 px and 0.01 of these boxes and scores.

Then the same through a camera's path: each photo is encoded to YUV 4:2:0 (BT.601, limited
range, chroma averaged over 2x2), saved as raw I420 (`{stem}.i420`), and the reference converts
that YUV back to RGB (chroma scaled up bilinearly) and letterboxes and runs it as above
(`yuv_detections`). The Rust test feeds the same I420 planes to the daemon's own YUV
preprocessing, which must land within the same tolerances.

Usage: reference_person.py --model M.onnx --out-dir DIR IMAGE...   (writes DIR/person.json)
"""
import argparse
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

CONF = 0.25
IOU = 0.45
PAD = 114


def letterbox(img, size_w, size_h):
    w, h = img.size
    scale = min(size_w / w, size_h / h)
    nw, nh = round(w * scale), round(h * scale)
    pad_x, pad_y = (size_w - nw) // 2, (size_h - nh) // 2
    canvas = Image.new("RGB", (size_w, size_h), (PAD, PAD, PAD))
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (pad_x, pad_y))
    chw = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return chw[None].copy(), dict(pad_x=pad_x, pad_y=pad_y, scaled_w=nw, scaled_h=nh)


def to_i420(img):
    """RGB -> YUV 4:2:0 planes (BT.601 limited range), as a camera's encoder would take it."""
    rgb = np.asarray(img, dtype=np.float32)
    h, w = rgb.shape[:2]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    ch, cw = (h + 1) // 2, (w + 1) // 2

    def sub(p):
        p = np.pad(p, ((0, ch * 2 - h), (0, cw * 2 - w)), mode="edge")
        return p.reshape(ch, 2, cw, 2).mean(axis=(1, 3))

    q = lambda p: np.clip(np.round(p), 0, 255).astype(np.uint8)
    return q(y), q(sub(u)), q(sub(v))


def from_i420(y, u, v):
    """YUV 4:2:0 (BT.601 limited range) -> RGB image, chroma scaled up bilinearly (PIL)."""
    h, w = y.shape
    up = lambda p: np.asarray(Image.fromarray(p).resize((w, h), Image.BILINEAR), dtype=np.float32) - 128
    c = 1.164 * (y.astype(np.float32) - 16)
    u, v = up(u), up(v)
    rgb = np.stack([c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u], axis=-1)
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decode(out, lb, w, h):
    preds = out[0].T  # [N, 4 + C]
    dets = []
    for row in preds:
        scores = row[4:]
        c = int(np.argmax(scores))
        if scores[c] < CONF:
            continue
        cx, cy, bw, bh = (float(v) for v in row[:4])
        sx, sy = w / lb["scaled_w"], h / lb["scaled_h"]
        box = [(cx - bw / 2 - lb["pad_x"]) * sx, (cy - bh / 2 - lb["pad_y"]) * sy,
               (cx + bw / 2 - lb["pad_x"]) * sx, (cy + bh / 2 - lb["pad_y"]) * sy]
        box = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
        dets.append(dict(class_id=c, score=float(scores[c]), box=box))
    dets.sort(key=lambda d: -d["score"])
    kept = []
    for d in dets:
        if all(k["class_id"] != d["class_id"] or iou(k["box"], d["box"]) <= IOU for k in kept):
            kept.append(d)
    return kept


def session(model):
    """An onnxruntime session on the CPU at one thread, as the daemon runs a model."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("images", nargs="+")
    args = ap.parse_args()
    sess = session(args.model)
    _, _, in_h, in_w = sess.get_inputs()[0].shape
    results = []
    for path in args.images:
        img = Image.open(path).convert("RGB")
        tensor, lb = letterbox(img, in_w, in_h)
        stem = os.path.splitext(os.path.basename(path))[0]
        tensor_file = f"{stem}.tensor.f32"
        tensor.astype("<f4").tofile(os.path.join(args.out_dir, tensor_file))
        out = sess.run(None, {sess.get_inputs()[0].name: tensor})[0]
        planes = to_i420(img)
        yuv_file = f"{stem}.i420"
        with open(os.path.join(args.out_dir, yuv_file), "wb") as f:
            for p in planes:
                f.write(p.tobytes())
        yuv_tensor, _ = letterbox(from_i420(*planes), in_w, in_h)
        yuv_out = sess.run(None, {sess.get_inputs()[0].name: yuv_tensor})[0]
        results.append(dict(image=os.path.basename(path), width=img.size[0], height=img.size[1],
                            input_width=in_w, input_height=in_h, tensor=tensor_file, **lb,
                            detections=decode(out, lb, *img.size),
                            yuv=yuv_file, yuv_detections=decode(yuv_out, lb, *img.size)))
    with open(os.path.join(args.out_dir, "person.json"), "w") as f:
        json.dump(dict(conf=CONF, iou=IOU, images=results), f, indent=1)


if __name__ == "__main__":
    main()
