#!/bin/sh
# Entry wrapper: give systemd a cgroup hierarchy it can run on without --privileged, then boot.
# systemd 230 and newer (every image but EL7) get a private cgroup2 hierarchy, which works on
# cgroup v1 and v2 hosts and which forky's systemd requires. EL7's systemd 219 predates cgroup2:
# it gets a tmpfs holding the named `systemd` v1 hierarchy and mounts its controllers itself
# (needs a cgroup v1 host, like the project's machines; not tried here: no EL7 base image).
set -e
version=$(/usr/lib/systemd/systemd --version 2>/dev/null | awk 'NR == 1 { print $2 }')
if [ "${version:-999}" -ge 230 ]; then
    if ! grep -q " /sys/fs/cgroup cgroup2 " /proc/self/mounts; then
        mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null \
            || mount -t cgroup2 cgroup2 /sys/fs/cgroup
    fi
elif ! grep -q " /sys/fs/cgroup/systemd cgroup rw," /proc/self/mounts; then
    mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/systemd
    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
fi
exec /sbin/init
