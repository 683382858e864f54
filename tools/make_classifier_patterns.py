#!/usr/bin/env python3
"""A corpus of exported-classifier graph patterns (tests/data/onnx/patterns/), with onnxruntime's outputs.

Each model is built with the onnx helper API the way the exporters lay such graphs out (tf2onnx for
Keras / TF.js models: NHWC input, preprocessing inside the graph as Sub/Mul/Div by constants of lower rank
than the image, a Transpose to NCHW; PyTorch: NCHW, Pad, BatchNormalization, Flatten, Gemm), with random
weights from a fixed seed. expected.json holds, per model, what mien-convert needs to be told (size,
mean/std) and onnxruntime's logits on a deterministic input: element i of the flattened input tensor is
((i * 2654435761) mod 2^32) / 2^32, in the model's own layout. tests/suite/patterns.rs converts every
model and compares the plan with these logits.

Run: python tools/make_classifier_patterns.py   (needs onnx, onnxruntime, numpy: tools/requirements.txt)
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "onnx", "patterns")
rng = np.random.default_rng(11)


def weight(name, *shape, scale=0.3):
    return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)


def const(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def deterministic_input(shape):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    return (((i * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float64) / 2**32).astype(np.float32).reshape(shape)


def conv_bn_relu(prefix, x, cin, cout, k=3, stride=1, group=1, pads=None):
    pads = pads if pads is not None else [k // 2] * 4
    nodes = [
        helper.make_node("Conv", [x, f"{prefix}_w", f"{prefix}_b"], [f"{prefix}_conv"], kernel_shape=[k, k],
                         strides=[stride, stride], pads=pads, group=group),
        helper.make_node("BatchNormalization", [f"{prefix}_conv", f"{prefix}_g", f"{prefix}_beta", f"{prefix}_mean",
                                                f"{prefix}_var"], [f"{prefix}_bn"], epsilon=1e-3),
        helper.make_node("Relu", [f"{prefix}_bn"], [f"{prefix}_relu"]),
    ]
    inits = [
        weight(f"{prefix}_w", cout, cin // group, k, k), weight(f"{prefix}_b", cout, scale=0.05),
        const(f"{prefix}_g", rng.uniform(0.5, 1.5, cout)), const(f"{prefix}_beta", rng.normal(0, 0.1, cout)),
        const(f"{prefix}_mean", rng.normal(0, 0.1, cout)), const(f"{prefix}_var", rng.uniform(0.5, 1.5, cout)),
    ]
    return nodes, inits, f"{prefix}_relu"


def head(x, channels, classes, softmax, flatten="Flatten"):
    nodes = [helper.make_node("GlobalAveragePool", [x], ["gap"])]
    if flatten == "Flatten":
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
        inits = []
    else:
        nodes.append(helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"]))
        inits = [numpy_helper.from_array(np.array([-1, channels], dtype=np.int64), "flat_shape")]
    out = "probabilities" if softmax else "logits"
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["dense" if softmax else out], transB=1))
    inits += [weight("fc_w", classes, channels), weight("fc_b", classes, scale=0.05)]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["dense"], [out], axis=-1))
    return nodes, inits, out


def tf2onnx_nhwc_rgb():
    """The tf2onnx export of a Keras/TF.js expression CNN: NHWC RGB 112x112, Sub(input, const[3]) then Mul
    by a scalar constant (tensors named as tf2onnx names them), Transpose to NCHW, depthwise and pointwise
    convolutions, softmax at the output."""
    nodes = [
        helper.make_node("Sub", ["input_1", "sub_y"], ["sub"]),
        helper.make_node("Mul", ["sub", "truediv_y"], ["truediv"]),
        helper.make_node("Transpose", ["truediv"], ["nchw"], perm=[0, 3, 1, 2]),
    ]
    inits = [const("sub_y", [123.7, 116.3, 103.5]), const("truediv_y", 1 / 58.0)]
    n, i, x = conv_bn_relu("stem", "nchw", 3, 8, stride=2)
    nodes += n; inits += i
    n, i, x = conv_bn_relu("dw", x, 8, 8, group=8)
    nodes += n; inits += i
    n, i, x = conv_bn_relu("pw", x, 8, 16, k=1, pads=[0, 0, 0, 0])
    nodes += n; inits += i
    n, i, out = head(x, 16, 7, softmax=True)
    nodes += n; inits += i
    return nodes, inits, ["unk__0", 112, 112, 3], 7, {"mean": [0.0], "std": [1.0 / 255.0]}


def keras_nhwc_gray_div():
    """Keras 48x48 grayscale (FER-style): Div by 255 and Sub 0.5 with rank-0 and rank-1 constants, Pad,
    MaxPool, Keras-style Reshape instead of Flatten, static batch 1."""
    nodes = [
        helper.make_node("Div", ["image", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "half"], ["centred"]),
        helper.make_node("Transpose", ["centred"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Pad", ["nchw", "pads"], ["padded"], mode="constant"),
    ]
    inits = [const("scale", 255.0), const("half", [0.5]),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads")]
    n, i, x = conv_bn_relu("c1", "padded", 1, 8, pads=[0, 0, 0, 0])
    nodes += n; inits += i
    nodes.append(helper.make_node("MaxPool", [x], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
    n, i, x = conv_bn_relu("c2", "pooled", 8, 16)
    nodes += n; inits += i
    n, i, out = head(x, 16, 7, softmax=False, flatten="Reshape")
    nodes += n; inits += i
    return nodes, inits, [1, 48, 48, 1], 7, {"mean": [0.0], "std": [1.0 / 255.0]}


def pytorch_nchw_rgb():
    """A PyTorch export: NCHW RGB 64x64, normalisation outside the graph, Conv + BatchNormalization,
    residual Add, GlobalAveragePool, Flatten, Gemm, dynamic batch."""
    n1, i1, x = conv_bn_relu("c1", "pixel_values", 3, 8, stride=2)
    n2, i2, y = conv_bn_relu("c2", x, 8, 8)
    nodes = n1 + n2 + [helper.make_node("Add", [x, y], ["residual"])]
    n3, i3, out = head("residual", 8, 5, softmax=False)
    return nodes + n3, i1 + i2 + i3, ["batch_size", 3, 64, 64], 5, {}


def nchw_gray_broadcast_constants():
    """NCHW grayscale with preprocessing constants of every rank that broadcasts against the image: a
    scalar, [1], [1,1], [1,1,1] and [1,1,1,1], in Sub, Mul, Div and Add."""
    nodes = [
        helper.make_node("Sub", ["x", "c0"], ["a"]),
        helper.make_node("Mul", ["a", "c1"], ["b"]),
        helper.make_node("Div", ["b", "c2"], ["c"]),
        helper.make_node("Add", ["c", "c3"], ["d"]),
        helper.make_node("Mul", ["d", "c4"], ["e"]),
    ]
    inits = [const("c0", 0.25), const("c1", [2.0]), const("c2", [[1.5]]), const("c3", [[[0.1]]]),
             const("c4", [[[[0.9]]]])]
    n, i, x = conv_bn_relu("c", "e", 1, 6)
    nodes += n; inits += i
    n, i, out = head(x, 6, 3, softmax=True)
    nodes += n; inits += i
    return nodes, inits, [1, 1, 40, 40], 3, {}


def nhwc_rgb_per_channel_rank2():
    """NHWC RGB whose per-channel constants are [1,3] and [1,1,1,3] (Keras Normalization layers), Conv
    with asymmetric padding, softmax at the output, dynamic batch."""
    nodes = [
        helper.make_node("Sub", ["rgb", "mean"], ["m"]),
        helper.make_node("Div", ["m", "std"], ["s"]),
        helper.make_node("Transpose", ["s"], ["nchw"], perm=[0, 3, 1, 2]),
    ]
    inits = [const("mean", [[0.48, 0.45, 0.41]]), const("std", [[[[0.23, 0.22, 0.22]]]])]
    n, i, x = conv_bn_relu("c", "nchw", 3, 8, stride=2, pads=[0, 0, 1, 1])
    nodes += n; inits += i
    n, i, out = head(x, 8, 7, softmax=True)
    nodes += n; inits += i
    return nodes, inits, ["N", 56, 56, 3], 7, {"mean": [0.0], "std": [1.0]}


PATTERNS = {
    "tf2onnx_nhwc_rgb": tf2onnx_nhwc_rgb,
    "keras_nhwc_gray_div": keras_nhwc_gray_div,
    "pytorch_nchw_rgb": pytorch_nchw_rgb,
    "nchw_gray_broadcast_constants": nchw_gray_broadcast_constants,
    "nhwc_rgb_per_channel_rank2": nhwc_rgb_per_channel_rank2,
}


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for name, build in PATTERNS.items():
        nodes, inits, input_shape, classes, flags = build()
        input_name = nodes[0].input[0]
        output_name = nodes[-1].output[0]
        x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)
        batch = input_shape[0]
        y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])
        model = helper.make_model(helper.make_graph(nodes, name, [x], [y], inits),
                                  opset_imports=[helper.make_opsetid("", 13)], producer_name="mien-patterns")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(OUT, name + ".onnx")
        onnx.save(model, path)
        shape = [1] + [d for d in input_shape[1:]]
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        logits = session.run(None, {input_name: deterministic_input(shape)})[0][0]
        expected[name] = {"input_shape": shape, "flags": flags, "logits": [float(v) for v in logits],
                          "doc": (build.__doc__ or "").split("\n")[0]}
        print(f"{name}: input {shape}, {classes} outputs")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"onnxruntime": ort.__version__, "models": expected}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
