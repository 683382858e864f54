#!/usr/bin/env python3
"""mien against onnxruntime on ARM: guest instructions per inference on emulated Raspberry Pi cores.

Emulated time means nothing, but the instructions a run executes under qemu-user repeat exactly for the
same binary, input and thread count. For each core (Cortex-A76 = Pi 5, Cortex-A72 = Pi 4), model and
precision this counts one-thread inferences of

  - onnxruntime's own aarch64 wheel (PyPI) in Debian's arm64 Python, under qemu-user, and
  - mien's aarch64 binary (`mien bench PLAN --threads 1 --warmup 0`),

each as (count of 3 runs - count of 1 run) / 2, so loading, graph optimization and start-up cancel out.
Counts come from a QEMU plugin (../shared/tools/arm-icount/icount.c, or $ARM_ICOUNT_DIR).

What it sets up (cached under $MIEN_CACHE/bench-arm, default ~/.cache/mien; packages from Debian and
PyPI only): an arm64 root with Python 3.11 (apt-get download + dpkg -x with a private apt state, the host's
dpkg untouched), onnxruntime and numpy wheels for aarch64, and one sysroot per core whose /proc/cpuinfo
names an ARM core (onnxruntime crashes at import on the host's x86 cpuinfo, which qemu passes through).

Models (--models):
  tiny     models/tiny-vit (committed ONNX and plans): the smoke test, seconds per count
  default  vit-s14-fer, mien run's default (ONNX from tools/build_vit_s14_fer.py in
           $MIEN_CACHE/vit-s14-fer/model; int8: the committed plan)
  seed     the seed architecture, ViT-B/16 at 224x224, random weights (tools/export_hf.py --random-config
           seed, run with --torch-python); a count of 3 inferences takes 10-15 min of wall time

Precisions: f32; int8 (mien: its calibrated plan, --calibration-count 32 from --calibrate DIR, run on the
path `auto` picks for the core, or each of --int8-paths; onnxruntime: quantize_dynamic, int8 weights on
MatMul/Gemm); f16 (mien's f16 plan; onnxruntime: the model converted by onnxruntime.transformers.float16, inputs,
outputs and its default blocked ops plus Resize kept f32). f16 is counted on cores with FP16 arithmetic only (the A76).

Results are cached per count (keyed by the binary's or wheel's and the model's SHA-256), so an interrupted
run resumes where it stopped. Writes OUT/arm.json, OUT/arm.md (the table) and OUT/arm.png (the plot, when
matplotlib is installed); --update-docs FILE replaces the part of FILE between the markers
<!-- bench_arm:begin --> and <!-- bench_arm:end --> with the table and the plot.

Examples:
  python tools/bench_arm.py --setup-only                       # prepare the arm64 Python + onnxruntime
  python tools/bench_arm.py --models tiny --cpus cortex-a76 --mien target/aarch64-unknown-linux-gnu/debug/mien
  python tools/bench_arm.py --models seed default --jobs 2 --update-docs docs/BENCHMARKS.md \\
      --torch-python ~/.cache/mien/torch-venv/bin/python --calibrate ~/.cache/mien/fer2013/train
The mien binary defaults to the release build: cargo build --release --target aarch64-unknown-linux-gnu -p mien
"""
import argparse
import concurrent.futures
import datetime
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import doc_section  # tools/doc_section.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("MIEN_CACHE", os.path.expanduser("~/.cache/mien"))
ICOUNT_DIR = os.environ.get("ARM_ICOUNT_DIR", os.path.join(ROOT, "..", "shared", "tools", "arm-icount"))

ORT_VERSION = "1.32.0"
NUMPY_VERSION = "2.4.6"
# Debian bookworm's arm64 Python 3.11 and the libraries it and the wheels load.
PEER_PACKAGES = """python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib media-types libc6
libgcc-s1 libstdc++6 gcc-12-base zlib1g libffi8 libssl3 libexpat1 libbz2-1.0 liblzma5 libsqlite3-0 libzstd1
libcrypt1 libncursesw6 libtinfo6 libreadline8 libuuid1 libdb5.3 libgdbm6 libgdbm-compat4 libnsl2 libtirpc3
libtirpc-common libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0 libcom-err2
libmd0""".split()
# What a real core's /proc/cpuinfo says (implementer 0x41 = Arm; part 0xd0b = A76, 0xd08 = A72).
CORES = {
    "cortex-a76": {"part": "0xd0b", "board": "Raspberry Pi 5", "fp16": True,
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"},
    "cortex-a72": {"part": "0xd08", "board": "Raspberry Pi 4", "fp16": False,
                   "features": "fp asimd evtstrm crc32 cpuid"},
}

# What onnxruntime runs under qemu: one thread, a fixed input, N inferences after loading.
ORT_SCRIPT = """
import sys
import numpy as np
import onnxruntime as ort
path, runs = sys.argv[1], int(sys.argv[2])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
inp = session.get_inputs()[0]
shape = [d if isinstance(d, int) else 1 for d in inp.shape]
dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
x = np.random.default_rng(0).uniform(-1, 1, shape).astype(dtype)
for _ in range(runs):
    session.run(None, {inp.name: x})
"""


def fail(message):
    print(f"bench_arm: {message}", file=sys.stderr)
    sys.exit(1)


def log(message):
    print(f"bench_arm: {message}", file=sys.stderr, flush=True)


def sha256(path):
    """The file's SHA-256, read once per run for each version of the file (plans and models are
    hundreds of MB, and every core and precision keys its counts by them)."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _sha256(path, size, mtime_ns):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def replace_dir(tmp, final):
    """Moves a finished folder into place (a half-made one never has the final name)."""
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)


# --- the onnxruntime peer: arm64 Python with the wheels -------------------------------------------------

def peer(cache):
    """The arm64 root with Python 3.11 and onnxruntime + numpy on site/; made once."""
    key = digest(" ".join(PEER_PACKAGES), ORT_VERSION, NUMPY_VERSION)
    root = os.path.join(cache, "peer-" + key)
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    log(f"setting up Debian arm64 Python 3.11 with onnxruntime {ORT_VERSION} in {root}")
    work = root + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    debs, sysroot, site = (os.path.join(work, d) for d in ("debs", "sys", "site"))
    for d in (debs, sysroot, site):
        os.makedirs(d)
    apt_state = os.path.join(cache, "apt-arm64")
    opts = subprocess.run(["bash", "-c", 'source "$1"; vm_apt_opts arm64 "$2"', "_",
                           os.path.join(ROOT, "tools", "vm", "lib.sh"), apt_state],
                          check=True, capture_output=True, text=True).stdout.split("\n")
    opts = [o for o in opts if o]
    subprocess.run(["apt-get", *opts, "-qq", "update"], check=True)
    subprocess.run(["apt-get", *opts, "-qq", "download", *PEER_PACKAGES], check=True, cwd=debs)
    for deb in sorted(os.listdir(debs)):
        subprocess.run(["dpkg-deb", "-x", os.path.join(debs, deb), sysroot], check=True)
    wheels = os.path.join(work, "wheels")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--only-binary=:all:", "--platform", "manylinux_2_28_aarch64", "--platform",
                    "manylinux2014_aarch64", "--platform", "manylinux_2_17_aarch64", "--python-version", "3.11",
                    "--implementation", "cp", "--abi", "cp311", "-d", wheels,
                    f"onnxruntime=={ORT_VERSION}", f"numpy=={NUMPY_VERSION}"], check=True)
    for wheel in sorted(os.listdir(wheels)):
        with zipfile.ZipFile(os.path.join(wheels, wheel)) as z:
            z.extractall(site)
    # Wheels lose their file modes in a zip: shared libraries need no execute bit, but keep dirs readable.
    shutil.rmtree(debs)
    with open(os.path.join(work, "ort_runs.py"), "w") as f:
        f.write(ORT_SCRIPT)
    open(os.path.join(work, ".complete"), "w").close()
    replace_dir(work, root)
    return root


def core_sysroot(peer_root, cpu):
    """A root for one emulated core: the peer's files, plus a /proc/cpuinfo naming that core."""
    core = CORES[cpu]
    path = os.path.join(peer_root, "core-" + cpu)
    if os.path.exists(os.path.join(path, "proc", "cpuinfo")):
        return path
    os.makedirs(os.path.join(path, "proc"), exist_ok=True)
    for name in ("etc", "lib", "usr"):
        link = os.path.join(path, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..", "sys", name), link)
    with open(os.path.join(path, "proc", "cpuinfo.partial"), "w") as f:
        f.write(f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {core['features']}\nCPU implementer\t: 0x41\n"
                f"CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: {core['part']}\nCPU revision\t: 1\n\n")
    os.rename(os.path.join(path, "proc", "cpuinfo.partial"), os.path.join(path, "proc", "cpuinfo"))
    return path


def plugin(cache):
    """The instruction-counting QEMU plugin, compiled once from arm-icount's source."""
    source = os.path.join(ICOUNT_DIR, "icount.c")
    if not os.path.exists(source):
        fail(f"{source}: not found (set ARM_ICOUNT_DIR to the folder of arm-icount's icount.c)")
    path = os.path.join(cache, f"icount-{sha256(source)[:12]}.so")
    if not os.path.exists(path):
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", path + ".partial", source], check=True)
        os.rename(path + ".partial", path)
    return path


# --- models ----------------------------------------------------------------------------------------------

class Model:
    """An ONNX file and the mien plans of one model."""

    def __init__(self, name, onnx, plans, note):
        self.name, self.onnx, self.plans, self.note = name, onnx, plans, note


def convert(args, onnx, out, precision, calibrate):
    if os.path.exists(out):
        return out
    command = [args.mien_convert, onnx, "-o", out]
    if precision == "int8":
        if not calibrate:
            fail(f"{onnx}: an int8 plan needs calibration images: --calibrate DIR (e.g. FER2013's train folder)")
        command += ["--precision", "int8", "--calibrate", calibrate, "--calibration-count", "32"]
    elif precision == "f16":
        command += ["--precision", "f16"]
    log("converting: " + " ".join(command))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def model(args, name):
    work = os.path.join(args.cache, "models", name)
    os.makedirs(work, exist_ok=True)
    if name == "tiny":
        d = os.path.join(ROOT, "models", "tiny-vit")
        plans = {p: os.path.join(d, f) for p, f in
                 (("f32", "tiny-vit.mien"), ("int8", "tiny-vit-int8.mien"), ("f16", "tiny-vit-f16.mien"))}
        return Model(name, os.path.join(d, "model.onnx"), plans, "models/tiny-vit, committed plans")
    if name == "default":
        onnx = os.path.join(CACHE, "vit-s14-fer", "model", "model.onnx")
        if not os.path.exists(onnx):
            fail(f"{onnx}: not found; make it with tools/build_vit_s14_fer.py (the default model's ONNX)")
        plans = {"int8": os.path.join(ROOT, "models", "vit-s14-fer", "vit-s14-fer-int8.mien")}
        for p in ("f32", "f16"):
            if p in args.precisions:
                plans[p] = convert(args, onnx, os.path.join(work, f"vit-s14-fer-{p}.mien"), p, None)
        return Model(name, onnx, plans, "vit-s14-fer (DINOv2 ViT-S/14 + linear head, 224x224); int8: the committed plan")
    if name == "seed":
        # The same export tools/bench_vs_onnxruntime.py uses.
        onnx_dir = os.path.join(CACHE, "seed-random")
        onnx = os.path.join(onnx_dir, "model.onnx")
        if not os.path.exists(onnx):
            if not args.torch_python:
                fail("the seed architecture's ONNX is exported with torch: give --torch-python PYTHON "
                     "(a Python with tools/requirements.txt installed)")
            log("exporting the seed architecture (ViT-B/16, random weights)")
            subprocess.run([args.torch_python, os.path.join(ROOT, "tools", "export_hf.py"), "--random-config", "seed",
                            "-o", onnx_dir + ".partial"], check=True)
            replace_dir(onnx_dir + ".partial", onnx_dir)
        plans = {p: convert(args, onnx, os.path.join(work, f"seed-{p}.mien"), p, args.calibrate)
                 for p in args.precisions}
        return Model(name, onnx, plans, "seed architecture: ViT-B/16 at 224x224, random weights")
    fail(f"--models: unknown model {name!r} (expected tiny, default or seed)")


def ort_model(args, m, precision):
    """The ONNX onnxruntime runs for a precision, made on the host; None when it cannot be made."""
    if precision == "f32":
        return m.onnx
    out = os.path.join(args.cache, "models", m.name, f"ort-{precision}-{ORT_VERSION}-r2-{sha256(m.onnx)[:12]}.onnx")
    if os.path.exists(out):
        return out
    if precision == "int8":
        import logging
        from onnxruntime.quantization import QuantType, quantize_dynamic
        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process is for static quantization
        quantize_dynamic(m.onnx, out + ".partial.onnx", weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    else:
        # onnxruntime's own converter (onnxconverter-common's leaves Cast nodes onnxruntime refuses), with
        # Resize kept in f32 as well: onnxruntime's CPU build has no f16 Resize (DINOv2's position
        # embeddings go through one).
        import onnx
        from onnxruntime.transformers import float16
        converted = float16.convert_float_to_float16(onnx.load(m.onnx), keep_io_types=True,
                                                     op_block_list=float16.DEFAULT_OP_BLOCK_LIST + ["Resize"])
        onnx.save(converted, out + ".partial.onnx")
    os.rename(out + ".partial.onnx", out)
    return out


# --- counting --------------------------------------------------------------------------------------------

def count(args, job):
    """Guest instructions of one process; cached by everything that decides them."""
    path = os.path.join(args.cache, "counts", job["key"] + ".json")
    if os.path.exists(path) and not args.no_cache:
        with open(path) as f:
            return json.load(f)
    env = dict(os.environ)
    env.update(job.get("env", {}))
    started = datetime.datetime.now()
    done = subprocess.run(job["command"], env=env, capture_output=True, text=True)
    seconds = (datetime.datetime.now() - started).total_seconds()
    lines = [l for l in done.stderr.splitlines() if l.startswith("guest_instructions ")]
    if done.returncode != 0 or not lines:
        # The last line before the plugin's count is the program's own error.
        said = [l for l in done.stderr.strip().splitlines() if not l.startswith("guest_instructions ")] or ["no output"]
        # onnxruntime's message starts on its [ONNXRuntimeError] line; elsewhere the last line says it.
        reason = next((l for l in reversed(said) if "[ONNXRuntimeError]" in l), said[-1]).strip()
        log(f"{job['label']}: failed (exit {done.returncode}): {reason}")
        return {"error": f"exit {done.returncode}: {reason[:400]}"}
    result = {"instructions": int(lines[-1].split()[1]), "wall_s": round(seconds, 1), "stdout": done.stdout[-4000:]}
    if not args.no_cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".partial", "w") as f:
            json.dump(result, f)
        os.rename(path + ".partial", path)
    log(f"{job['label']}: {result['instructions']:,} instructions ({seconds:.0f} s)")
    return result


def plan_jobs(args, peer_root, plugin_path):
    """Every count to make: (cpu, model, precision, runtime, variant) x (1 run, 3 runs)."""
    mien_sha = sha256(args.mien)
    rows = []
    args.model_notes = {}
    for name in args.models:
        m = model(args, name)
        args.model_notes[name] = m.note
        for cpu in args.cpus:
            core = CORES[cpu]
            for precision in args.precisions:
                if precision == "f16" and not core["fp16"]:
                    continue
                ort_onnx = ort_model(args, m, precision)
                if ort_onnx:
                    sysroot = core_sysroot(peer_root, cpu)
                    command = lambda runs, c=cpu, s=sysroot, o=ort_onnx: [
                        "qemu-aarch64", "-cpu", c, "-L", s, "-plugin", plugin_path,
                        os.path.join(s, "usr", "bin", "python3.11"), os.path.join(peer_root, "ort_runs.py"), o, str(runs)]
                    rows.append({"cpu": cpu, "model": name, "precision": precision, "runtime": "onnxruntime",
                                 "variant": "quantize_dynamic" if precision == "int8" else "",
                                 "key": digest(cpu, "ort", ORT_VERSION, sha256(ort_onnx)), "command": command,
                                 "env": {"PYTHONPATH": os.path.join(peer_root, "site"), "PYTHONDONTWRITEBYTECODE": "1",
                                         "OMP_NUM_THREADS": "1"}})
                plan = m.plans.get(precision)
                if not plan:
                    continue
                variants = args.int8_paths if precision == "int8" else [""]
                for variant in variants:
                    flags = ["--int8-path", variant] if variant else []
                    command = lambda runs, c=cpu, p=plan, f=flags: [
                        "qemu-aarch64", "-cpu", c, "-L", "/usr/aarch64-linux-gnu", "-plugin", plugin_path,
                        args.mien, "bench", p, "--threads", "1", "--runs", str(runs), "--warmup", "0", "--json", *f]
                    # tract reads FP16 support from /proc/cpuinfo, which under qemu-user is the host's.
                    env = {"TRACT_CPU_ISA": "+fp16" if core["fp16"] else ""}
                    rows.append({"cpu": cpu, "model": name, "precision": precision, "runtime": "mien",
                                 "variant": variant or ("auto" if precision == "int8" else ""),
                                 "key": digest(cpu, "mien", mien_sha, sha256(plan), variant, env["TRACT_CPU_ISA"]),
                                 "command": command, "env": env})
    return rows


def run_counts(args, rows):
    jobs = []
    for row in rows:
        for runs in (1, 3):
            label = f"{row['cpu']} {row['model']} {row['precision']} {row['runtime']} {row['variant']} x{runs}".replace("  ", " ")
            jobs.append((row, runs, {"key": f"{row['key']}-{runs}", "command": row["command"](runs),
                                     "env": row["env"], "label": label}))
    todo = sum(1 for _, _, j in jobs if args.no_cache or not os.path.exists(os.path.join(args.cache, "counts", j["key"] + ".json")))
    log(f"{len(jobs)} counts, {todo} to run ({len(jobs) - todo} cached), {args.jobs} at a time")
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # Row by row, so an interrupted run leaves whole rows behind.
        futures = {pool.submit(count, args, job): (row, runs) for row, runs, job in jobs}
        for future in concurrent.futures.as_completed(futures):
            row, runs = futures[future]
            row[f"runs{runs}"] = future.result()
    results = []
    for row in rows:
        result = {k: row[k] for k in ("cpu", "model", "precision", "runtime", "variant")}
        error = row["runs1"].get("error") or row["runs3"].get("error")
        if error:
            result["error"] = error
            results.append(result)
            continue
        one, three = row["runs1"]["instructions"], row["runs3"]["instructions"]
        result.update(per_inference=(three - one) // 2, runs1=one, runs3=three)
        if row["runtime"] == "mien":
            try:
                bench = json.loads(row["runs3"]["stdout"])
                result["int8_path"] = (bench.get("int8_path") or {}).get("path")
                result["f16_path"] = (bench.get("f16_path") or {}).get("path")
                result["kernels"] = bench.get("matmul_kernels")
            except ValueError:
                pass
        results.append(result)
    return results


# --- reports ---------------------------------------------------------------------------------------------

def giga(n):
    return f"{n / 1e9:.3f} G" if n >= 1e8 else f"{n / 1e6:.2f} M"


def table(report):
    lines = ["| model | core | precision | onnxruntime | mien | mien / onnxruntime |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    results = report["results"]
    for name in report["models"]:
        for cpu in report["cpus"]:
            for precision in report["precisions"]:
                ort = [r for r in results if (r["model"], r["cpu"], r["precision"], r["runtime"]) == (name, cpu, precision, "onnxruntime")]
                for r in [r for r in results if (r["model"], r["cpu"], r["precision"], r["runtime"]) == (name, cpu, precision, "mien")] or [None]:
                    if r is None and not ort:
                        continue
                    label = precision
                    if r and r["precision"] == "int8":
                        label += f" ({r['variant']}" + (f": {r['int8_path']})" if r.get("int8_path") and r["variant"] == "auto" else ")")
                    if r and r["precision"] == "f16" and r.get("f16_path"):
                        label += f" ({r['f16_path']} arithmetic)"
                    o = ort[0].get("per_inference") if ort else None
                    m = r.get("per_inference") if r else None
                    ratio = f"{m / o:.2f}x" if o and m else ""
                    core = f"{cpu} ({CORES[cpu]['board']})"
                    shown = lambda n, row: giga(n) if n else ("failed" if row and row.get("error") else "n/a")
                    lines.append(f"| {name} | {core} | {label} | {shown(o, ort[0] if ort else None)} | {shown(m, r)} | {ratio} |")
    return "\n".join(lines)


def plot(report, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    results = report["results"]
    groups = []
    for name in report["models"]:
        for cpu in report["cpus"]:
            for precision in report["precisions"]:
                pick = lambda rt: [r["per_inference"] / 1e9 for r in results if "per_inference" in r
                                   if (r["model"], r["cpu"], r["precision"], r["runtime"]) == (name, cpu, precision, rt)
                                   and r["variant"] in ("", "auto", "quantize_dynamic")]
                ort, mien = pick("onnxruntime"), pick("mien")
                if ort or mien:
                    groups.append((f"{name}\n{cpu.replace('cortex-', '')} {precision}", ort[0] if ort else 0, mien[0] if mien else 0))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups)), 4))
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], [g[1] for g in groups], 0.4, label=f"onnxruntime {ORT_VERSION}", color="#888888")
    ax.bar([x + 0.2 for x in xs], [g[2] for g in groups], 0.4, label="mien", color="#2a7ab9")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_ylabel("guest instructions per inference (G)")
    ax.set_title(f"One inference, one thread, emulated ARM cores ({report['date']})", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path + ".partial.png", dpi=110)
    os.rename(path + ".partial.png", path)
    return True


def markdown(report, image):
    lines = [f"Measured {report['date']} with `{report['command']}`: onnxruntime {ORT_VERSION} (PyPI aarch64 wheel, "
             f"Debian bookworm's arm64 Python 3.11), mien {report['mien_version']} ({report['mien_binary']}, "
             f"SHA-256 {report['mien_sha256'][:12]}), qemu {report['qemu_version']}. Guest instructions per "
             "inference, one thread: (3 runs - 1 run) / 2.", ""]
    for name in report["models"]:
        lines.append(f"- {name}: {report['model_notes'][name]}")
    lines += ["", table(report), ""]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"- failed: {r['runtime']} {r['model']} {r['precision']} on {r['cpu']}: `{r['error']}`")
    if any("error" in r for r in report["results"]):
        lines.append("")
    if image:
        lines += [f"![mien and onnxruntime per inference on emulated ARM cores]({image})", ""]
    return "\n".join(lines)


def update_docs(path, text):
    try:
        doc_section.replace_section(path, "bench_arm", text)
    except (OSError, ValueError) as e:
        fail(f"--update-docs {e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", nargs="+", default=["cortex-a76", "cortex-a72"], choices=sorted(CORES))
    parser.add_argument("--models", nargs="+", default=["seed", "default"], choices=["tiny", "default", "seed"])
    parser.add_argument("--precisions", nargs="+", default=["f32", "int8", "f16"], choices=["f32", "int8", "f16"])
    parser.add_argument("--int8-paths", nargs="+", default=["auto"], choices=["auto", "integer", "dequantized"],
                        help="mien's int8 paths to count (default: the one `auto` picks on each core)")
    parser.add_argument("--mien", default=os.path.join(ROOT, "target", "aarch64-unknown-linux-gnu", "release", "mien"),
                        help="mien's aarch64 binary (default: the release build)")
    parser.add_argument("--mien-convert", default=shutil.which("mien-convert") or os.path.join(ROOT, "target", "release", "mien-convert"),
                        help="a host mien-convert, for plans the tool has to make")
    parser.add_argument("--calibrate", help="int8 calibration images for the seed model's plan (e.g. FER2013 train)")
    parser.add_argument("--torch-python", help="a Python with torch and transformers, to export the seed architecture")
    parser.add_argument("--jobs", type=int, default=1, help="counts run at a time (each uses one core)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"), help="where arm.json, arm.md, arm.png go")
    parser.add_argument("--update-docs", metavar="FILE", help="replace FILE's part between the bench_arm markers")
    parser.add_argument("--no-cache", action="store_true", help="count everything again; keep no counts")
    parser.add_argument("--setup-only", action="store_true", help="only prepare the arm64 Python and onnxruntime")
    args = parser.parse_args()
    args.cache = os.path.join(CACHE, "bench-arm")
    os.makedirs(args.cache, exist_ok=True)
    for tool in ("qemu-aarch64", "gcc", "apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed (tools/install-cross.sh installs qemu-user and the cross toolchains)")
    peer_root = peer(args.cache)
    if args.setup_only:
        print(peer_root)
        return
    if not os.path.exists(args.mien):
        fail(f"--mien {args.mien}: not found; build it: cargo build --release --target aarch64-unknown-linux-gnu -p mien")
    args.mien = os.path.abspath(args.mien)
    plugin_path = plugin(args.cache)
    rows = plan_jobs(args, peer_root, plugin_path)
    results = run_counts(args, rows)
    version = subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", args.mien, "--version"], capture_output=True, text=True).stdout.split()
    qemu = subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout.split()
    report = {
        "schema": "mien.bench_arm/1",
        "date": datetime.date.today().isoformat(),
        "command": ("python tools/bench_arm.py " + " ".join(sys.argv[1:])).replace(os.path.expanduser("~") + "/", "~/"),
        "cpus": args.cpus, "models": args.models, "precisions": args.precisions,
        "model_notes": args.model_notes,
        "onnxruntime_version": ORT_VERSION,
        "mien_version": version[-1] if version else "unknown",
        "mien_binary": os.path.relpath(args.mien, ROOT) if args.mien.startswith(ROOT) else args.mien,
        "mien_sha256": sha256(args.mien),
        "qemu_version": qemu[2] if len(qemu) > 2 else "unknown",
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "arm.json.partial"), "w") as f:
        json.dump(report, f, indent=1)
    os.rename(os.path.join(args.out, "arm.json.partial"), os.path.join(args.out, "arm.json"))
    image = os.path.join(args.out, "arm.png")
    has_plot = plot(report, image)
    link = None
    if has_plot:
        link = os.path.relpath(image, os.path.dirname(os.path.abspath(args.update_docs))) if args.update_docs else "arm.png"
    text = markdown(report, link)
    with open(os.path.join(args.out, "arm.md"), "w") as f:
        f.write(text)
    if args.update_docs:
        update_docs(args.update_docs, text)
    print(table(report))
    failed = [r for r in results if "error" in r]
    for r in failed:
        log(f"failed: {r['cpu']} {r['model']} {r['precision']} {r['runtime']}: {r['error']}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
