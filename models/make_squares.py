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

Variants (`--variant`), the same detector in the other forms models come in, for the tests of
each output format and input convention:
  yolov8 (default)  as above
  yolov5            output [1, N, 5 + C]: cx, cy, w, h, objectness (1), then the class scores
  e2e               output [1, K, 6]: x1, y1, x2, y2, score, class of the boxes kept by an
                    ONNX NonMaxSuppression inside the model, as end-to-end exports (YOLOv10,
                    YOLO26) give them; K varies
  fp16_bgr_255      input float16, BGR channel order, 0..255 values; output as yolov8
  rank2             a broken export: output [4 + C, N], without the batch dimension (for the
                    test of clear errors on models that fit no layout)
  batch             a dynamic batch dimension: input [N, 3, H, W], output [N, 4 + C, anchors]
                    (the yolov8 detector applied to each image by an ONNX Scan)

Usage: make_squares.py [--variant NAME] OUT.onnx
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


def build(variant="yolov8"):
    input_type, input_name = TensorProto.FLOAT, "images"
    if variant == "fp16_bgr_255":
        # float16 BGR 0..255 in, float32 RGB 0..1 for the detector below.
        input_type, input_name = TensorProto.FLOAT16, "images_bgr255"
        f = node("Cast", [input_name], "images_f32", to=TensorProto.FLOAT)
        scaled = node("Mul", [f, const("inv255", np.float32(1 / 255))], "images_unit")
        nodes.append(helper.make_node("Split", [scaled], ["B_in", "G_in", "R_in"], axis=1, num_outputs=3))
        node("Concat", ["R_in", "G_in", "B_in"], "images", axis=1)
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
    c = len(CLASSES)
    if variant == "yolov5":
        flat = node("Reshape", [rows, const("rows2d", np.array([4 + c, n], np.int64))], "rows2d_v")
        per_anchor = node("Transpose", [flat], "per_anchor", perm=[1, 0])  # [N, 4 + C]
        nodes.append(helper.make_node("Split", [per_anchor, const("split_box", np.array([4, c], np.int64))],
                                      ["box", "cls"], axis=1))
        objectness = const("objectness", np.ones((n, 1), np.float32))
        out = node("Concat", ["box", objectness, "cls"], "v5_rows", axis=1)
        node("Reshape", [out, const("out_shape", np.array([1, n, 5 + c], np.int64))], "output0")
        out_shape = [1, n, 5 + c]
    elif variant == "e2e":
        # NMS inside, as end-to-end exports do: ONNX NonMaxSuppression over corner boxes, then
        # the kept rows as x1, y1, x2, y2, score, class.
        flat = node("Reshape", [rows, const("rows2d", np.array([4 + c, n], np.int64))], "rows2d_v")
        per_anchor = node("Transpose", [flat], "per_anchor", perm=[1, 0])  # [N, 4 + C]
        nodes.append(helper.make_node("Split", [per_anchor, const("split_e2e", np.array([1, 1, 1, 1, c], np.int64))],
                                      ["ecx", "ecy", "ew", "eh", "ecls"], axis=1))
        hw, hh = node("Mul", ["ew", "half"], "ehw"), node("Mul", ["eh", "half"], "ehh")
        x1, y1 = node("Sub", ["ecx", hw], "ex1"), node("Sub", ["ecy", hh], "ey1")
        x2, y2 = node("Add", ["ecx", hw], "ex2"), node("Add", ["ecy", hh], "ey2")
        corners = node("Concat", [x1, y1, x2, y2], "ecorners", axis=1)  # [N, 4]
        boxes = node("Unsqueeze", [corners, const("ax0", np.array([0], np.int64))], "eboxes")  # [1, N, 4]
        scores = node("Unsqueeze", [node("Transpose", ["ecls"], "ecls_t", perm=[1, 0]), "ax0"], "escores")  # [1, C, N]
        kept = node("NonMaxSuppression", [boxes, scores, const("max_out", np.array([100], np.int64)),
                                          const("iou", np.array([0.45], np.float32)),
                                          const("min_score", np.array([0.25], np.float32))], "kept")  # [K, 3]
        nodes.append(helper.make_node("Split", [kept, const("split_kept", np.array([1, 1, 1], np.int64))],
                                      ["k_batch", "k_class", "k_box"], axis=1))
        box_idx = node("Squeeze", ["k_box", const("ax1", np.array([1], np.int64))], "k_box_i")  # [K]
        kept_corners = node("Gather", [corners, box_idx], "k_corners", axis=0)  # [K, 4]
        class_box = node("Concat", ["k_class", "k_box"], "k_class_box", axis=1)  # [K, 2]
        score_map = node("Squeeze", [scores, "ax0"], "escores_2d")  # [C, N]
        kept_score = node("Unsqueeze", [node("GatherND", [score_map, class_box], "k_score_1d"), "ax1"], "k_score")
        kept_class = node("Cast", ["k_class"], "k_class_f", to=TensorProto.FLOAT)
        out = node("Concat", [kept_corners, kept_score, kept_class], "e2e_rows", axis=1)  # [K, 6]
        node("Unsqueeze", [out, "ax0"], "output0")
        out_shape = [1, "detections", 6]
    elif variant == "rank2":
        node("Reshape", [rows, const("out_shape", np.array([4 + c, n], np.int64))], "output0")
        out_shape = [4 + c, n]
    else:
        node("Reshape", [rows, const("out_shape", np.array([1, 4 + c, n], np.int64))], "output0")
        out_shape = [1, 4 + c, n]

    if variant == "batch":
        graph = batched(out_shape)
    else:
        graph = helper.make_graph(
            nodes, "squares",
            [helper.make_tensor_value_info(input_name, input_type, [1, 3, SIZE, SIZE])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
            inits,
        )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="fieldwatch")
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{c}'" for i, c in enumerate(CLASSES)) + "}"
    helper.set_model_props(model, {"names": names, "imgsz": f"[{SIZE}, {SIZE}]",
                                   "description": "fieldwatch test detector: solid red/green squares"})
    onnx.checker.check_model(model, full_check=True)
    return model


def batched(out_shape):
    """The one-image graph as the body of a Scan over the batch: [N, 3, H, W] -> [N, 4 + C, A]."""
    node("Unsqueeze", ["image", const("ax_batch", np.array([0], np.int64))], "images")
    nodes.insert(0, nodes.pop())  # graphs list nodes in order: the image comes first
    node("Squeeze", ["output0", "ax_batch"], "rows_out")
    body = helper.make_graph(
        nodes, "squares_one",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, SIZE, SIZE])],
        [helper.make_tensor_value_info("rows_out", TensorProto.FLOAT, out_shape[1:])],
        inits,
    )
    scan = helper.make_node("Scan", ["batch_images"], ["output0"], name="per_image", body=body, num_scan_inputs=1)
    return helper.make_graph(
        [scan], "squares_batch",
        [helper.make_tensor_value_info("batch_images", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch"] + out_shape[1:])],
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    variant = "yolov8"
    if args[:1] == ["--variant"] and len(args) == 3:
        variant, args = args[1], args[2:]
    if len(args) != 1 or variant not in ("yolov8", "yolov5", "e2e", "fp16_bgr_255", "rank2", "batch"):
        sys.exit(__doc__)
    onnx.save(build(variant), args[0])
