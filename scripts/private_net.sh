#!/bin/sh
# Run a command in a fresh network namespace whose only interface is loopback, so that no
# server it starts can be reached from another machine:
#
#   sh scripts/private_net.sh COMMAND [ARG...]
#
# Why: Ray (2.60) binds its GCS, raylet, dashboard-agent and client-server ports on every
# interface whatever --node-ip-address says, and without authentication; inside this
# namespace "every interface" is 127.0.0.1. The namespace is made by `unshare` (through a user
# namespace, -r, when not root) and disappears when the last process in it ends: a server
# started inside is reachable only from processes inside. Exit 3 when it cannot be made.
set -eu
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
for tool in unshare ip; do
    command -v $tool >/dev/null 2>&1 || { echo "$tool is not installed" >&2; exit 3; }
done
if [ "$(id -u)" -eq 0 ]; then NS="unshare --net"; else NS="unshare --map-root-user --net"; fi
$NS ip link set lo up 2>/dev/null || { echo "cannot create a network namespace ($NS)" >&2; exit 3; }
exec $NS sh -c 'ip link set lo up && exec "$@"' private_net "$@"
