#!/bin/sh
# Turn a bare OS image into what an ECS instance looks like to the runbook: systemd as PID 1,
# sshd, sudo, the usual admin tools, a login user `ecs-user` with passwordless sudo, and no
# PostgreSQL. One script for every image (apt, dnf or yum), run once by each Dockerfile.
set -eu
here=$(dirname "$0")

if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends \
        systemd systemd-sysv dbus openssh-server sudo procps iproute2 nftables \
        ca-certificates lsb-release gnupg wget less
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    ssh_unit=ssh.service
    # Ubuntu 24.04 starts sshd by socket activation; run it as a plain service, as Debian does.
    systemctl disable ssh.socket 2>/dev/null || true
else
    pm=$(command -v dnf || command -v yum)
    "$pm" -y install \
        systemd openssh-server openssh-clients sudo procps-ng iproute which findutils \
        hostname passwd ca-certificates less nftables
    "$pm" clean all
    rm -rf /var/cache/dnf /var/cache/yum
    ssh-keygen -A
    ssh_unit=sshd.service
fi

systemctl mask systemd-logind.service getty.target console-getty.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
systemctl enable "$ssh_unit"

useradd --create-home --shell /bin/bash ecs-user
printf '%s\n' 'Defaults:ecs-user !requiretty' 'ecs-user ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/ecs-user
chmod 0440 /etc/sudoers.d/ecs-user

install -m 0755 "$here/ecs-entrypoint.sh" /usr/local/sbin/ecs-entrypoint
