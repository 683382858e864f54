#!/usr/bin/env python3
"""The soak inside an emulated arm64 board: `mien run` on the kernel's vivid camera driver, with the
driver unbound, unloaded and reloaded every --reload-every frames.

Builds the board (tools/vm/build.sh: Debian's arm64 kernel with vivid, busybox, the aarch64 mien binary
and the tiny int8 plan), boots it under qemu-system-aarch64 (tools/vm/run.sh --steps soak) and reads the
guest's samples: before each reload, mien's frames so far, resident memory, file descriptors and threads
(from /proc inside the guest). Checks that every reload was seen as a camera loss and a restore, that the
run reached its frame count, and measures the memory's change after --warmup frames; writes board.csv,
board.json and board.png (the same panels as tools/soak.py's plot) into --out.

  python tools/soak_board.py --mien target/aarch64-unknown-linux-gnu/debug/mien --frames 600 --reload-every 50 --out docs/soak
Needs what tools/vm/build.sh needs (qemu-system-arm, cpio, kmod) and Pillow and numpy.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import soak  # tools/soak.py: the plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mien", default=os.path.join(ROOT, "target/aarch64-unknown-linux-gnu/debug/mien"),
                        help="mien's aarch64 binary")
    parser.add_argument("--plan", default=os.path.join(ROOT, "models/tiny-vit/tiny-vit-int8.mien"))
    parser.add_argument("--frames", type=int, default=600, help="frames to process")
    parser.add_argument("--reload-every", type=int, default=50, help="frames between reloads of vivid")
    parser.add_argument("--warmup", type=int, default=100, help="frames before the slope is fitted")
    parser.add_argument("--cpu", default="cortex-a76")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds the board may run")
    parser.add_argument("--out", default=os.path.join(ROOT, "target/soak"), help="folder for board.csv/json/png")
    args = parser.parse_args()
    if args.reload_every < 1 or args.frames <= args.reload_every:
        sys.exit("soak_board.py: --frames must be above --reload-every, which must be at least 1")
    if not os.access(args.mien, os.X_OK):
        sys.exit(f"soak_board.py: --mien {args.mien}: not an executable (cargo build --target aarch64-unknown-linux-gnu -p mien)")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mien-soak-board-") as work:
        board = os.path.join(work, "board")
        subprocess.run([os.path.join(ROOT, "tools/vm/build.sh"), "--arch", "arm64", "--binary", args.mien,
                        "--plan", args.plan, "--out", board], check=True, stdout=subprocess.DEVNULL)
        started = time.time()
        console = subprocess.run([os.path.join(ROOT, "tools/vm/run.sh"), "--dir", board, "--cpu", args.cpu,
                                  "--timeout", str(args.timeout), "--steps", "soak",
                                  "--soak", f"{args.frames},{args.reload_every}"],
                                 capture_output=True, text=True, errors="replace").stdout
        seconds = time.time() - started
    with open(os.path.join(args.out, "board-console.log"), "w") as f:
        f.write(console)
    step = re.search(r"MIEN-VM-BEGIN soak\n(.*?)MIEN-VM-END soak rc=(\d+)", console, re.S)
    if not step:
        sys.exit(f"soak_board.py: the board did not finish the soak step (console in {args.out}/board-console.log)")
    output, rc = step.group(1), int(step.group(2))
    rows = []
    for m in re.finditer(r"MIEN-SOAK frames=(\d+) rss_kb=(\d+) fds=(\d+) threads=(\d+) reloads=(\d+)", output):
        frames, rss_kb, fds, threads, reloads = map(int, m.groups())
        rows.append({"frames": frames, "rss_mb": round(rss_kb / 1024, 2), "fds": fds, "threads": threads, "reloads": reloads})
    lines = [json.loads(l) for l in output.splitlines() if l.startswith("{")]
    summary = next((l for l in lines if l.get("type") == "summary"), None)
    lost = sum(1 for l in lines if l.get("event") == "camera_lost")
    restored = sum(1 for l in lines if l.get("event") == "camera_restored")
    reloads = int(re.search(r"MIEN-SOAK-RELOADS (\d+)", output).group(1)) if "MIEN-SOAK-RELOADS" in output else 0
    if not rows or summary is None:
        sys.exit(f"soak_board.py: no samples or no summary (console in {args.out}/board-console.log)")
    after = [r for r in rows if r["frames"] >= args.warmup] or rows
    # A few dozen samples: the change from the first sample after warm-up to the last, and the spread.
    growth = after[-1]["rss_mb"] - after[0]["rss_mb"]
    spread = max(r["rss_mb"] for r in after) - min(r["rss_mb"] for r in after)
    with open(os.path.join(args.out, "board.csv"), "w") as f:
        f.write("frames,rss_mb,fds,threads,reloads\n")
        f.writelines(f"{r['frames']},{r['rss_mb']},{r['fds']},{r['threads']},{r['reloads']}\n" for r in rows)
    soak.plot(rows, os.path.join(args.out, "board.png"),
              f"mien run on vivid in an emulated {args.cpu} board, {summary['frames']} frames, vivid reloaded "
              f"{reloads} times: RSS growth {growth:+.2f} MB after {args.warmup} frames")
    report = {
        "exit_code": rc,
        "frames": summary["frames"],
        "skipped": summary.get("skipped"),
        "dropped": summary.get("dropped"),
        "camera_losses": summary.get("camera_losses"),
        "reloads": reloads,
        "camera_lost_notices": lost,
        "camera_restored_notices": restored,
        "every_reload_seen": reloads > 0 and lost == restored == reloads == summary.get("camera_losses"),
        "seconds": round(seconds, 1),
        "rss_mb_first": rows[0]["rss_mb"],
        "rss_mb_last": rows[-1]["rss_mb"],
        "rss_mb_after_warmup": after[0]["rss_mb"],
        "rss_growth_after_warmup_mb": round(growth, 2),
        "rss_spread_after_warmup_mb": round(spread, 2),
        "fds": [min(r["fds"] for r in rows), max(r["fds"] for r in rows)],
        "threads": [min(r["threads"] for r in rows), max(r["threads"] for r in rows)],
    }
    with open(os.path.join(args.out, "board.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    ok = rc == 0 and report["every_reload_seen"] and summary["frames"] == args.frames and growth <= 1.0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
