#!/usr/bin/env python3
"""What event-stream clients cost `mien run --serve`: frame rate and resident memory with 0, 10 and 100
clients on /api/v1/events.

For each client count: start `mien run --source PHOTOS --loop --serve 127.0.0.1:0 --json`, connect the
clients (one Python thread reads them all through `selectors`, discarding what comes), wait until the
server counts them, then read `mien_frames_total` from /metrics at the start and the end of a window of
WINDOW seconds: frames per second = difference / window. Resident memory (VmRSS) is read from /proc at
the end of the window, VmHWM (peak) too. Rounds alternate the client counts (this kind of machine changes
speed over minutes); the medians are printed.

    tools/bench_serve.py --mien target/release/mien --plan models/tiny-vit/tiny-vit.mien
    tools/bench_serve.py --mien target/release/mien --clients 0 10 100 --rounds 3 --window 20 --json

Only the standard library. Linux only (/proc).
"""

import argparse
import json
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise SystemExit(f"bench_serve: no {name} in /metrics")


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


class Clients:
    """N event-stream connections, drained by one thread."""

    def __init__(self, host, port, count):
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        self.bytes = 0
        self.stop = False
        for _ in range(count):
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            s.setblocking(False)
            self.selector.register(s, selectors.EVENT_READ)
            self.sockets.append(s)
        self.thread = threading.Thread(target=self.drain, daemon=True)
        self.thread.start()

    def drain(self):
        while not self.stop:
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    self.selector.unregister(key.fileobj)
                self.bytes += len(data)

    def close(self):
        self.stop = True
        self.thread.join()
        for s in self.sockets:
            s.close()


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            m = re.match(r"(VmRSS|VmHWM|Threads):\s+(\d+)", line)
            if m:
                fields[m.group(1)] = int(m.group(2))
    return fields


def one_run(args, clients):
    command = [args.mien, "run", "--source", args.source, "--loop", "--plan", args.plan,
               "--threads", str(args.threads), "--serve", "127.0.0.1:0", "--json",
               "--max-clients", str(max(16, clients + 8))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        started = json.loads(process.stdout.readline())
        url = started["url"]
        # Keep reading stdout, or a full pipe stalls the pipeline.
        threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
        host, port = url[len("http://"):].rstrip("/").rsplit(":", 1)
        while metric(get(url + "metrics"), "mien_frames_total") < 5:
            time.sleep(0.1)
        connected = Clients(host, int(port), clients) if clients else None
        deadline = time.time() + 30
        while metric(get(url + "metrics"), "mien_sse_clients") < clients:
            if time.time() > deadline:
                raise SystemExit(f"bench_serve: {clients} clients did not all connect")
            time.sleep(0.1)
        time.sleep(args.warmup)
        start_frames, start = metric(get(url + "metrics"), "mien_frames_total"), time.time()
        time.sleep(args.window)
        text = get(url + "metrics")
        end_frames, end = metric(text, "mien_frames_total"), time.time()
        status = proc_status(process.pid)
        lagged = metric(text, "mien_sse_lagged_total")
        received = connected.bytes if connected else 0
        if connected:
            connected.close()
        return {
            "clients": clients,
            "fps": (end_frames - start_frames) / (end - start),
            "rss_mib": status["VmRSS"] / 1024,
            "peak_rss_mib": status["VmHWM"] / 1024,
            "threads": status["Threads"],
            "lagged": lagged,
            "client_mib": received / 2**20,
        }
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mien", default=os.path.join(ROOT, "target/release/mien"))
    parser.add_argument("--plan", default=os.path.join(ROOT, "models/tiny-vit/tiny-vit.mien"))
    parser.add_argument("--source", default=os.path.join(ROOT, "tests/data/photos"))
    parser.add_argument("--threads", type=int, default=1, help="mien's inference threads (default 1: a core left for the clients)")
    parser.add_argument("--clients", type=int, nargs="+", default=[0, 10, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the clients connect")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not os.access(args.mien, os.X_OK):
        sys.exit(f"bench_serve: --mien {args.mien}: not an executable (cargo build --release -p mien)")

    runs = []
    for r in range(args.rounds):
        for clients in args.clients:
            run = one_run(args, clients)
            run["round"] = r + 1
            runs.append(run)
            if not args.json:
                print(f"round {r + 1}: {clients:3d} clients: {run['fps']:7.1f} fps, RSS {run['rss_mib']:.1f} MiB "
                      f"(peak {run['peak_rss_mib']:.1f}), {run['threads']} threads, {run['lagged']:.0f} lagged",
                      flush=True)
    summary = []
    base = None
    for clients in args.clients:
        mine = [r for r in runs if r["clients"] == clients]
        fps = statistics.median(r["fps"] for r in mine)
        base = fps if clients == args.clients[0] else base
        summary.append({
            "clients": clients,
            "fps_median": fps,
            "fps_range": [min(r["fps"] for r in mine), max(r["fps"] for r in mine)],
            "fps_vs_first": fps / base if base else None,
            "rss_mib_median": statistics.median(r["rss_mib"] for r in mine),
            "peak_rss_mib_max": max(r["peak_rss_mib"] for r in mine),
        })
    if args.json:
        print(json.dumps({"mien": args.mien, "plan": args.plan, "threads": args.threads, "runs": runs,
                          "summary": summary}, indent=1))
    else:
        print("\nclients  fps (median, min-max)     vs 0 clients  RSS MiB")
        for s in summary:
            print(f"{s['clients']:7d}  {s['fps_median']:6.1f} ({s['fps_range'][0]:.1f}-{s['fps_range'][1]:.1f})"
                  f"      {s['fps_vs_first']:.3f}        {s['rss_mib_median']:.1f}")


if __name__ == "__main__":
    main()
