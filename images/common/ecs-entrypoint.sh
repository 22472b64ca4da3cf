#!/bin/sh
# Give systemd a private cgroup2 hierarchy (works on cgroup v1 and v2 hosts), then boot.
set -e
if ! grep -q " /sys/fs/cgroup cgroup2 " /proc/self/mounts; then
    mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null \
        || mount -t cgroup2 cgroup2 /sys/fs/cgroup
fi
exec /sbin/init
