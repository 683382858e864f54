#!/usr/bin/env python3
"""Small hand-built ONNX models for mien-convert's input-handling tests (tests/data/onnx/).

  dynamic_hw.onnx  [N,3,H,W] float -> conv 3x3 -> global average pool -> gemm -> [N,4]; no configs beside it
  nhwc_gray.onnx   [N,48,48,1] float (Keras style) -> flatten -> gemm -> [N,7]
  two_inputs.onnx  two float inputs (not an image classifier)
  text_input.onnx  [N,16] int64 token ids (not an image classifier)
  no_inputs.onnx   no inputs at all: a constant output
  unknown_op.onnx  [1,3,8,8] float -> FaceMagic (an op no runtime knows, domain com.example) -> [1,4]
Weights come from a fixed seed. Run: python tools/make_onnx_fixtures.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "onnx")
rng = np.random.default_rng(7)


def save(graph, name):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mien-fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, name))


def init(name, array):
    return numpy_helper.from_array(array.astype(np.float32), name)


def dynamic_hw():
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["scores"], transB=1),
    ]
    inits = [init("w", rng.normal(0, 0.5, (8, 3, 3, 3))), init("b", rng.normal(0, 0.1, 8)),
             init("fc", rng.normal(0, 1.0, (4, 8))), init("fcb", rng.normal(0, 0.1, 4))]
    save(helper.make_graph(nodes, "dynamic_hw", [x], [y], inits), "dynamic_hw.onnx")


def nhwc_gray():
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 48, 48, 1])
    y = helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["N", 7])
    nodes = [
        helper.make_node("Flatten", ["input_1"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["dense"], transB=1),
    ]
    inits = [init("fc", rng.normal(0, 0.05, (7, 48 * 48))), init("fcb", rng.normal(0, 0.1, 7))]
    save(helper.make_graph(nodes, "nhwc_gray", [x], [y], inits), "nhwc_gray.onnx")


def two_inputs():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8, 8])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    save(helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two_inputs", [a, b], [y]), "two_inputs.onnx")


def text_input():
    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 16, 4])
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["logits"])]
    inits = [init("emb", rng.normal(0, 1, (100, 4)))]
    save(helper.make_graph(nodes, "text_input", [x], [y], inits), "text_input.onnx")


def no_inputs():
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    value = numpy_helper.from_array(np.zeros((1, 4), np.float32), "value")
    nodes = [helper.make_node("Constant", [], ["y"], value=value)]
    save(helper.make_graph(nodes, "no_inputs", [], [y]), "no_inputs.onnx")


def unknown_op():
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("FaceMagic", ["pixel_values"], ["logits"], domain="com.example")]
    model = helper.make_model(
        helper.make_graph(nodes, "unknown_op", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        producer_name="mien-fixtures",
    )
    model.ir_version = 8
    onnx.save(model, os.path.join(OUT, "unknown_op.onnx"))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    dynamic_hw()
    nhwc_gray()
    two_inputs()
    text_input()
    no_inputs()
    unknown_op()
    print("wrote", sorted(os.listdir(OUT)))
