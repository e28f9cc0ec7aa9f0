#!/usr/bin/env python3
"""Convert a darknet YOLOv3-tiny or YOLOv4-tiny model (`.cfg` + `.weights`) to an ONNX model
fieldwatch reads as it reads a YOLOv8 export.

Many city integrators hold darknet models; this lets them run one without any other tool. The
graph is built by hand from the cfg, layer by layer, with numpy and onnx only, and written with
fixed names and no timestamps, so the same input gives the same bytes on every run.

- `[convolutional]` with `batch_normalize=1` is folded into the convolution's weights and bias
  (darknet normalises as (x - mean) / (sqrt(var) + 1e-6)); activations `leaky` (0.1) and
  `linear`.
- `[maxpool]` pads as darknet does (size - 1 in all, most of it at the end), so `size=2
  stride=1` keeps the size; `[upsample]` is nearest; `[route]` concatenates, with `groups` and
  `group_id` (YOLOv4-tiny's split); `[shortcut]` adds.
- `[yolo]` heads are decoded inside the graph: x = (sigmoid(tx) * s - (s - 1) / 2 + col) * stride
  with s = `scale_x_y`, w = exp(tw) * anchor, score = sigmoid(objectness) * sigmoid(class). All
  heads are concatenated into YOLOv8's layout: output `output0` of shape [1, 4 + C, N] with cx,
  cy, w, h in input pixels, so no objectness threshold or NMS is applied here (the daemon does
  both).
- Input `images`: [1, 3, H, W] RGB in 0..1, H and W from the cfg's `[net]`.
- Class names from the names file go into the Ultralytics `names` metadata, with darknet's old
  spellings changed to COCO's (`motorbike` -> `motorcycle`, `aeroplane` -> `airplane`, `sofa` ->
  `couch`, `tvmonitor` -> `tv`, `diningtable` -> `dining table`, `pottedplant` -> `potted plant`),
  which is what fieldwatch's rules name.

Usage: darknet2onnx.py --cfg M.cfg --weights M.weights --names coco.names --out M.onnx
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COCO_SPELLINGS = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "tvmonitor": "tv",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
}
OPSET = 17


def parse_cfg(path):
    """The cfg's sections in order, each a (type, {key: value}) with values as strings."""
    sections = []
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                sections.append((line.strip("[]").strip(), {}))
            elif "=" in line:
                key, value = line.split("=", 1)
                sections[-1][1][key.strip()] = value.strip()
    return sections


def ints(value):
    return [int(v) for v in value.split(",") if v.strip()]


class Graph:
    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


class Weights:
    """The weights file: a header, then each layer's floats in cfg order."""

    def __init__(self, path):
        with open(path, "rb") as f:
            major, minor, _revision = np.frombuffer(f.read(12), dtype="<i4")
            # `seen` is 64-bit from format 0.2 on, 32-bit before.
            f.read(8 if major * 10 + minor >= 2 else 4)
            self.data = np.frombuffer(f.read(), dtype="<f4")
        self.at = 0

    def take(self, n):
        if self.at + n > self.data.size:
            sys.exit(f"darknet2onnx: the weights file ends early (at float {self.at}, {n} more wanted)")
        out = self.data[self.at : self.at + n].astype(np.float32)
        self.at += n
        return out


def convert(cfg_path, weights_path, names_path):
    sections = parse_cfg(cfg_path)
    if not sections or sections[0][0] not in ("net", "network"):
        sys.exit("darknet2onnx: the cfg does not start with [net]")
    net = sections[0][1]
    width, height, channels = int(net["width"]), int(net["height"]), int(net.get("channels", 3))
    with open(names_path) as f:
        names = [COCO_SPELLINGS.get(n.strip(), n.strip()) for n in f if n.strip()]

    g = Graph()
    weights = Weights(weights_path)
    # Per layer: (output name, channels, height, width).
    outs = []
    heads = []
    current = ("images", channels, height, width)
    for index, (kind, p) in enumerate(sections[1:]):
        name = f"l{index:03d}_{kind}"
        x, c, h, w = current
        if kind == "convolutional":
            filters, size = int(p["filters"]), int(p["size"])
            stride = int(p.get("stride", 1))
            pad = size // 2 if int(p.get("pad", 0)) else int(p.get("padding", 0))
            if int(p.get("groups", 1)) != 1:
                sys.exit(f"darknet2onnx: layer {index}: grouped convolutions are not supported")
            if int(p.get("batch_normalize", 0)):
                beta, gamma = weights.take(filters), weights.take(filters)
                mean, var = weights.take(filters), weights.take(filters)
                kernel = weights.take(filters * c * size * size).reshape(filters, c, size, size)
                factor = gamma / (np.sqrt(var) + 1e-6)
                kernel = kernel * factor[:, None, None, None]
                bias = beta - mean * factor
            else:
                bias = weights.take(filters)
                kernel = weights.take(filters * c * size * size).reshape(filters, c, size, size)
            y = g.node(
                "Conv",
                [x, g.const(f"{name}.w", kernel.astype(np.float32)), g.const(f"{name}.b", bias.astype(np.float32))],
                f"{name}.conv",
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
            activation = p.get("activation", "linear")
            if activation == "leaky":
                y = g.node("LeakyRelu", [y], f"{name}.leaky", alpha=0.1)
            elif activation != "linear":
                sys.exit(f"darknet2onnx: layer {index}: activation {activation} is not supported")
            h, w = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
            current = (y, filters, h, w)
        elif kind == "maxpool":
            size = int(p.get("size", 2))
            stride = int(p.get("stride", size))
            padding = int(p.get("padding", size - 1))
            begin, end = padding // 2, padding - padding // 2
            y = g.node(
                "MaxPool",
                [x],
                f"{name}.pool",
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[begin, begin, end, end],
            )
            h, w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
            current = (y, c, h, w)
        elif kind == "upsample":
            stride = int(p.get("stride", 2))
            scales = g.const(f"{name}.scales", np.array([1, 1, stride, stride], dtype=np.float32))
            y = g.node("Resize", [x, "", scales], f"{name}.up", mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            current = (y, c, h * stride, w * stride)
        elif kind == "route":
            layers = [l if l >= 0 else index + l for l in ints(p["layers"])]
            groups, group_id = int(p.get("groups", 1)), int(p.get("group_id", 0))
            parts = [outs[l] for l in layers]
            if groups > 1:
                (src, sc, sh, sw), = parts
                part = sc // groups
                starts = g.const(f"{name}.starts", np.array([part * group_id], dtype=np.int64))
                ends = g.const(f"{name}.ends", np.array([part * (group_id + 1)], dtype=np.int64))
                axes = g.const(f"{name}.axes", np.array([1], dtype=np.int64))
                y = g.node("Slice", [src, starts, ends, axes], f"{name}.split")
                current = (y, part, sh, sw)
            elif len(parts) == 1:
                current = parts[0]
            else:
                y = g.node("Concat", [q[0] for q in parts], f"{name}.cat", axis=1)
                current = (y, sum(q[1] for q in parts), parts[0][2], parts[0][3])
        elif kind == "shortcut":
            other = outs[int(p["from"]) + index if int(p["from"]) < 0 else int(p["from"])]
            y = g.node("Add", [x, other[0]], f"{name}.add")
            if p.get("activation", "linear") != "linear":
                sys.exit(f"darknet2onnx: layer {index}: shortcut activation is not supported")
            current = (y, c, h, w)
        elif kind == "yolo":
            heads.append(decode_head(g, name, current, p, width, height, len(names)))
        else:
            sys.exit(f"darknet2onnx: layer {index}: [{kind}] is not supported")
        outs.append(current)
    if weights.at != weights.data.size:
        sys.exit(f"darknet2onnx: {weights.data.size - weights.at} floats of the weights file are unused: cfg and weights differ")
    if not heads:
        sys.exit("darknet2onnx: the cfg has no [yolo] layer")

    g.node("Concat", [h for h, _ in heads], "output0", axis=2)
    candidates = sum(n for _, n in heads)
    graph = helper.make_graph(
        g.nodes,
        "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, channels, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + len(names), candidates])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fieldwatch-darknet2onnx")
    model.ir_version = 8
    helper.set_model_props(model, {
        "names": "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(names)) + "}",
        "imgsz": f"[{height}, {width}]",
        "task": "detect",
    })
    onnx.checker.check_model(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    return inferred


def decode_head(g, name, current, p, width, height, classes):
    """One [yolo] layer's output as [1, 4 + C, A*H*W] (boxes in input pixels, scores), and A*H*W."""
    x, c, h, w = current
    mask = ints(p["mask"])
    anchors = np.array(ints(p["anchors"]), dtype=np.float32).reshape(-1, 2)[mask]
    if int(p.get("classes", classes)) != classes:
        sys.exit(f"darknet2onnx: [yolo] has {p['classes']} classes, the names file {classes}")
    if int(p.get("new_coords", 0)):
        sys.exit("darknet2onnx: new_coords=1 (scaled YOLOv4) is not supported")
    a, n = len(mask), 5 + classes
    if c != a * n:
        sys.exit(f"darknet2onnx: [yolo] input has {c} channels, {a} anchors x {n} wanted")
    s = float(p.get("scale_x_y", 1.0))
    raw = g.node("Reshape", [x, g.const(f"{name}.shape", np.array([1, a, n, h * w], dtype=np.int64))], f"{name}.raw")

    def part(lo, hi, label):
        return g.node("Slice", [raw, g.const(f"{name}.{label}.lo", np.array([lo], dtype=np.int64)),
                                g.const(f"{name}.{label}.hi", np.array([hi], dtype=np.int64)),
                                g.const(f"{name}.{label}.ax", np.array([2], dtype=np.int64))], f"{name}.{label}")

    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid = np.stack([cols.reshape(-1), rows.reshape(-1)])[None, None]  # [1, 1, 2, HW]
    stride = np.array([width / w, height / h], dtype=np.float32).reshape(1, 1, 2, 1)
    xy = g.node("Sigmoid", [part(0, 2, "xy")], f"{name}.xy.sig")
    if s != 1.0:
        xy = g.node("Mul", [xy, g.const(f"{name}.sxy", np.array(s, dtype=np.float32))], f"{name}.xy.scaled")
        xy = g.node("Sub", [xy, g.const(f"{name}.sxy.off", np.array((s - 1) / 2, dtype=np.float32))], f"{name}.xy.shifted")
    xy = g.node("Add", [xy, g.const(f"{name}.grid", grid)], f"{name}.xy.cell")
    xy = g.node("Mul", [xy, g.const(f"{name}.stride", stride)], f"{name}.xy.px")
    wh = g.node("Exp", [part(2, 4, "wh")], f"{name}.wh.exp")
    wh = g.node("Mul", [wh, g.const(f"{name}.anchors", anchors.reshape(1, a, 2, 1))], f"{name}.wh.px")
    obj = g.node("Sigmoid", [part(4, 5, "obj")], f"{name}.obj.sig")
    cls = g.node("Sigmoid", [part(5, n, "cls")], f"{name}.cls.sig")
    scores = g.node("Mul", [obj, cls], f"{name}.scores")
    head = g.node("Concat", [xy, wh, scores], f"{name}.head", axis=2)  # [1, A, 4 + C, HW]
    head = g.node("Transpose", [head], f"{name}.t", perm=[0, 2, 1, 3])  # [1, 4 + C, A, HW]
    flat = g.const(f"{name}.flat", np.array([1, 4 + classes, a * h * w], dtype=np.int64))
    return g.node("Reshape", [head, flat], f"{name}.out"), a * h * w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--names", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model = convert(args.cfg, args.weights, args.names)
    part = args.out + ".part"
    with open(part, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(part, args.out)


if __name__ == "__main__":
    main()
