#!/bin/sh
# Entry wrapper for EL7 hosts (systemd 219). systemd 219 predates the unified cgroup hierarchy
# that images/common/ecs-entrypoint.sh mounts, so give it the cgroup v1 layout it expects
# instead: a tmpfs on /sys/fs/cgroup (over Docker's read-only one) holding the named
# `systemd` hierarchy, which has no controllers and so can be mounted on cgroup v1 and v2
# hosts alike. With --cgroupns=private it is rooted at this container's own cgroup. systemd
# then mounts the controller hierarchies itself, which needs a cgroup v1 host like the
# project's machines. Not tried here: no EL7 base image can be fetched (shared/platform.md).
set -e
if ! grep -q " /sys/fs/cgroup/systemd cgroup rw," /proc/self/mounts; then
    mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/systemd
    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
fi
exec /sbin/init
