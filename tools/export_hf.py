#!/usr/bin/env python3
"""Export a Hugging Face image classifier to ONNX (opset 17) for mien-convert.

Writes OUT/model.onnx with config.json and preprocessor_config.json beside it, which mien-convert reads
for labels and preprocessing.

Examples:
  # The seed model from the hub (needs network access to huggingface.co):
  python tools/export_hf.py trpakov/vit-face-expression -o models/vit-face-expression
  # A fine-tune saved locally with save_pretrained():
  python tools/export_hf.py ./my-finetune -o exported/my-finetune
  # Offline: the seed's exact architecture, labels and preprocessing with random weights:
  python tools/export_hf.py --random-config seed -o /tmp/seed-random
  # Offline: the same graph with tiny dimensions (what the test fixtures use):
  python tools/export_hf.py --random-config tiny -o models/tiny-vit
"""
import argparse
import json
import os
import sys
import tempfile

# The seed model's labels, in its id2label order (alphabetical, not FER2013's order).
SEED_LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]

# vit-base-patch16-224-in21k as fine-tuned in trpakov/vit-face-expression.
SEED_ARCH = dict(image_size=224, patch_size=16, num_hidden_layers=12, num_attention_heads=12,
                 hidden_size=768, intermediate_size=3072, initializer_range=0.02)
# Same graph, small enough to commit (about 0.3 MB): fixtures and unit tests use it.
TINY_ARCH = dict(image_size=64, patch_size=8, num_hidden_layers=2, num_attention_heads=3,
                 hidden_size=48, intermediate_size=96, initializer_range=0.2)


def random_model(kind, seed):
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    arch = SEED_ARCH if kind == "seed" else TINY_ARCH
    config = ViTConfig(
        **arch,
        num_channels=3,
        hidden_act="gelu",  # exact (erf) GELU, as in the seed
        layer_norm_eps=1e-12,
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label={i: l for i, l in enumerate(SEED_LABELS)},
        label2id={l: str(i) for i, l in enumerate(SEED_LABELS)},  # strings, as in the seed's config
        attn_implementation="eager",
    )
    model = ViTForImageClassification(config)
    size = arch["image_size"]
    processor = ViTImageProcessor(
        do_resize=True, size={"height": size, "width": size}, resample=2,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    return model, processor


def pretrained_model(source):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(source, attn_implementation="eager")
    # The Pillow ("slow") processor is the reference the seed was trained with.
    processor = AutoImageProcessor.from_pretrained(source, use_fast=False)
    return model, processor


def export(model, processor, out_dir, opset):
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    model.eval()
    cfg = model.config
    size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
    dummy = torch.zeros(1, cfg.num_channels, size, size)
    os.makedirs(out_dir, exist_ok=True)
    # Write under temporary names, then rename: no partial export under the final names.
    fd, tmp_onnx = tempfile.mkstemp(suffix=".onnx.tmp", dir=out_dir)
    os.close(fd)
    try:
        with torch.no_grad():
            torch.onnx.export(
                Logits(model), (dummy,), tmp_onnx, input_names=["pixel_values"], output_names=["logits"],
                dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )
        with tempfile.TemporaryDirectory(dir=out_dir) as staging:
            model.config.save_pretrained(staging)
            processor.save_pretrained(staging)
            for name in ("config.json", "preprocessor_config.json"):
                os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
        os.chmod(tmp_onnx, 0o644)
        os.replace(tmp_onnx, os.path.join(out_dir, "model.onnx"))
    finally:
        if os.path.exists(tmp_onnx):
            os.remove(tmp_onnx)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="hub id (e.g. trpakov/vit-face-expression) or local folder")
    parser.add_argument("--random-config", choices=["seed", "tiny"],
                        help="export random weights with the seed's architecture and labels (offline)")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0, help="random seed for --random-config")
    args = parser.parse_args()
    if bool(args.source) == bool(args.random_config):
        parser.error("give either SOURCE or --random-config")
    try:
        if args.random_config:
            model, processor = random_model(args.random_config, args.seed)
        else:
            model, processor = pretrained_model(args.source)
    except OSError as e:
        sys.exit(f"export_hf.py: cannot load {args.source!r}: {str(e).splitlines()[0]}")
    export(model, processor, args.output, args.opset)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"output": os.path.join(args.output, "model.onnx"), "parameters": params,
                      "labels": [model.config.id2label[i] for i in range(len(model.config.id2label))]}))


if __name__ == "__main__":
    main()
