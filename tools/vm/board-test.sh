#!/bin/bash
# Runs inside the Debian board (tools/vm/debian-board.sh boot), as root, from the payload archive beside
# the arm64 mien package and a small plan: installs the package like a user, then checks the service.
# Each step's output is framed by `MIEN-VM-BEGIN name` and `MIEN-VM-END name rc=N` on the console;
# tests/suite/debian_board.rs reads them. Steps run in order; a failed one does not stop the rest.
cd "$(dirname "$0")"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER= SYSTEMD_COLORS=0

step() {
  local name=$1; shift
  echo "MIEN-VM-BEGIN $name"
  "$@" 2>&1
  echo "MIEN-VM-END $name rc=$?"
}

main_pid() { systemctl show -p MainPID --value mien; }
restarts() { systemctl show -p NRestarts --value mien; }

# Waits up to $1 seconds for the service to be active (READY=1 sent) under a main process other than $2;
# prints that process id.
wait_active() {
  local i=0 pid
  while [ $i -lt $(($1 * 5)) ]; do
    pid=$(main_pid)
    if [ "$(systemctl is-active mien)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$2" ]; then
      echo "$pid"
      return 0
    fi
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}

# GET http://127.0.0.1:8080$1 (bash's /dev/tcp: the board has no curl); prints status line, headers, body.
http_get() {
  exec 3<>/dev/tcp/127.0.0.1/8080 || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n\r\n' "$1" >&3
  timeout 10 cat <&3 | tr -d '\r'
  exec 3<&-
}

frames_total() { http_get /metrics | sed -n 's/^mien_frames_total \([0-9]*\).*/\1/p'; }

install_package() {
  # The test's plan is the small one (the default ViT-S/14 takes seconds per frame under emulation),
  # and a short watchdog period keeps the test short; everything else is the package's.
  mkdir -p /opt/mien-test /etc/systemd/system/mien.service.d
  cp tiny-vit-int8.mien /opt/mien-test/
  chmod 755 /opt/mien-test && chmod 644 /opt/mien-test/tiny-vit-int8.mien
  printf '[Service]\nEnvironment=MIEN_PLAN=/opt/mien-test/tiny-vit-int8.mien\nWatchdogSec=8s\n' \
    >/etc/systemd/system/mien.service.d/board-test.conf
  ls -l /dev/video* || return 1
  apt-get install -y --no-install-recommends ./mien_*_arm64.deb || return 1
  dpkg-query -W -f='package ${Package} ${Version} ${Status}\n' mien
  echo "enabled $(systemctl is-enabled mien)"
}

service_runs() {
  local pid i before after
  pid=$(wait_active 240 0) || { echo "not active: $(systemctl is-active mien)"; journalctl -u mien -b --no-pager | tail -30; return 1; }
  echo "main_pid $pid"
  i=0
  until http_get /api/v1/health | grep -q '^HTTP/1.[01] 200'; do
    i=$((i + 1))
    [ $i -lt 240 ] || { http_get /api/v1/health; journalctl -u mien -b --no-pager | tail -30; return 1; }
    sleep 0.5
  done
  echo "health: $(http_get /api/v1/health | tail -1)"
  before=$(frames_total)
  sleep 5
  after=$(frames_total)
  echo "frames_total $before $after"
  echo "latest: $(http_get /api/v1/latest | tail -1)"
  echo "status: $(systemctl show -p StatusText --value mien)"
  journalctl -u mien -b --no-pager -o cat | tail -15
}

sandbox() {
  local pid uid gid groups path
  pid=$(main_pid)
  grep -E '^(Uid|Gid|Groups):' "/proc/$pid/status"
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
  gid=$(awk '/^Gid:/ {print $2}' "/proc/$pid/status")
  groups=$(awk '/^Groups:/ {$1 = ""; print}' "/proc/$pid/status" | xargs | tr ' ' ',')
  echo "video_gid $(getent group video | cut -d: -f3)"
  echo "user $(ps -o user= -p "$pid")"
  # Writes from inside the service's mount namespace, as its user and groups.
  for path in /etc/mien/probe /usr/probe /var/probe /root/probe /home/probe /opt/probe /var/lib/mien/probe; do
    if nsenter -t "$pid" -m -- setpriv --reuid="$uid" --regid="$gid" --groups="$groups" -- \
      sh -c "echo x > $path && rm $path" 2>/dev/null; then
      echo "write $path allowed"
    else
      echo "write $path denied"
    fi
  done
}

restart_after_kill() {
  local old new before
  old=$(main_pid)
  before=$(restarts)
  kill -9 "$old"
  new=$(wait_active 180 "$old") || { echo "not restarted"; journalctl -u mien -b --no-pager | tail -20; return 1; }
  echo "killed $old restarted $new restarts $before $(restarts)"
}

watchdog() {
  local old new before
  old=$(main_pid)
  before=$(restarts)
  kill -STOP "$old"
  new=$(wait_active 180 "$old") || { echo "not restarted"; journalctl -u mien -b --no-pager | tail -20; return 1; }
  echo "stopped $old restarted $new restarts $before $(restarts)"
  journalctl -u mien -b --no-pager -o cat | grep -i watchdog
}

security() {
  echo "verify:"
  systemd-analyze verify mien.service
  echo "verify rc=$?"
  systemd-analyze security --no-pager mien.service | grep -E '^(✗|→)' 
}

config() {
  mien config check /etc/mien/mien.toml
}

remove_and_purge() {
  apt-get remove -y mien >/dev/null || return 1
  sleep 1
  if pgrep -x mien >/dev/null; then echo "process left: $(pgrep -a -x mien)"; else echo "no mien process"; fi
  echo "after remove: config $([ -e /etc/mien/mien.toml ] && echo kept || echo gone), binary $([ -e /usr/bin/mien ] && echo kept || echo gone)"
  apt-get purge -y mien >/dev/null || return 1
  echo "after purge: config $([ -e /etc/mien ] && echo kept || echo gone), state $([ -e /var/lib/private/mien ] && echo kept || echo gone)"
}

step install install_package
step service service_runs
step sandbox sandbox
step kill9 restart_after_kill
step watchdog watchdog
step security security
step config config
step remove remove_and_purge
