#!/usr/bin/env python3
"""onnxruntime's int8 quantizers on the same model and images as mien's int8 plan, for the drift table.

Quantizes a Hugging Face style ONNX export with onnxruntime's quantize_dynamic (int8 weights, dynamic u8
activations, MatMul/Gemm) and quantize_static (QDQ, calibrated on the same kind of images mien calibrates
on, per-channel weights), runs float and both int8 models on a labelled folder DIR/<label>/*, and prints
one JSON object: for each variant top-1 agreement with float, mean KL(float || int8), mean logit cosine,
max |logit diff|, accuracy. Preprocessing is the model's own (Pillow), as in tools/ort_reference.py.

Usage: python tools/ort_quantize_compare.py MODEL_DIR CALIBRATION_DIR VALIDATION_DIR
           [--calibration-count 256] [--validation-count N] [--work DIR] [--out FILE.json]
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                      quantize_static)
from PIL import Image, ImageOps

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def list_images(root):
    files = []
    for dirpath, _, names in os.walk(root):
        files += [os.path.join(dirpath, n) for n in names if os.path.splitext(n)[1].lower() in EXTENSIONS]
    return sorted(files)


def spread(files, count):
    """Evenly spread over the sorted list, as mien-convert picks them."""
    if count is None or count >= len(files):
        return files
    return [files[i * len(files) // count] for i in range(count)]


class Preprocessor:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "preprocessor_config.json")) as f:
            pre = json.load(f)
        self.size = (pre["size"]["width"], pre["size"]["height"])
        self.resample = pre["resample"]
        self.rescale = pre["rescale_factor"]
        self.mean = np.array(pre["image_mean"], dtype=np.float32)
        self.std = np.array(pre["image_std"], dtype=np.float32)

    def __call__(self, path):
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize(self.size, self.resample)
        x = (np.asarray(image, dtype=np.float64) * self.rescale).astype(np.float32)
        return ((x - self.mean) / self.std).transpose(2, 0, 1)[None]


class Reader(CalibrationDataReader):
    def __init__(self, files, preprocess, name):
        self.items = iter(files)
        self.preprocess = preprocess
        self.name = name

    def get_next(self):
        path = next(self.items, None)
        return None if path is None else {self.name: self.preprocess(path)}


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("calibration_dir")
    ap.add_argument("validation_dir")
    ap.add_argument("--calibration-count", type=int, default=256)
    ap.add_argument("--validation-count", type=int)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/mien/ort-quantized"))
    ap.add_argument("--out")
    args = ap.parse_args()

    model = os.path.join(args.model_dir, "model.onnx")
    preprocess = Preprocessor(args.model_dir)
    labels = sorted(d for d in os.listdir(args.validation_dir) if os.path.isdir(os.path.join(args.validation_dir, d)))
    with open(os.path.join(args.model_dir, "config.json")) as f:
        id2label = json.load(f)["id2label"]
    plan_labels = [id2label[str(i)] for i in range(len(id2label))]
    os.makedirs(args.work, exist_ok=True)
    name = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    dynamic = os.path.join(args.work, "dynamic.onnx")
    if not os.path.exists(dynamic):
        quantize_dynamic(model, dynamic + ".tmp", weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        os.replace(dynamic + ".tmp", dynamic)
    static = os.path.join(args.work, "static.onnx")
    if not os.path.exists(static):
        calibration = spread(list_images(args.calibration_dir), args.calibration_count)
        print(f"calibrating quantize_static on {len(calibration)} images", file=sys.stderr)
        quantize_static(model, static + ".tmp", Reader(calibration, preprocess, name), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"])
        os.replace(static + ".tmp", static)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {k: ort.InferenceSession(p, options, providers=["CPUExecutionProvider"])
                for k, p in [("float", model), ("quantize_dynamic", dynamic), ("quantize_static", static)]}
    items = []
    for label in labels:
        if label.lower() not in plan_labels:
            continue
        items += [(p, plan_labels.index(label.lower())) for p in list_images(os.path.join(args.validation_dir, label))]
    items.sort()
    items = spread(items, args.validation_count)
    stats = {k: {"agree": 0, "kl": 0.0, "cos": 0.0, "max": 0.0, "correct": 0} for k in sessions}
    for i, (path, truth) in enumerate(items):
        x = preprocess(path)
        ref = sessions["float"].run(None, {name: x})[0][0].astype(np.float64)
        p_ref = softmax(ref)
        for k, session in sessions.items():
            out = session.run(None, {name: x})[0][0].astype(np.float64)
            p = softmax(out)
            s = stats[k]
            s["agree"] += int(out.argmax() == ref.argmax())
            s["kl"] += float(np.sum(p_ref * (np.log(p_ref + 1e-30) - np.log(p + 1e-30))))
            s["cos"] += float(out @ ref / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-30))
            s["max"] = max(s["max"], float(np.abs(out - ref).max()))
            s["correct"] += int(out.argmax() == truth)
        if (i + 1) % 200 == 0:
            print(f"{i + 1}/{len(items)}", file=sys.stderr)
    n = len(items)
    result = {"images": n, "runtime": f"onnxruntime {ort.__version__}", "variants": {
        k: {"top1_agreement": s["agree"] / n, "mean_kl": s["kl"] / n, "logit_cosine": s["cos"] / n,
            "max_abs_logit_diff": s["max"], "accuracy": s["correct"] / n,
            "bytes": os.path.getsize({"float": model, "quantize_dynamic": dynamic, "quantize_static": static}[k])}
        for k, s in stats.items()}}
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
    print(text)


if __name__ == "__main__":
    main()
