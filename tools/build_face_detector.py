#!/usr/bin/env python3
"""Rebuild the face detector plans `models/blazeface/blazeface-{short,full}.mien` from their registry source.

Source: MediaPipe's BlazeFace models in the npm package @mediapipe/face_detection@0.4.1657300184
(Apache-2.0): `face_detection_short_range.tflite` (128x128, faces within ~2 m: what a kiosk sees; the
default) and `face_detection_full_range.tflite` (192x192, faces up to ~5 m, groups).

Steps (downloads cached under $MIEN_CACHE/blazeface, default ~/.cache/mien/blazeface):
  fetch    the npm tarball from registry.npmjs.org, checked against its pinned sha512
  onnx     tf2onnx --tflite (pinned in tools/requirements-detector.txt; needs tensorflow-cpu)
  merge    one output: concat(regressors [1,N,16], scores [1,N,1]) -> detections [1,N,17],
           because a mien plan has one output; checked against the TFLite interpreter on real pixels
  configs  config.json (label "face"), preprocessor_config.json (x / 127.5 - 1, NHWC),
           detector.json (anchors and decoding, from MediaPipe's face_detection_*_range graphs)
  plan     mien-convert model.onnx -o models/blazeface/blazeface-VARIANT.mien --detector detector.json

Examples:
  python3 -m venv ~/.cache/mien/venv-detector
  ~/.cache/mien/venv-detector/bin/pip install -r tools/requirements-detector.txt
  ~/.cache/mien/venv-detector/bin/python tools/build_face_detector.py
  ~/.cache/mien/venv-detector/bin/python tools/build_face_detector.py --steps fetch,onnx,merge,configs \\
      -o /tmp/blazeface          # without writing the plan
  ~/.cache/mien/venv-detector/bin/python tools/build_face_detector.py --variant full
"""
import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import urllib.request

import numpy as np

PACKAGE = "@mediapipe/face_detection"
VERSION = "0.4.1657300184"
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/face_detection-{VERSION}.tgz"
# Anchors and decoding, from MediaPipe's graphs. Short range (face_detection_short_range.pbtxt):
# SsdAnchorsCalculator num_layers 4, strides 8,16,16,16, aspect ratio 1 plus the interpolated one, fixed
# anchor size: 2 anchors per 8-pixel cell and 6 per 16-pixel cell (three stride-16 layers merged),
# 16*16*2 + 8*8*6 = 896. Full range (face_detection_full_range.pbtxt): one layer, stride 4, one anchor
# per cell, 48*48 = 2304. Both: 6 keypoints, sigmoid score clipped at 100, weighted NMS at IoU 0.3;
# min score 0.5 (short) and 0.6 (full).
VARIANTS = {
    "short": {
        "tflite": "package/face_detection_short_range.tflite",
        "size": 128,
        "outputs": ["regressors", "classificators"],
        "name": "blazeface-short-range",
        "detector": {
            "anchor_layers": [{"stride": 8, "per_cell": 2}, {"stride": 16, "per_cell": 6}],
            "anchor_offset": 0.5,
            "keypoints": 6,
            "score_clip": 100.0,
            "min_score": 0.5,
            "nms_iou": 0.3,
        },
    },
    "full": {
        "tflite": "package/face_detection_full_range.tflite",
        "size": 192,
        "outputs": ["reshaped_regressor_face_4", "reshaped_classifier_face_4"],
        "name": "blazeface-full-range",
        "detector": {
            "anchor_layers": [{"stride": 4, "per_cell": 1}],
            "anchor_offset": 0.5,
            "keypoints": 6,
            "score_clip": 100.0,
            "min_score": 0.6,
            "nms_iou": 0.3,
        },
    },
}
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def cache_dir():
    base = os.environ.get("MIEN_CACHE", os.path.expanduser("~/.cache/mien"))
    path = os.path.join(base, "blazeface")
    os.makedirs(path, exist_ok=True)
    return path


def fetch(cache, variant):
    tgz = os.path.join(cache, f"face_detection-{VERSION}.tgz")
    pinned = os.path.join(HERE, "blazeface.sha512")
    if not os.path.exists(tgz):
        log(f"fetch: {TARBALL}")
        tmp = tgz + ".part"
        urllib.request.urlretrieve(TARBALL, tmp)
        os.replace(tmp, tgz)
    digest = base64.b64encode(hashlib.sha512(open(tgz, "rb").read()).digest()).decode()
    expected = open(pinned).read().strip()
    if f"sha512-{digest}" != expected:
        sys.exit(f"fetch: {tgz}: sha512-{digest} does not match the pinned {expected} ({pinned})")
    member = VARIANTS[variant]["tflite"]
    with tarfile.open(tgz) as tar:
        data = tar.extractfile(tar.getmember(member)).read()
    out = os.path.join(cache, os.path.basename(member))
    with open(out, "wb") as f:
        f.write(data)
    log(f"fetch: {out} ({len(data)} bytes)")
    return out


def to_onnx(tflite, out_dir):
    raw = os.path.join(out_dir, "tf2onnx.onnx")
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", tflite, "--output", raw, "--opset", "13"]
    log("onnx:", " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return raw


def merge(raw, out_dir, tflite, variant):
    import onnx
    from onnx import helper

    spec = VARIANTS[variant]
    boxes, scores = spec["outputs"]
    model = onnx.load(raw)
    graph = model.graph
    names = [o.name for o in graph.output]
    if names != spec["outputs"]:
        sys.exit(f"merge: {raw}: expected outputs {spec['outputs']}, found {names}")
    anchors = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    graph.node.append(helper.make_node("Concat", [boxes, scores], ["detections"], axis=2))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("detections", onnx.TensorProto.FLOAT, [1, anchors, 17]))
    onnx.checker.check_model(model)
    out = os.path.join(out_dir, "model.onnx")
    onnx.save(model, out + ".part")
    os.replace(out + ".part", out)

    # The merged ONNX must give what the TFLite interpreter gives, on a real-looking input.
    import onnxruntime as ort
    import tensorflow as tf

    size = spec["size"]
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(1, size, size, 3)).astype(np.float32) / 127.5 - 1.0
    interpreter = tf.lite.Interpreter(model_path=tflite)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
    interpreter.invoke()
    outs = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    expected = np.concatenate([outs[boxes], outs[scores]], axis=2)
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    diff = float(np.abs(got - expected).max())
    log(f"merge: {out}: max |onnx - tflite| = {diff:.2e}")
    if diff > 1e-3:
        sys.exit(f"merge: {out} differs from the TFLite model by {diff}")
    return out


def configs(out_dir, variant):
    spec = VARIANTS[variant]
    size = spec["size"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"id2label": {"0": "face"}, "label2id": {"face": 0}}, f, indent=2)
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(
            {
                "do_rescale": True,
                "rescale_factor": 1.0 / 127.5,
                "do_normalize": True,
                "image_mean": [1.0, 1.0, 1.0],
                "image_std": [1.0, 1.0, 1.0],
                "size": {"height": size, "width": size},
                "resample": 2,
            },
            f,
            indent=2,
        )
    with open(os.path.join(out_dir, "detector.json"), "w") as f:
        json.dump(spec["detector"], f, indent=2)


def plan(out_dir, output, variant):
    cmd = [
        "cargo", "run", "--quiet", "-p", "mien-convert", "--",
        os.path.join(out_dir, "model.onnx"), "-o", output,
        "--detector", os.path.join(out_dir, "detector.json"),
        "--layout", "nhwc", "--name", VARIANTS[variant]["name"],
    ]
    log("plan:", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=["short", "full", "all"], default="all")
    parser.add_argument("--steps", default="fetch,onnx,merge,configs,plan")
    parser.add_argument("-o", "--out-dir", default=None, help="working folder (default: the cache)")
    parser.add_argument("--models", default=os.path.join(ROOT, "models", "blazeface"), help="where plans go")
    args = parser.parse_args()
    steps = args.steps.split(",")
    cache = cache_dir()
    for variant in ["short", "full"] if args.variant == "all" else [args.variant]:
        out_dir = os.path.join(args.out_dir or cache, variant)
        os.makedirs(out_dir, exist_ok=True)
        tflite = fetch(cache, variant)
        if "onnx" in steps or "merge" in steps:
            raw = to_onnx(tflite, out_dir)
            merge(raw, out_dir, tflite, variant)
        if "configs" in steps:
            configs(out_dir, variant)
        if "plan" in steps:
            plan(out_dir, os.path.join(args.models, f"blazeface-{variant}.mien"), variant)


if __name__ == "__main__":
    main()
