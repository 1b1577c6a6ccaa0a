#!/bin/sh
# Start, check or stop the local Ray head that the Ray tests and bench/trial_throughput.py use.
#
#   sh scripts/ensure_ray.sh [start|status|stop]
#
# start (default) is idempotent: when a head already answers on 127.0.0.1:$LMALLOC_RAY_PORT it
# does nothing. Ray binds its GCS, raylet and agent ports on every interface whatever
# --node-ip-address says, so start refuses (exit 3) in a network namespace that has any address
# besides loopback: run it, and whatever connects to it, inside scripts/private_net.sh, e.g.
#   sh scripts/private_net.sh sh -c 'sh scripts/ensure_ray.sh start && CMD; sh scripts/ensure_ray.sh stop'
# (LMALLOC_RAY_PUBLIC=1 skips the check, for a head behind your own firewall: docs/scale-out.md).
# The head has $LMALLOC_RAY_CPUS CPUs (2: two trials of
# one CPU each run at once), no dashboard, no usage stats, a small object store (trials pass
# only small results through it), and keeps its sessions and logs in the project's .ray/
# folder instead of /tmp/ray. Connect with `lmalloc search --backend ray --address
# 127.0.0.1:$LMALLOC_RAY_PORT`. stop runs `ray stop`, which stops every Ray node this user
# started on this machine (Ray has no per-head stop).
set -eu
cd "$(dirname "$0")/.."
RAY=${VENV:-.venv}/bin/ray
PORT=${LMALLOC_RAY_PORT:-6390}
CPUS=${LMALLOC_RAY_CPUS:-2}
TMP=${LMALLOC_RAY_TMP:-$PWD/.ray}
ADDR=127.0.0.1:$PORT
export RAY_USAGE_STATS_ENABLED=0

if [ ! -x "$RAY" ]; then
    echo "ray is not installed in ${VENV:-.venv}: pip install -e '.[ray]'" >&2
    exit 3
fi

exposed() {  # the addresses of this network namespace other than loopback
    "${VENV:-.venv}/bin/python" -c '
import ipaddress, psutil
print(" ".join(sorted({a.address.split("%")[0] for nic in psutil.net_if_addrs().values()
      for a in nic if a.family.name in ("AF_INET", "AF_INET6")
      and not ipaddress.ip_address(a.address.split("%")[0]).is_loopback})))'
}

up() {
    "$RAY" status --address "$ADDR" >/dev/null 2>&1
}

case "${1:-start}" in
start)
    if up; then
        echo "ray head already running at $ADDR"
        exit 0
    fi
    if [ "${LMALLOC_RAY_PUBLIC:-0}" != 1 ]; then
        open=$(exposed)
        if [ -n "$open" ]; then
            echo "refusing to start a Ray head reachable from the network: Ray binds every" \
                "interface, and this network namespace has $open; run inside" \
                "scripts/private_net.sh (see its header), or set LMALLOC_RAY_PUBLIC=1 behind" \
                "your own firewall (docs/scale-out.md)" >&2
            exit 3
        fi
    fi
    mkdir -p "$TMP"
    "$RAY" start --head --node-ip-address 127.0.0.1 --port "$PORT" --num-cpus "$CPUS" \
        --include-dashboard false --dashboard-host 127.0.0.1 --disable-usage-stats --temp-dir "$TMP" \
        --object-store-memory 200000000 >"$TMP/start.log" 2>&1 || {
        cat "$TMP/start.log" >&2
        exit 1
    }
    up || { echo "ray head did not come up at $ADDR (see $TMP/start.log)" >&2; exit 1; }
    echo "ray head running at $ADDR ($CPUS CPUs, temp dir $TMP)"
    ;;
status)
    if up; then echo "ray head running at $ADDR"; else echo "no ray head at $ADDR"; exit 1; fi
    ;;
stop)
    "$RAY" stop >/dev/null 2>&1 || true
    echo "ray stopped"
    ;;
*)
    echo "usage: $0 [start|status|stop]" >&2
    exit 2
    ;;
esac
