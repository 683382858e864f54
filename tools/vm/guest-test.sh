#!/bin/sh
# Runs inside the VM (tools/vm/init). Each step prints its output between markers that the host test
# (tests/suite/vm_vivid.rs) parses:  MIEN-VM-BEGIN <step>  ...  MIEN-VM-END <step> rc=<exit code>
# $MIEN_STEPS (from the kernel command line) picks the groups: capture, pipeline.
export RUST_LOG=${RUST_LOG:-warn}
step() {
  name=$1; shift
  echo "MIEN-VM-BEGIN $name"
  "$@" 2>&1
  echo "MIEN-VM-END $name rc=$?"
}
wants() {
  case ",$MIEN_STEPS," in *",$1,"*) return 0 ;; esac
  return 1
}

if wants capture; then
  step devices ./mien devices --json
  step info ./mien info plan.mien --json
  # The same test pattern in three pixel formats: the host test compares their mean colours.
  step capture-yuyv ./mien capture --device vivid --format YUYV --size 640x360 --count 3 --classify plan.mien --threads 1 --json
  step capture-nv12 ./mien capture --device vivid --format NV12 --size 640x360 --count 3 --classify plan.mien --threads 1 --json
  step capture-rgb24 ./mien capture --device /dev/video0 --format RGB24 --size 640x360 --count 2 --json
  step capture-missing ./mien capture --device no-such-camera --count 1
fi

# vivid's loop: what is written to the HDMI output (video1) comes back on the HDMI capture input
# (video0, input 3) when both use the same timings, size and pixel format and loop_video is on.
loop_setup() {
  format=$1
  v4l2-ctl -d /dev/video0 --set-input 3 >/dev/null &&
    v4l2-ctl -d /dev/video1 --set-output 1 >/dev/null &&
    v4l2-ctl -d /dev/video0 --set-dv-bt-timings index=0 >/dev/null &&
    v4l2-ctl -d /dev/video1 --set-dv-bt-timings index=0 >/dev/null &&
    v4l2-ctl -d /dev/video0 --set-ctrl loop_video=1 &&
    v4l2-ctl -d /dev/video1 --set-fmt-video-out width=640,height=480,pixelformat=$format &&
    v4l2-ctl -d /dev/video0 --get-dv-timings | head -3 &&
    v4l2-ctl -d /dev/video1 --get-fmt-video-out
}
# Feeds a raw frame file to the output node in a loop, in the background.
feed() {
  v4l2-ctl -d /dev/video1 --stream-out-mmap --stream-from="$1" --stream-loop >/dev/null 2>&1 &
  feeder=$!
  sleep 1
}
pipeline_run() {
  format=$1 frames=$2
  loop_setup "$format" || { echo "loop setup failed"; return 1; }
  feed "$frames"
  ./mien run --source vivid --format "$format" --size 640x480 --plan plan.mien --detector detector.mien \
    --json --max-frames 4 --smoothing 1 --threads 1 --save-crops "crops-$format"
  rc=$?
  kill $feeder 2>/dev/null; wait $feeder 2>/dev/null
  return $rc
}
# The crops mien run saved, classified on their own: the host compares labels and probabilities.
classify_crops() {
  ./mien classify plan.mien "crops-$1"/*.png --json --threads 1
}
# Unload and reload vivid while mien runs: it must say the camera was lost, retry, and go on.
fault_frames() {
  n=$(grep -c '"type":"frame"' /tmp/fault.jsonl 2>/dev/null)
  echo "${n:-0}"
}
fault_run() {
  ./mien run --source vivid --format YUYV --size 640x480 --plan plan.mien --detector detector.mien \
    --json --max-frames 8 --threads 1 > /tmp/fault.jsonl 2> /tmp/fault.err &
  pid=$!
  i=0
  while [ "$(fault_frames)" -lt 2 ] && [ $i -lt 240 ]; do sleep 0.5; i=$((i + 1)); done
  echo "vivid unbind after $(fault_frames) frames"
  echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind
  i=0
  # mien closes the device when it sees it gone; only then can the module go.
  until rmmod vivid 2>/dev/null; do sleep 0.5; i=$((i + 1)); [ $i -lt 60 ] || { echo "rmmod vivid kept failing"; break; }; done
  echo "vivid unloaded: $(lsmod | grep -c '^vivid ') instances left"
  sleep 2
  insmod /lib/modules/vivid.ko n_devs=1 node_types=0x101 && echo "vivid reloaded"
  i=0
  while kill -0 $pid 2>/dev/null && [ $i -lt 480 ]; do sleep 0.5; i=$((i + 1)); done
  kill $pid 2>/dev/null
  wait $pid
  rc=$?
  cat /tmp/fault.jsonl
  sed 's/^/stderr: /' /tmp/fault.err
  return $rc
}

# The kiosk API inside the board: `mien run --serve` over vivid's loop, asked from inside the guest.
serve_run() {
  loop_setup YUYV || { echo "loop setup failed"; return 1; }
  feed faces.yuyv
  ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
  ./mien run --source vivid --format YUYV --size 640x480 --plan plan.mien --detector detector.mien \
    --threads 1 --serve 127.0.0.1:8080 --json > /tmp/serve.jsonl 2> /tmp/serve.err &
  pid=$!
  i=0
  until wget -q -O /tmp/latest.json http://127.0.0.1:8080/api/v1/latest 2>/dev/null &&
    grep -q '"faces":\[{' /tmp/latest.json; do
    sleep 0.5
    i=$((i + 1))
    [ $i -lt 480 ] || { echo "no frame with faces from /api/v1/latest"; break; }
    kill -0 $pid 2>/dev/null || { echo "mien exited"; break; }
  done
  echo "latest: $(cat /tmp/latest.json)"
  echo "health: $(wget -q -O - http://127.0.0.1:8080/api/v1/health)"
  kill $pid 2>/dev/null
  wait $pid
  rc=$?
  kill $feeder 2>/dev/null; wait $feeder 2>/dev/null
  head -1 /tmp/serve.jsonl
  sed 's/^/stderr: /' /tmp/serve.err
  return $rc
}

# With --exit-on-camera-loss, losing the camera ends the run with an error instead.
exit_on_loss_run() {
  ./mien run --source vivid --format YUYV --size 640x480 --plan plan.mien --detector detector.mien \
    --json --exit-on-camera-loss --threads 1 > /tmp/exit.jsonl 2> /tmp/exit.err &
  pid=$!
  i=0
  while [ "$(grep -c '"type":"frame"' /tmp/exit.jsonl 2>/dev/null)" != 1 ] && [ $i -lt 240 ]; do sleep 0.5; i=$((i + 1)); done
  echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind
  wait $pid
  rc=$?
  echo vivid.0 > /sys/bus/platform/drivers/vivid/bind
  cat /tmp/exit.jsonl /tmp/exit.err
  return $rc
}

# A longer run over vivid's test pattern with the module unbound, unloaded and reloaded every EVERY
# frames ($MIEN_SOAK is FRAMES,EVERY): before each reload, one MIEN-SOAK line with mien's frames so far,
# resident memory, file descriptors and threads (tools/soak_board.py reads them).
soak_sample() {
  echo "MIEN-SOAK frames=$3 rss_kb=$(sed -n 's/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p' /proc/$1/status)" \
    "fds=$(ls /proc/$1/fd | wc -l) threads=$(sed -n 's/^Threads:[^0-9]*//p' /proc/$1/status) reloads=$2"
}
soak_run() {
  total=${MIEN_SOAK%,*} every=${MIEN_SOAK#*,}
  ./mien run --source vivid --format YUYV --size 640x480 --plan plan.mien --detector detector.mien \
    --json --max-frames "$total" --threads 1 > /tmp/soak.jsonl 2> /tmp/soak.err &
  pid=$!
  reloads=0 next=$every
  while kill -0 $pid 2>/dev/null; do
    n=$(grep -c '"type":"frame"' /tmp/soak.jsonl 2>/dev/null)
    if [ "${n:-0}" -ge "$next" ] && [ "$next" -lt "$total" ]; then
      soak_sample $pid $reloads "$n"
      echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind
      i=0
      until rmmod vivid 2>/dev/null; do sleep 0.2; i=$((i + 1)); [ $i -lt 300 ] || { echo "rmmod vivid kept failing"; break; }; done
      insmod /lib/modules/vivid.ko n_devs=1 node_types=0x101 || echo "insmod vivid failed"
      reloads=$((reloads + 1)) next=$((next + every))
    fi
    sleep 0.2
  done
  wait $pid
  rc=$?
  echo "MIEN-SOAK-RELOADS $reloads"
  grep -h '"type":"summary"\|"event":"camera_lost"\|"event":"camera_restored"' /tmp/soak.jsonl
  sed 's/^/stderr: /' /tmp/soak.err | tail -20
  return $rc
}
if wants soak; then
  step soak soak_run
fi

if wants pipeline; then
  step run-yuyv pipeline_run YUYV faces.yuyv
  step classify-yuyv classify_crops YUYV
  step run-nv12 pipeline_run NV12 faces.nv12
  step classify-nv12 classify_crops NV12
  step serve serve_run
  step run-fault fault_run
  step run-exit-on-loss exit_on_loss_run
fi
