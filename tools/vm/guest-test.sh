#!/bin/sh
# Runs inside the VM (tools/vm/init). Each step prints its output between markers that the host test
# (tests/vm_vivid.rs) parses:  MIEN-VM-BEGIN <step>  ...  MIEN-VM-END <step> rc=<exit code>
export RUST_LOG=${RUST_LOG:-warn}
step() {
  name=$1; shift
  echo "MIEN-VM-BEGIN $name"
  "$@" 2>&1
  echo "MIEN-VM-END $name rc=$?"
}
step devices ./mien devices --json
step info ./mien info plan.mien --json
# The same test pattern in three pixel formats: the host test compares their mean colours.
step capture-yuyv ./mien capture --device vivid --format YUYV --size 640x360 --count 3 --classify plan.mien --threads 1 --json
step capture-nv12 ./mien capture --device vivid --format NV12 --size 640x360 --count 3 --classify plan.mien --threads 1 --json
step capture-rgb24 ./mien capture --device /dev/video0 --format RGB24 --size 640x360 --count 2 --json
step capture-missing ./mien capture --device no-such-camera --count 1
