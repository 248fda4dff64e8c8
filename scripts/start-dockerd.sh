#!/usr/bin/env bash
# Starts dockerd when it is installed and not answering, and waits until `docker info` works.
#
# Quiet when the daemon already answers. Exit status: 0 = docker works; 3 = docker is not installed;
# 1 = it is installed but could not be started (the end of its log is printed). Used by `.ci/run` and by
# `make sandbox-image`; on a machine with systemd, `systemctl start docker` does the same job.
set -euo pipefail

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    echo "start-dockerd: docker is not installed (scripts/setup-system.sh installs docker.io)" >&2
    exit 3
fi
if docker info >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "start-dockerd: dockerd is not running and starting it needs root (sudo $0, or systemctl start docker)" >&2
    exit 1
fi

log=${DOCKYARD_DOCKERD_LOG:-/var/log/dockyard-dockerd.log}
if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "start-dockerd: starting dockerd (log: $log)" >&2
    # overlay2 on cgroupfs is what runs on this kind of machine (cgroup v1, no systemd). No bridge and no
    # iptables rules: the sandbox's containers run with --network none.
    setsid dockerd --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs \
        --iptables=false --ip-masq=false --bridge=none >>"$log" 2>&1 </dev/null &
    disown
fi
for _ in $(seq 1 150); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.2
done
echo "start-dockerd: dockerd did not answer within 30 s; the end of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
