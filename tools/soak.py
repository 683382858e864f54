#!/usr/bin/env python3
"""A long `mien run` with faults, measured: memory, file descriptors and threads every 1,000 frames.

mien reads a looping MJPEG clip (a face moving across a 320x240 frame) in which every 10th frame is
corrupt, classifies with the tiny plan, serves its API and publishes to MQTT, while this tool
  - connects and drops event-stream (SSE) clients all the time (1 to 4 at once, each for 0.2 to 3 s),
  - restarts the MQTT broker (mosquitto) every --broker-restart seconds,
and samples the process's resident memory, open file descriptors and threads each time
mien_frames_total (from /metrics) passes a multiple of 1,000. At the end it checks the accounting (the
summary's frames and skipped against the clip: frames read = processed + skipped, exactly), fits the
memory's slope after warm-up, and writes a CSV and a PNG plot.

  python tools/soak.py --mien target/release/mien --frames 100000 --out docs/soak
Needs Pillow, numpy and mosquitto (.ci/run installs them).
"""
import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP_FRAMES = 100
CORRUPT_EVERY = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clip(path):
    """CLIP_FRAMES JPEG frames back to back; every CORRUPT_EVERY-th one cut in half (a corrupt frame)."""
    face = Image.open(os.path.join(ROOT, "tests/data/photos/astronaut.png")).convert("RGB")
    face = face.crop((96, 0, 352, 256)).resize((128, 128))
    with open(path, "wb") as f:
        for i in range(CLIP_FRAMES):
            frame = Image.new("RGB", (320, 240), (80, 90, 100))
            frame.paste(face, (10 + (i * 7) % 170, 60))
            buffer = io.BytesIO()
            frame.save(buffer, "JPEG", quality=80)
            data = buffer.getvalue()
            if (i + 1) % CORRUPT_EVERY == 0:
                # Start and end markers around bytes that are no JPEG segments (no 0xFF inside, so the
                # frame splitter still sees one frame): the decoder must refuse it, mien skip it.
                data = b"\xff\xd8" + bytes((i * 31 + k * 7) % 255 for k in range(2000)) + b"\xff\xd9"
            f.write(data)


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    rss_kb = int(status["VmRSS"].split()[0])
    threads = int(status["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb / 1024, fds, threads


def frames_total(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("mien_frames_total "):
                    return int(float(line.split()[1]))
    except OSError:
        return None
    return None


class Broker:
    def __init__(self, port, folder):
        self.port, self.folder, self.process, self.restarts = port, folder, None, 0
        self.config = os.path.join(folder, "mosquitto.conf")
        with open(self.config, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
            if os.geteuid() == 0:
                f.write("user root\n")

    def start(self):
        self.process = subprocess.Popen(["mosquitto", "-c", self.config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self):
        self.process.terminate()
        self.process.wait()
        self.start()
        self.restarts += 1

    def stop(self):
        self.process.terminate()
        self.process.wait()


def sse_churn(port, stop, counts, alive):
    """1 to 4 clients at a time, each reading the event stream for 0.2 to 3 s, then dropping it."""
    rng = random.Random(7)

    def client():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                until = time.time() + rng.uniform(0.2, 3.0)
                while time.time() < until and not stop.is_set():
                    if not s.recv(65536):
                        break
            counts["sse"] += 1
        except OSError as e:
            if not alive():
                return  # mien has finished its frames: refusals now are the end of the run
            counts["sse_errors"] += 1
            counts.setdefault("sse_error_kinds", {}).setdefault(type(e).__name__, 0)
            counts["sse_error_kinds"][type(e).__name__] += 1

    while not stop.is_set():
        threads = [threading.Thread(target=client) for _ in range(rng.randint(1, 4))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def slope_mb_per_100k(rows, warmup):
    points = [(r["frames"], r["rss_mb"]) for r in rows if r["frames"] >= warmup]
    if len(points) < 2:
        return float("nan"), float("nan")
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    slope = np.polyfit(x, y, 1)[0] * 100_000
    return slope, y.max() - y.min()


def plot(rows, path, title):
    """Three panels (RSS MB, fds, threads) against frames, drawn with Pillow."""
    width, height, margin = 900, 660, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 10), title, fill="black")
    panels = [("resident memory (MB)", "rss_mb"), ("open file descriptors", "fds"), ("threads", "threads")]
    panel_h = (height - 40) // 3
    xs = [r["frames"] for r in rows]
    for k, (label, key) in enumerate(panels):
        top = 30 + k * panel_h
        box = (margin, top + 10, width - 20, top + panel_h - 25)
        draw.rectangle(box, outline="gray")
        ys = [r[key] for r in rows]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-9:
            lo, hi = lo - 1, hi + 1
        pad = (hi - lo) * 0.1
        lo, hi = lo - pad, hi + pad
        def to_px(x, y):
            px = box[0] + (x - xs[0]) / max(xs[-1] - xs[0], 1) * (box[2] - box[0])
            py = box[3] - (y - lo) / (hi - lo) * (box[3] - box[1])
            return px, py
        draw.line([to_px(x, y) for x, y in zip(xs, ys)], fill=(200, 40, 40), width=2)
        draw.text((box[0] + 5, box[1] + 3), label, fill="black")
        draw.text((5, box[1]), f"{hi:.1f}", fill="black")
        draw.text((5, box[3] - 10), f"{lo:.1f}", fill="black")
        draw.text((box[0], box[3] + 3), f"{xs[0]}", fill="black")
        draw.text((box[2] - 60, box[3] + 3), f"{xs[-1]} frames", fill="black")
    image.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mien", default=os.path.join(ROOT, "target/release/mien"))
    parser.add_argument("--plan", default=os.path.join(ROOT, "models/tiny-vit/tiny-vit-int8.mien"))
    parser.add_argument("--frames", type=int, default=100_000, help="frames to process")
    parser.add_argument("--broker-restart", type=float, default=60.0, help="seconds between broker restarts")
    parser.add_argument("--warmup", type=int, default=10_000, help="frames before the slope is fitted")
    parser.add_argument("--out", default=os.path.join(ROOT, "target/soak"), help="folder for soak.csv and soak.png")
    args = parser.parse_args()
    for tool in ["mosquitto"]:
        if shutil.which(tool) is None:
            sys.exit(f"soak: {tool} is not installed")
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="mien-soak-")
    clip = os.path.join(work, "clip.mjpeg")
    make_clip(clip)
    http_port, mqtt_port = free_port(), free_port()
    broker = Broker(mqtt_port, work)
    broker.start()
    time.sleep(0.5)
    out_path = os.path.join(work, "out.jsonl")
    command = [args.mien, "run", "--source", clip, "--loop", "--plan", args.plan, "--threads", "1",
               "--max-frames", str(args.frames), "--json", "--quiet",
               "--serve", f"127.0.0.1:{http_port}", "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}", "--device-id", "soak"]
    with open(out_path, "w") as out, open(os.path.join(work, "err.txt"), "w") as err:
        mien = subprocess.Popen(command, stdout=out, stderr=err)
    stop = threading.Event()
    counts = {"sse": 0, "sse_errors": 0}
    while frames_total(http_port) is None:
        if mien.poll() is not None:
            sys.exit(f"soak: mien exited: {open(os.path.join(work, 'err.txt')).read()}")
        time.sleep(0.2)
    churn = threading.Thread(target=sse_churn, args=(http_port, stop, counts, lambda: mien.poll() is None), daemon=True)
    churn.start()
    rows, next_mark, last_restart, started = [], 0, time.time(), time.time()
    while mien.poll() is None:
        frames = frames_total(http_port)
        if frames is not None and frames >= next_mark:
            try:
                rss, fds, threads = sample(mien.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            rows.append({"frames": frames, "seconds": round(time.time() - started, 1), "rss_mb": round(rss, 2), "fds": fds, "threads": threads})
            next_mark = (frames // 1000 + 1) * 1000
        if time.time() - last_restart > args.broker_restart:
            broker.restart()
            last_restart = time.time()
        time.sleep(0.05)
    stop.set()
    rc = mien.wait()
    broker.stop()
    lines = [json.loads(l) for l in open(out_path) if l.startswith("{")]
    summary = next(l for l in lines if l.get("type") == "summary")
    skipped_notices = sum(1 for l in lines if l.get("type") == "notice" and l.get("event") == "skipped")
    # The clip is read whole, again and again: its frames read are processed + skipped.
    read = summary["frames"] + summary["skipped"]
    expected_skipped = (read // CLIP_FRAMES) * (CLIP_FRAMES // CORRUPT_EVERY) + (read % CLIP_FRAMES) // CORRUPT_EVERY
    slope, growth = slope_mb_per_100k(rows, args.warmup)
    with open(os.path.join(args.out, "soak.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    title = (f"mien run, {summary['frames']} frames (tiny plan, --serve with SSE churn, --mqtt with broker restarts, "
             f"1 in {CORRUPT_EVERY} frames corrupt): RSS slope {slope:+.2f} MB/100k frames after {args.warmup}")
    plot(rows, os.path.join(args.out, "soak.png"), title)
    report = {
        "exit_code": rc,
        "frames": summary["frames"],
        "skipped": summary["skipped"],
        "dropped": summary["dropped"],
        "skipped_notices": skipped_notices,
        "expected_skipped": expected_skipped,
        "accounting_exact": summary["skipped"] == expected_skipped == skipped_notices and summary["dropped"] == 0,
        "seconds": round(time.time() - started, 1),
        "fps": summary["fps"],
        "sse_clients": counts["sse"],
        "sse_errors": counts["sse_errors"],
        "sse_error_kinds": counts.get("sse_error_kinds", {}),
        "broker_restarts": broker.restarts,
        "rss_mb_first": rows[0]["rss_mb"],
        "rss_mb_after_warmup": min(r["rss_mb"] for r in rows if r["frames"] >= args.warmup),
        "rss_mb_last": rows[-1]["rss_mb"],
        "rss_slope_mb_per_100k_frames": round(slope, 3),
        "rss_growth_after_warmup_mb": round(growth, 2),
        "fds": [min(r["fds"] for r in rows), max(r["fds"] for r in rows)],
        "threads": [min(r["threads"] for r in rows), max(r["threads"] for r in rows)],
    }
    with open(os.path.join(args.out, "soak.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    ok = rc == 0 and report["accounting_exact"] and report["rss_growth_after_warmup_mb"] <= 1.0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
