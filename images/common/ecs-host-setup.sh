#!/bin/sh
# Turn a bare OS image into what an ECS instance looks like to the runbook: systemd as PID 1,
# sshd, sudo, the usual admin tools, a login user (the first argument) with passwordless sudo,
# and no PostgreSQL. One script for every image (apt, dnf or yum), run once by the Dockerfile.
set -eu
here=$(dirname "$0")
user=${1:?usage: ecs-host-setup.sh LOGIN_USER}

# CentOS 7 and 8 are end of life; their repositories moved to vault.centos.org (source
# defect 14): point the repository files there before any yum/dnf call.
for repo in /etc/yum.repos.d/CentOS-*.repo; do
    [ -f "$repo" ] || continue
    sed -i -e 's|^mirrorlist=|#mirrorlist=|' \
        -e 's|^#baseurl=http://mirror.centos.org|baseurl=http://vault.centos.org|' "$repo"
done

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

useradd --create-home --shell /bin/bash "$user"
printf '%s\n' "Defaults:$user !requiretty" "$user ALL=(ALL) NOPASSWD:ALL" > "/etc/sudoers.d/$user"
chmod 0440 "/etc/sudoers.d/$user"

install -m 0755 "$here/ecs-entrypoint.sh" /usr/local/sbin/ecs-entrypoint

# As cloud images do: no machine id in the image, so every machine started from it gets its own.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
