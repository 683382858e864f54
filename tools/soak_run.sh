#!/usr/bin/env bash
# Memory over a long `mien run`: a Y4M clip of N frames (a face moving back and forth, 320x240) through
# the pipeline, sampling the process's resident memory as it goes. A leak shows as RSS that keeps
# growing after the first frames; bounded queues and recycled buffers keep it flat.
#
#   tools/soak_run.sh [MIEN_BINARY] [FRAMES] [PLAN]
#   e.g. tools/soak_run.sh target/release/mien 3000 models/vit-s14-fer/vit-s14-fer-int8.mien
# Needs a Python with Pillow and numpy ($MIEN_PYTHON, else python3).
set -euo pipefail
bin=${1:-target/release/mien}; frames=${2:-2000}; plan=${3:-models/tiny-vit/tiny-vit.mien}
python=${MIEN_PYTHON:-python3}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$python" - "$work/clip.y4m" "$frames" <<'PY'
import sys
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
face = Image.open("tests/data/photos/astronaut.png").convert("RGB").crop((96, 0, 352, 256)).resize((128, 128))
def i420(img):
    a = np.asarray(img, dtype=np.float32)
    y = 16 + 65.481 * a[..., 0] / 255 + 128.553 * a[..., 1] / 255 + 24.966 * a[..., 2] / 255
    cb = 128 - 37.797 * a[..., 0] / 255 - 74.203 * a[..., 1] / 255 + 112.0 * a[..., 2] / 255
    cr = 128 + 112.0 * a[..., 0] / 255 - 93.786 * a[..., 1] / 255 - 18.214 * a[..., 2] / 255
    q = lambda p: np.clip(np.rint(p), 0, 255).astype(np.uint8)
    return q(y).tobytes() + q(cb[::2, ::2]).tobytes() + q(cr[::2, ::2]).tobytes()
with open(out, "wb") as f:
    f.write(b"YUV4MPEG2 W320 H240 F10:1 Ip A1:1 C420jpeg\n")
    cache = {}
    for i in range(n):
        x = 10 + (i * 7) % 170
        if x not in cache:
            frame = Image.new("RGB", (320, 240), (80, 90, 100))
            frame.paste(face, (x, 60))
            cache[x] = i420(frame)
        f.write(b"FRAME\n" + cache[x])
PY
"$bin" run --source "$work/clip.y4m" --plan "$plan" --json --threads 1 > "$work/out.jsonl" 2> "$work/err.txt" &
pid=$!
echo "seconds rss_mb frames"
start=$SECONDS
while kill -0 $pid 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null || true)
  [ -n "$rss" ] && echo "$((SECONDS - start)) $((rss / 1024)) $(grep -c '"type":"frame"' "$work/out.jsonl" || true)"
  sleep 5
done
wait $pid
tail -1 "$work/out.jsonl"
