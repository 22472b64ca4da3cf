#!/bin/sh
# Entry wrapper: give systemd a cgroup hierarchy it can run on without --privileged, then boot.
# systemd 230 and newer (every image but EL7) get a private cgroup2 hierarchy, which works on
# cgroup v1 and v2 hosts and which forky's systemd requires. EL7's systemd 219 predates cgroup2:
# it gets a tmpfs holding the named `systemd` v1 hierarchy and mounts its controllers itself
# (needs a cgroup v1 host, like the project's machines; not tried here: no EL7 base image).
#
# The decision, by what the container sees at /sys/fs/cgroup (`--decide` prints it and exits; the
# unit tests feed it each kind of host through PGREPL_MOUNTS and PGREPL_SYSTEMD_VERSION):
#   keep       a writable cgroup2 is there already
#   cgroup2    none, or a cgroup v1 tree (a cgroup v1 host): mount a private cgroup2 over it
#   remount-rw a read-only cgroup2, what Docker mounts on a cgroup v2 host for a container that is not
#              privileged (systemd would stop with "Failed to create /init.scope ... Read-only file
#              system"); it is the container's own namespace already, so it is made writable (a second
#              cgroup2 mount there fails: "already mounted or mount point busy").
#   Both need CAP_SYS_ADMIN and, under AppArmor, a profile that allows mount: the harness starts the
#   machines with apparmor=unconfined where the engine has AppArmor.
#   v1-named   systemd older than 230 (EL7): the named systemd v1 hierarchy on a tmpfs (a v1 host only)
set -e

# A machine started from this run's set-up state at other addresses than the saved pair's
# (harness.runstate): PGREPL_READDRESS="OLD=NEW ..." is written over each saved address, as a whole
# word (10.0.0.2 is not in 10.0.0.25), in the files the harness listed when it saved them
# (pg_hba.conf, primary_conninfo, .pgpass), before anything reads them. Through placeholders, so an
# old address that is another's new one is not rewritten twice. `--readdress` does only this.
readdress() {
    list=${PGREPL_READDRESS_LIST:-/etc/pgrepl-harness-readdress}
    [ -n "${PGREPL_READDRESS:-}" ] && [ -f "$list" ] || return 0
    set --
    n=0
    for pair in $PGREPL_READDRESS; do
        old=$(printf '%s' "${pair%%=*}" | sed 's/\./\\./g')
        set -- "$@" -e "s/\\b$old\\b/@pgrepl-readdress-$n@/g"
        n=$((n + 1))
    done
    n=0
    for pair in $PGREPL_READDRESS; do
        set -- "$@" -e "s/@pgrepl-readdress-$n@/${pair#*=}/g"
        n=$((n + 1))
    done
    while read -r file; do
        if [ -f "$file" ]; then sed -i "$@" "$file"; fi
    done < "$list"
    rm -f "$list"  # once: a restarted machine's files hold the new addresses already
}
if [ "${1:-}" = "--readdress" ]; then
    readdress
    exit 0
fi

mounts=${PGREPL_MOUNTS:-/proc/self/mounts}
version=${PGREPL_SYSTEMD_VERSION:-$(/usr/lib/systemd/systemd --version 2>/dev/null | awk 'NR == 1 { print $2 }')}
cgroup_fs=$(awk '$2 == "/sys/fs/cgroup" { fs = $3; split($4, o, ","); mode = o[1] } END { print fs " " mode }' "$mounts")
if [ "${version:-999}" -lt 230 ]; then
    if grep -q " /sys/fs/cgroup/systemd cgroup rw," "$mounts"; then decision=keep; else decision=v1-named; fi
elif [ "$cgroup_fs" = "cgroup2 rw" ]; then
    decision=keep
elif [ "$cgroup_fs" = "cgroup2 ro" ]; then
    decision=remount-rw
else
    decision=cgroup2
fi
if [ "${1:-}" = "--decide" ]; then
    echo "$decision"
    exit 0
fi
case $decision in
    cgroup2)
        mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null \
            || mount -t cgroup2 cgroup2 /sys/fs/cgroup
        ;;
    remount-rw)
        mount -o remount,rw /sys/fs/cgroup
        ;;
    v1-named)
        mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
        mkdir -p /sys/fs/cgroup/systemd
        mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
        ;;
esac
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
readdress
exec /sbin/init
