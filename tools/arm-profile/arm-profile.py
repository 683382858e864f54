#!/usr/bin/env python3
"""Guest instructions per function of an aarch64 binary run under qemu-user: where ARM time goes, exactly
and repeatably (emulated wall time is not a cost model: qemu makes SDOT and FP16 instructions expensive).

    tools/arm-profile/arm-profile.py [--cpu cortex-a76] [--baseline "ARGS"] [--divide N] [--top 40] \
        BINARY ARGS...

With --baseline, the binary also runs with the baseline's arguments and the difference is reported, so
start-up cancels out; e.g. one inference of a plan, loading excluded:

    tools/arm-profile/arm-profile.py --baseline "bench P --threads 1 --runs 1 --warmup 0" --divide 2 \
        target/aarch64-unknown-linux-gnu/debug/mien bench P --threads 1 --runs 3 --warmup 0

Functions come from the binary's symbol table (`aarch64-linux-gnu-nm`; a debug-profile or unstripped
build); instructions outside the binary (libc, libm, the loader) are one bucket. --by crate sums by the
first path segment of each symbol (tract_linalg, tract_core, ...). Needs qemu-user >= 7.2, gcc,
binutils-aarch64-linux-gnu (tools/install-cross.sh installs them).
"""
import argparse
import bisect
import collections
import os
import re
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# qemu-user loads a position-independent aarch64 executable at this address (guest_base 0).
PIE_BASE = 0x5500000000


def plugin_path():
    path = os.path.join(tempfile.gettempdir(), f"arm-profile-{os.getuid()}.so")
    source = os.path.join(HERE, "profile.c")
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(source):
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", path, source], check=True)
    return path


def run(cpu, binary, args):
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
        out = f.name
    env = dict(os.environ, ARM_PROFILE_OUT=out)
    cmd = ["qemu-aarch64", "-cpu", cpu, "-L", "/usr/aarch64-linux-gnu", "-plugin", plugin_path(), binary, *args]
    result = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"arm-profile: {' '.join(map(shlex.quote, cmd))} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    counts = {}
    with open(out) as f:
        for line in f:
            address, count = line.split()
            counts[int(address, 16)] = int(count)
    os.unlink(out)
    return counts


def symbols(binary, per_symbol=False):
    elf_type = subprocess.run(["aarch64-linux-gnu-readelf", "-h", binary], capture_output=True, text=True, check=True).stdout
    base = PIE_BASE if "DYN" in elf_type else 0
    nm = subprocess.run(["aarch64-linux-gnu-nm", "-n", "-C", "--defined-only", binary], capture_output=True, text=True, check=True)
    starts, names = [], []
    for line in nm.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            starts.append(int(parts[0], 16) + base)
            name = re.sub(r"::h[0-9a-f]{16}$", "", parts[2])
            names.append(f"{name} @{parts[0].lstrip('0')}" if per_symbol else name)
    if not starts:
        sys.exit(f"arm-profile: {binary} has no symbols (build it unstripped, e.g. the debug profile)")
    size = os.path.getsize(binary)
    return base, starts, names, size


def attribute(counts, base, starts, names, size):
    per = collections.Counter()
    for address, count in counts.items():
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or address >= base + size:
            per["[outside the binary: libc, libm, loader]"] += count
        else:
            per[names[i]] += count
    return per


def crate_of(name):
    name = name.lstrip("<").lstrip("&")
    if name.startswith("["):
        return name
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    return m.group(1) if m else f"[{name.split('_')[0]}...: assembly kernels and C]"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", default="cortex-a76")
    p.add_argument("--baseline", help="arguments of a second run whose counts are subtracted")
    p.add_argument("--divide", type=float, default=1.0, help="divide the counts (e.g. by the extra inferences)")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--by", choices=["function", "crate"], default="function")
    p.add_argument("--per-symbol", action="store_true", help="one line per symbol (monomorphization), with its address in the binary (for objdump)")
    p.add_argument("binary")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    base, starts, names, size = symbols(a.binary, a.per_symbol)
    per = attribute(run(a.cpu, a.binary, a.args), base, starts, names, size)
    if a.baseline:
        per.subtract(attribute(run(a.cpu, a.binary, shlex.split(a.baseline)), base, starts, names, size))
    if a.by == "crate":
        grouped = collections.Counter()
        for name, count in per.items():
            grouped[crate_of(name)] += count
        per = grouped
    total = sum(per.values())
    print(f"guest instructions: {total / a.divide:,.0f}" + (" (difference / %g)" % a.divide if a.baseline else ""))
    for name, count in per.most_common(a.top):
        print(f"{count / a.divide:16,.0f} {100 * count / total:6.2f}%  {name[:150]}")


if __name__ == "__main__":
    main()
