#!/usr/bin/env python3
"""Reference inputs and outputs for a Hugging Face style ONNX export, for mien's tests.

For each image: the processor's pixel values (Pillow path: exif_transpose, convert("RGB"), resize with the
configured filter, rescale in float64, normalise in float32, NCHW) and onnxruntime's logits. Writes
OUT.f32 (all pixel values, raw little-endian float32, image after image) and OUT.json (files, shape,
logits).

Usage: python tools/ort_reference.py MODEL_DIR OUT IMAGE...
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    model_dir, out, images = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(os.path.join(model_dir, "preprocessor_config.json")) as f:
        pre = json.load(f)
    size = (pre["size"]["width"], pre["size"]["height"])
    mean = np.array(pre["image_mean"], dtype=np.float32)
    std = np.array(pre["image_std"], dtype=np.float32)
    session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits_all = []
    with open(out + ".f32.tmp", "wb") as raw:
        for path in images:
            image = ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize(size, pre["resample"])
            x = (np.asarray(image, dtype=np.float64) * pre["rescale_factor"]).astype(np.float32)
            x = ((x - mean) / std).transpose(2, 0, 1)[None]
            (logits,) = session.run(None, {name: x})
            logits_all.append([float(v) for v in logits[0]])
            x.astype("<f4").tofile(raw)
    os.replace(out + ".f32.tmp", out + ".f32")
    with open(out + ".json.tmp", "w") as f:
        json.dump({"files": images, "shape": [1, 3, size[1], size[0]], "logits": logits_all,
                   "runtime": f"onnxruntime {ort.__version__}"}, f)
    os.replace(out + ".json.tmp", out + ".json")


if __name__ == "__main__":
    main()
