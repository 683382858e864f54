#!/usr/bin/env python3
"""Reference outputs for the tiny ViT (models/tiny-vit), made with the Hugging Face processor and onnxruntime.

For every photo in tests/data/photos this writes, under tests/data/tiny-vit/:
  NAME.pixel_values.f32   what ViTImageProcessor (Pillow path) feeds the model: raw little-endian f32, NCHW
  expected.json           shapes, file names and onnxruntime's logits for each photo
The photos go through transformers' own `load_image` (EXIF transpose, convert("RGB")), exactly as a
Hugging Face pipeline would read them. Rust tests compare mien's preprocessing and plan against these.

Run: python tools/make_tiny_fixtures.py   (after tools/export_hf.py --random-config tiny -o models/tiny-vit)
"""
import hashlib
import json
import os

import numpy as np
import onnxruntime as ort
from transformers.image_utils import load_image
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "tiny-vit")
PHOTOS = os.path.join(ROOT, "tests", "data", "photos")
OUT = os.path.join(ROOT, "tests", "data", "tiny-vit")


def main():
    os.makedirs(OUT, exist_ok=True)
    processor = ViTImageProcessorPil.from_pretrained(MODEL_DIR)
    onnx_path = os.path.join(MODEL_DIR, "model.onnx")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    with open(onnx_path, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    images = []
    for name in sorted(os.listdir(PHOTOS)):
        if not name.lower().endswith((".png", ".jpg", ".jpeg")):
            continue
        image = load_image(os.path.join(PHOTOS, name))
        pixel_values = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
        (logits,) = session.run(["logits"], {"pixel_values": pixel_values})
        stem = os.path.splitext(name)[0]
        raw = f"{stem}.pixel_values.f32"
        pixel_values.astype("<f4").tofile(os.path.join(OUT, raw))
        images.append({
            "file": name,
            "pixel_values": raw,
            "shape": list(pixel_values.shape),
            "logits": [float(x) for x in logits[0]],
        })
    expected = {
        "model": "models/tiny-vit/model.onnx",
        "model_sha256": model_sha,
        "processor": "transformers ViTImageProcessorPil (Pillow path), load_image()",
        "runtime": f"onnxruntime {ort.__version__}",
        "images": images,
    }
    with open(os.path.join(OUT, "expected.json.tmp"), "w") as f:
        json.dump(expected, f, indent=1)
    os.replace(os.path.join(OUT, "expected.json.tmp"), os.path.join(OUT, "expected.json"))
    print(f"wrote {len(images)} fixtures to {OUT}")


if __name__ == "__main__":
    main()
