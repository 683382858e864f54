#!/usr/bin/env python3
"""What `mien run --mqtt` costs: messages per second and CPU time per frame, with and without MQTT, at the
plan's full frame rate.

For each round: start a mosquitto on a free loopback port and a `mosquitto_sub -t '#'` counting what
arrives, then run `mien run --source PHOTOS --loop --threads 1 --json` for WINDOW seconds once with
`--mqtt` and once without (order alternating by round). Frames come from the summary line (after
SIGTERM), CPU time from /proc/PID/stat (user + system) just before the signal. Prints per-round figures
and medians.

    tools/bench_mqtt.py --mien target/release/mien
    tools/bench_mqtt.py --mien target/release/mien --plan models/vit-s14-fer/vit-s14-fer-int8.mien --json

Needs mosquitto and mosquitto-clients. Linux only (/proc). Only the standard library.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_mien(args, port, with_mqtt):
    command = [args.mien, "run", "--source", args.source, "--loop", "--plan", args.plan,
               "--threads", "1", "--json"]
    if with_mqtt:
        command += ["--mqtt", f"mqtt://127.0.0.1:{port}", "--device-id", "bench"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    time.sleep(args.window)
    cpu = cpu_seconds(process.pid)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    reader.join(timeout=10)
    summary = json.loads(lines[-1])
    assert summary["type"] == "summary", lines[-1]
    return {"frames": summary["frames"], "fps": summary["fps"], "cpu_s": cpu,
            "cpu_ms_per_frame": 1000 * cpu / max(1, summary["frames"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mien", default=os.path.join(ROOT, "target/release/mien"))
    parser.add_argument("--plan", default=os.path.join(ROOT, "models/tiny-vit/tiny-vit.mien"))
    parser.add_argument("--source", default=os.path.join(ROOT, "tests/data/photos"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ["mosquitto", "mosquitto_sub"]:
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            sys.exit(f"bench_mqtt: {tool} is not installed (apt-get install mosquitto mosquitto-clients)")
    if not os.access(args.mien, os.X_OK):
        sys.exit(f"bench_mqtt: --mien {args.mien}: not an executable (cargo build --release -p mien)")

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            port = free_port()
            config = os.path.join(tmp, "mosquitto.conf")
            with open(config, "w") as f:
                user = "user root\n" if os.getuid() == 0 else ""
                f.write(f"{user}persistence false\nlistener {port} 127.0.0.1\nallow_anonymous true\n")
            broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", config],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            counter = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", "mien/#"],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            received = [0]
            threading.Thread(target=lambda: [received.__setitem__(0, received[0] + 1) for _ in counter.stdout],
                             daemon=True).start()
            time.sleep(0.3)
            for with_mqtt in ([True, False] if r % 2 == 0 else [False, True]):
                before = received[0]
                run = run_mien(args, port, with_mqtt)
                time.sleep(0.5)
                run["mqtt"] = with_mqtt
                run["round"] = r + 1
                run["messages"] = received[0] - before
                run["messages_per_s"] = run["messages"] / args.window
                runs.append(run)
                if not args.json:
                    print(f"round {r + 1}, {'with' if with_mqtt else 'without'} MQTT: {run['fps']:.1f} fps, "
                          f"{run['cpu_ms_per_frame']:.2f} ms CPU per frame, {run['messages_per_s']:.1f} messages/s",
                          flush=True)
            counter.kill()
            broker.kill()
    summary = {}
    for with_mqtt in (False, True):
        mine = [r for r in runs if r["mqtt"] == with_mqtt]
        summary["with_mqtt" if with_mqtt else "without_mqtt"] = {
            "fps_median": statistics.median(r["fps"] for r in mine),
            "cpu_ms_per_frame_median": statistics.median(r["cpu_ms_per_frame"] for r in mine),
            "messages_per_s_median": statistics.median(r["messages_per_s"] for r in mine),
        }
    if args.json:
        print(json.dumps({"runs": runs, "summary": summary}, indent=1))
    else:
        w, wo = summary["with_mqtt"], summary["without_mqtt"]
        print(f"\nwithout MQTT: {wo['fps_median']:.1f} fps, {wo['cpu_ms_per_frame_median']:.2f} ms CPU/frame")
        print(f"with MQTT:    {w['fps_median']:.1f} fps, {w['cpu_ms_per_frame_median']:.2f} ms CPU/frame, "
              f"{w['messages_per_s_median']:.1f} messages/s")


if __name__ == "__main__":
    main()
