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
# A machine started from an image committed by the harness (this run's set-up state) lists here the
# directories that must move up from the image's layers before anything runs: overlayfs refuses to
# rename a directory of a lower layer (EXDEV), and PostgreSQL renames some (pg_replslot/<slot>).
if [ -f /etc/pgrepl-harness-copy-up ]; then
    while read -r dir; do
        if [ -d "$dir" ]; then
            cp -a "$dir" "$dir.copy-up" && rm -rf "$dir" && mv "$dir.copy-up" "$dir"
        fi
    done < /etc/pgrepl-harness-copy-up
    rm -f /etc/pgrepl-harness-copy-up
fi
exec /sbin/init
