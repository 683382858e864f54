#!/usr/bin/env python3
"""mien vs onnxruntime on the same ONNX model, same thread count: latency, load time, peak RSS.

By default it benchmarks the seed architecture (ViT-B/16, random weights, exported offline): it exports
the ONNX if missing, converts it with mien-convert, runs `mien bench --json`, runs onnxruntime in a
separate process (so peak RSS is its own), and prints both with the ratio.

With --rounds N (default 3) the two alternate N times (mien, onnxruntime, mien, ...): on a shared or
virtual machine the speed of the whole machine drifts by tens of percent over minutes, which a single
back-to-back pair mistakes for a difference between the two. Each figure is then the median over the
rounds (peak RSS: the largest), and the per-round p50s are printed too.

Examples:
  python tools/bench_vs_onnxruntime.py                      # seed architecture, 2 threads
  python tools/bench_vs_onnxruntime.py --onnx my/model.onnx --threads 4 --runs 30
  python tools/bench_vs_onnxruntime.py --rounds 7 --runs 10   # more alternations on a noisy machine
  python tools/bench_vs_onnxruntime.py --json               # machine-readable summary
  python tools/bench_vs_onnxruntime.py --rounds 3 --update-docs docs/BENCHMARKS.md   # the docs' x86 table
It names the CPU (model, AVX2 / AVX-512 / VNNI) and the kernels each side ran: mien's from `mien bench
--json` (its own tile kernels or tract's, per matmul), onnxruntime's MLAS, which picks its kernels by
CPUID at start-up (AVX-512F where present, else AVX2/FMA).
Build first: cargo build --release -p mien -p mien-convert (or pass --mien / --mien-convert).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import doc_section  # tools/doc_section.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("MIEN_CACHE", os.path.expanduser("~/.cache/mien"))


def ort_child(onnx_path, threads, runs, warmup):
    """Runs in a fresh process: load, warm up, time runs; prints JSON."""
    import numpy as np
    import onnxruntime as ort

    t0 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    inp = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    for _ in range(warmup):
        session.run(None, {inp.name: x})
    lat = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {inp.name: x})
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    pick = lambda p: lat[max(0, min(len(lat) - 1, int(-(-p * len(lat) // 100)) - 1))]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load_ms": load_ms, "latency_ms": {"p50": pick(50), "p90": pick(90), "p99": pick(99)},
                      "peak_rss_mb": rss_mb, "threads": threads, "version": ort.__version__}))




def cpu_info():
    """The CPU's model name and the vector extensions that decide both runtimes' kernels."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    wanted = [("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512F"), ("avx512_vnni", "AVX-512 VNNI"),
              ("avx_vnni", "AVX-VNNI")]
    return {"model": model, "features": [name for flag, name in wanted if flag in flags],
            "cores": os.cpu_count()}


def ort_kernels(cpu):
    return "MLAS " + ("AVX-512F" if "AVX-512F" in cpu["features"] else "AVX2/FMA" if "AVX2" in cpu["features"] else "SSE")


def markdown(summary, command):
    cpu, m, o = summary["cpu"], summary["mien"], summary["onnxruntime"]
    rounds = ", ".join(f"{r['mien']:.0f}/{r['onnxruntime']:.0f}" for r in summary["round_p50_ms"])
    kernels = ", ".join(f"{k} x{n}" for k, n in sorted(m.get("matmul_kernels", {}).items())) or "unknown"
    return "\n".join([
        f"Measured {summary['date']} with `{command}` on {cpu['model']} ({cpu['cores']} cores; "
        f"{', '.join(cpu['features']) or 'no AVX2'}): {summary['model_name']}, {summary['threads']} threads, "
        f"{summary['runs']} runs after {summary['warmup']} warm-up, median of {summary['rounds']} alternating rounds; "
        f"mien {summary['mien_binary']}, onnxruntime {o['version']}.",
        "",
        "| | mien | onnxruntime | mien / onnxruntime |",
        "| --- | ---: | ---: | ---: |",
        f"| latency p50 | {m['latency_ms']['p50']:.1f} ms | {o['latency_ms']['p50']:.1f} ms | {summary['latency_ratio_p50']:.2f}x |",
        f"| latency p90 | {m['latency_ms']['p90']:.1f} ms | {o['latency_ms']['p90']:.1f} ms | |",
        f"| load + optimize | {m['load_ms'] + m['optimize_ms']:.0f} ms | {o['load_ms']:.0f} ms | |",
        f"| peak RSS | {m['peak_rss_mb']:.0f} MB | {o['peak_rss_mb']:.0f} MB | {summary['rss_ratio']:.2f}x |",
        f"| matmul kernels | {kernels} | {ort_kernels(cpu)} | |",
        "",
        f"Per-round p50 (mien/onnxruntime): {rounds} ms.",
        "",
    ])


def plot(summary, path):
    """Per-round p50 of both runtimes (PNG); needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_vs_onnxruntime.py: matplotlib is not installed: no plot", file=sys.stderr)
        return False
    rounds = summary["round_p50_ms"]
    xs = range(1, len(rounds) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([x - 0.2 for x in xs], [r["mien"] for r in rounds], 0.4, label="mien", color="#2a7ab9")
    ax.bar([x + 0.2 for x in xs], [r["onnxruntime"] for r in rounds], 0.4,
           label=f"onnxruntime {summary['onnxruntime']['version']}", color="#888888")
    ax.set_xticks(list(xs))
    ax.set_xlabel("round (alternating)")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(f"{summary['cpu']['model']}, {summary['threads']} threads ({summary['date']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path + ".partial.png", dpi=110)
    os.rename(path + ".partial.png", path)
    return True


def update_docs(path, text):
    try:
        doc_section.replace_section(path, "bench_x86", text)
    except (OSError, ValueError) as e:
        sys.exit(f"bench_vs_onnxruntime.py: --update-docs {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", help="ONNX model (default: seed architecture exported to $MIEN_CACHE/seed-random)")
    ap.add_argument("--plan", help="mien plan (default: converted next to the ONNX)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of mien and onnxruntime (default 3)")
    ap.add_argument("--mien", default=os.path.join(ROOT, "target", "release", "mien"))
    ap.add_argument("--mien-convert", default=os.path.join(ROOT, "target", "release", "mien-convert"))
    ap.add_argument("--torch-python", default=sys.executable,
                    help="a Python with torch and transformers, to export the seed architecture (default: this one)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--update-docs", metavar="FILE", help="replace FILE's part between the bench_x86 markers")
    ap.add_argument("--plot", metavar="PNG", help="plot each round's p50 (needs matplotlib); linked from --update-docs")
    ap.add_argument("--ort-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_child:
        return ort_child(args.ort_child, args.threads, args.runs, args.warmup)

    onnx_path = args.onnx
    if onnx_path is None:
        seed_dir = os.path.join(CACHE, "seed-random")
        onnx_path = os.path.join(seed_dir, "model.onnx")
        if not os.path.exists(onnx_path):
            print(f"exporting the seed architecture to {seed_dir} ...", file=sys.stderr)
            subprocess.run([args.torch_python, os.path.join(ROOT, "tools", "export_hf.py"), "--random-config", "seed",
                            "-o", seed_dir], check=True, stdout=subprocess.DEVNULL)
    plan = args.plan or os.path.splitext(onnx_path)[0] + ".mien"
    for tool in (args.mien, args.mien_convert):
        if not os.path.exists(tool):
            sys.exit(f"bench_vs_onnxruntime.py: {tool} not found: cargo build --release -p mien -p mien-convert")
    if not os.path.exists(plan):
        print(f"converting {onnx_path} -> {plan} ...", file=sys.stderr)
        subprocess.run([args.mien_convert, onnx_path, "-o", plan], check=True, stdout=subprocess.DEVNULL)

    if args.rounds < 1 or args.runs < 1:
        sys.exit("bench_vs_onnxruntime.py: --rounds and --runs must be at least 1")

    def run_mien():
        return json.loads(subprocess.run([args.mien, "bench", plan, "--threads", str(args.threads), "--runs",
                                          str(args.runs), "--warmup", str(args.warmup), "--json"],
                                         check=True, capture_output=True, text=True).stdout)

    def run_ort():
        return json.loads(subprocess.run([sys.executable, __file__, "--ort-child", onnx_path, "--threads",
                                          str(args.threads), "--runs", str(args.runs), "--warmup",
                                          str(args.warmup)], check=True, capture_output=True, text=True).stdout)

    rounds = []
    for index in range(args.rounds):
        pair = {"mien": run_mien(), "onnxruntime": run_ort()}
        rounds.append(pair)
        print(f"round {index + 1}/{args.rounds}: p50 mien {pair['mien']['latency_ms']['p50']:.1f} ms, "
              f"onnxruntime {pair['onnxruntime']['latency_ms']['p50']:.1f} ms", file=sys.stderr)

    def median(values):
        values = sorted(values)
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    def combined(runs, load_fields):
        out = {field: median([r[field] for r in runs]) for field in load_fields}
        out["latency_ms"] = {p: median([r["latency_ms"][p] for r in runs]) for p in ("p50", "p90", "p99")}
        out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        return out

    mien = combined([r["mien"] for r in rounds], ("load_ms", "optimize_ms"))
    ort = combined([r["onnxruntime"] for r in rounds], ("load_ms",))
    ort["version"] = rounds[0]["onnxruntime"]["version"]
    ort["threads"] = args.threads
    mien["matmul_kernels"] = rounds[0]["mien"].get("matmul_kernels", {})
    cpu = cpu_info()
    ort["kernels"] = ort_kernels(cpu)
    summary = {
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu,
        "model": onnx_path, "threads": args.threads, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
        "model_name": "seed architecture (ViT-B/16, 224x224, random weights), f32" if args.onnx is None else os.path.basename(onnx_path),
        "mien_binary": os.path.relpath(args.mien, ROOT) if os.path.abspath(args.mien).startswith(ROOT) else args.mien,
        "mien": mien,
        "onnxruntime": ort,
        "latency_ratio_p50": mien["latency_ms"]["p50"] / ort["latency_ms"]["p50"],
        "rss_ratio": mien["peak_rss_mb"] / ort["peak_rss_mb"],
        "round_p50_ms": [{"mien": r["mien"]["latency_ms"]["p50"], "onnxruntime": r["onnxruntime"]["latency_ms"]["p50"]}
                         for r in rounds],
    }
    text = markdown(summary, "python tools/bench_vs_onnxruntime.py " + " ".join(sys.argv[1:]))
    if args.plot and plot(summary, args.plot) and args.update_docs:
        link = os.path.relpath(os.path.abspath(args.plot), os.path.dirname(os.path.abspath(args.update_docs)))
        text += f"\n![p50 latency per round, mien and onnxruntime]({link})\n"
    if args.update_docs:
        update_docs(args.update_docs, text)
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    m, o = summary["mien"], ort
    print(f"{cpu['model']} ({', '.join(cpu['features'])}); mien kernels: "
          + ", ".join(f"{k} x{n}" for k, n in sorted(m["matmul_kernels"].items())) + f"; onnxruntime: {o['kernels']}")
    print(f"model {onnx_path}, {args.threads} threads, {args.runs} runs, median of {args.rounds} alternating rounds")
    print(f"{'':14}{'mien':>12}{'onnxruntime':>14}{'ratio':>8}")
    print(f"{'latency p50':14}{m['latency_ms']['p50']:>10.1f}ms{o['latency_ms']['p50']:>12.1f}ms"
          f"{summary['latency_ratio_p50']:>8.2f}")
    print(f"{'latency p90':14}{m['latency_ms']['p90']:>10.1f}ms{o['latency_ms']['p90']:>12.1f}ms")
    print(f"{'load+optimize':14}{m['load_ms'] + m['optimize_ms']:>10.0f}ms{o['load_ms']:>12.0f}ms")
    print(f"{'peak RSS':14}{m['peak_rss_mb']:>10.0f}MB{o['peak_rss_mb']:>12.0f}MB{summary['rss_ratio']:>8.2f}")
    rounds_text = ", ".join(f"{r['mien']:.0f}/{r['onnxruntime']:.0f}" for r in summary["round_p50_ms"])
    print(f"{'rounds p50':14}{rounds_text} ms (mien/onnxruntime)")


if __name__ == "__main__":
    main()
