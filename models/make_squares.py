#!/usr/bin/env python3
"""Build `squares.onnx`: a deterministic "detector" for solid red and green squares.

It exists so tests can check the whole pipeline with boxes known to the pixel, through the same
ONNX Runtime path and YOLOv8 output layout as a real model. It is a real graph, not a constant:

1. colour masks: red = R>0.5, G<0.35, B<0.35; green likewise (class 0 = red, 1 = green);
2. a 3x3 morphological opening removes compression specks;
3. a top-left corner map (set pixel, unset left and up neighbours) via a 2x2 convolution;
4. run lengths to the right and downwards (distance to the next unset pixel, up to MAX_SIZE) via
   min-pooling an index map in which set pixels are pushed out of reach;
5. per 8x8 tile: ArgMax picks the corner, GatherElements reads its x, y, width and height.
   Two non-overlapping squares of side >= TILE never put corners in the same tile.

Output `output0` is [1, 4 + 2, N] (cx, cy, w, h in model pixels, then one score per class) with
N = (320/8)^2 anchors, like YOLOv8. Score = 0.5 + 0.5 * short side / long side, so squares score
~1.0 and thin slivers ~0.5. Squares must be TILE..MAX_SIZE model pixels on a side.

Usage: make_squares.py OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 320  # model input is SIZE x SIZE
TILE = 8
MAX_SIZE = 128
CLASSES = ["red", "green"]
BIG = 1.0e4

nodes, inits = [], []


def const(name, value):
    if any(i.name == name for i in inits):
        return name
    inits.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def node(op, inputs, output, **attrs):
    nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
    return output


def colour_mask(name, hi, lo1, lo2):
    high = node("Greater", [hi, "t_hi"], f"{name}_hi")
    low1 = node("Less", [lo1, "t_lo"], f"{name}_lo1")
    low2 = node("Less", [lo2, "t_lo"], f"{name}_lo2")
    return node("And", [high, node("And", [low1, low2], f"{name}_lo")], f"{name}_mask")


def tiles(x, name):
    """[1, C, H, W] -> [C, N, TILE*TILE], one row per tile, tiles in row-major order."""
    n = SIZE // TILE
    r = node("Reshape", [x, const(f"{name}_s1", np.array([len(CLASSES), n, TILE, n, TILE], np.int64))], f"{name}_r1")
    t = node("Transpose", [r], f"{name}_t", perm=[0, 1, 3, 2, 4])
    return node("Reshape", [t, const(f"{name}_s2", np.array([len(CLASSES), n * n, TILE * TILE], np.int64))], f"{name}_tiles")


def build():
    const("t_hi", np.float32(0.5))
    const("t_lo", np.float32(0.35))
    const("one", np.float32(1.0))
    nodes.append(helper.make_node("Split", ["images"], ["R", "G", "B"], axis=1, num_outputs=3))
    red = colour_mask("red", "R", "G", "B")
    green = colour_mask("green", "G", "R", "B")
    raw = node("Cast", [node("Concat", [red, green], "masks_b", axis=1)], "masks_raw", to=TensorProto.FLOAT)

    # Opening = erosion (min-pool) then dilation (max-pool); pooling pads are ignored, not zeros.
    inv = node("Sub", ["one", raw], "inv")
    eroded = node("Sub", ["one", node("MaxPool", [inv], "inv_dil", kernel_shape=[3, 3], pads=[1, 1, 1, 1])], "eroded")
    m = node("MaxPool", [eroded], "mask", kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    # corner = relu(m(y,x) - m(y,x-1) - m(y-1,x)); zero padding means "outside is unset".
    k = np.zeros((len(CLASSES), 1, 2, 2), np.float32)
    k[:, 0, 1, 1], k[:, 0, 1, 0], k[:, 0, 0, 1] = 1, -1, -1
    corner = node("Relu", [node("Conv", ["mask", const("corner_k", k)], "corner_lin",
                                pads=[1, 1, 0, 0], group=len(CLASSES))], "corner")

    xs = const("xs", np.arange(SIZE, dtype=np.float32).reshape(1, 1, 1, SIZE))
    ys = const("ys", np.arange(SIZE, dtype=np.float32).reshape(1, 1, SIZE, 1))
    big = const("big", np.float32(BIG))
    limit = const("limit", np.float32(SIZE))
    max_size = const("max_size", np.float32(MAX_SIZE))
    zero_map = node("Mul", [m, const("zero", np.float32(0.0))], "zero_map")
    x_map = node("Add", [zero_map, xs], "x_map")
    y_map = node("Add", [zero_map, ys], "y_map")

    def run_length(axis_map, name, kernel, pads):
        # Index of the next unset pixel along the axis = min over a window of (index + BIG*set).
        pushed = node("Add", [axis_map, node("Mul", [m, big], f"{name}_bigm")], f"{name}_pushed")
        neg = node("Neg", [pushed], f"{name}_neg")
        nxt = node("Neg", [node("MaxPool", [neg], f"{name}_pool", kernel_shape=kernel, pads=pads)], f"{name}_next")
        nxt = node("Min", [nxt, limit, node("Add", [axis_map, max_size], f"{name}_cap")], f"{name}_next_c")
        return node("Sub", [nxt, axis_map], f"{name}_len")

    w_map = run_length(x_map, "w", [1, MAX_SIZE], [0, 0, 0, MAX_SIZE - 1])
    h_map = run_length(y_map, "h", [MAX_SIZE, 1], [0, 0, MAX_SIZE - 1, 0])

    corner_t = tiles(corner, "corner")
    idx = node("ArgMax", [corner_t], "idx", axis=2, keepdims=1)
    present = node("ReduceMax", [corner_t, const("ax2", np.array([2], np.int64))], "present", keepdims=1)

    def pick(mp, name):
        return node("GatherElements", [tiles(mp, name), idx], f"{name}_v", axis=2)

    x0, y0, w, h = pick(x_map, "x"), pick(y_map, "y"), pick(w_map, "wt"), pick(h_map, "ht")
    lo = node("Min", [w, h], "short")
    hi = node("Max", [node("Max", [w, h], "long0"), "one"], "long")
    shape = node("Add", [const("half", np.float32(0.5)),
                         node("Mul", ["half", node("Div", [lo, hi], "ratio")], "half_ratio")], "shape_score")
    score = node("Mul", [present, shape], "score")  # [C, N, 1]

    def merge(v, name):  # at most one class has a corner per tile, so a weighted sum selects it
        return node("ReduceSum", [node("Mul", [v, present], f"{name}_w"), const("ax0", np.array([0], np.int64))],
                    f"{name}_m", keepdims=1)

    half_w = node("Mul", [merge(w, "w"), "half"], "half_w")
    half_h = node("Mul", [merge(h, "h"), "half"], "half_h")
    cx = node("Add", [merge(x0, "x0"), half_w], "cx")
    cy = node("Add", [merge(y0, "y0"), half_h], "cy")
    rows = node("Concat", [cx, cy, "w_m", "h_m", score], "rows", axis=0)  # [4 + C, N, 1]
    n = (SIZE // TILE) ** 2
    node("Reshape", [rows, const("out_shape", np.array([1, 4 + len(CLASSES), n], np.int64))], "output0")

    graph = helper.make_graph(
        nodes, "squares",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + len(CLASSES), n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="fieldwatch")
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{c}'" for i, c in enumerate(CLASSES)) + "}"
    helper.set_model_props(model, {"names": names, "imgsz": f"[{SIZE}, {SIZE}]",
                                   "description": "fieldwatch test detector: solid red/green squares"})
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    onnx.save(build(), sys.argv[1])
