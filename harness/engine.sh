#!/usr/bin/env bash
# Make a Docker engine answer on a Debian machine (as root), and have what the harness uses:
# - no engine answers: apt-get install what is missing of docker.io (no dockerd), debootstrap
#   and shellcheck; start dockerd in the background (log: /var/log/pgrepl-dockerd.log) and wait up
#   to 60 s for `docker info`; if it does not answer, print the log's last 30 lines and exit 1.
# - an engine answers: only install debootstrap and shellcheck if missing.
# Used by .ci/run and by the harness itself (harness/hosts/docker.py: docker_client).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

LOG=${PGREPL_DOCKERD_LOG:-/var/log/pgrepl-dockerd.log}
# The lock lives where only root creates names (/run), not in a world-writable /tmp where anyone can
# plant a link by that name for root to follow; elsewhere (a scratch lock, not root) it is refused
# when it is a link or not a regular file, and opened without truncating (<>), so it never writes.
if [ "$(id -u)" = 0 ]; then
    default_lock=/run/pgrepl-engine.lock
else
    default_lock=${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/pgrepl-engine-$(id -u).lock
fi
LOCK=${PGREPL_ENGINE_LOCK:-$default_lock}
WAIT=${PGREPL_ENGINE_WAIT:-60}

say() { printf 'engine.sh: %s\n' "$*"; }
engine_answers() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

# One run at a time (parallel pytest workers may all find no engine). fd 9 is closed for every
# child that could outlive this script, or the lock would stay held.
if command -v flock >/dev/null; then
    if [ -L "$LOCK" ] || { [ -e "$LOCK" ] && [ ! -f "$LOCK" ]; }; then
        say "$LOCK is a symbolic link or not a regular file: refusing to open it as root's lock" \
            "(remove it, or set PGREPL_ENGINE_LOCK to another path)" >&2
        exit 1
    fi
    exec 9<>"$LOCK"
    flock -w 900 9 || { say "another engine.sh holds $LOCK; gave up after 900 s" >&2; exit 1; }
fi

# Every container runs systemd, which takes about 6 inotify instances (measured: 6 for one host);
# the kernel's default of 128 per user stops the 22nd host from booting ("not running"), and six
# workers keep up to about 60 alive. Raise the limits if they are lower (root only).
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/fs/inotify/max_user_instances ]; then
    for limit in max_user_instances=1024 max_user_watches=524288; do
        name=${limit%=*} want=${limit#*=}
        have=$(cat "/proc/sys/fs/inotify/$name")
        if [ "$have" -lt "$want" ]; then
            say "fs.inotify.$name $have -> $want (systemd in every container)"
            echo "$want" > "/proc/sys/fs/inotify/$name"
        fi
    done
fi

need=()
if engine_answers; then
    running=yes
else
    running=no
    { command -v dockerd && command -v docker; } >/dev/null || need+=(docker.io)
fi
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v shellcheck >/dev/null || need+=(shellcheck)

if [ ${#need[@]} -gt 0 ]; then
    say "apt-get install ${need[*]}"
    apt-get update -qq 9>&-
    apt-get install -y -qq "${need[@]}" >/dev/null 9>&-
fi

if [ "$running" = no ] && ! engine_answers; then
    say "starting dockerd (log: $LOG)"
    if command -v setsid >/dev/null; then
        # own session: a Ctrl-C of whoever ran this script does not reach dockerd
        setsid dockerd </dev/null >"$LOG" 2>&1 9>&- &
    else
        nohup dockerd </dev/null >"$LOG" 2>&1 9>&- &
    fi
    deadline=$((SECONDS + WAIT))
    until engine_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "dockerd did not answer within $WAIT s; the last lines of $LOG:" >&2
            tail -n 30 "$LOG" >&2
            exit 1
        fi
        sleep 0.5
    done
fi
docker version --format 'engine.sh: docker engine {{.Server.Version}} (API {{.Server.APIVersion}})'
