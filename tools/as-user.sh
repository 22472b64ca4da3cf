#!/bin/sh
# The tests as a user who is not root but is in the docker group, as on a CI runner or a workstation
# (this project's own machines run everything as root). Run as root: it makes a user pgrepl-runPID
# in the docker group and removes it again at the end, with its home (PGREPL_TEST_USER names an
# existing user instead, which is kept), exports the committed tree into a directory of that user's,
# as a checkout would, and runs tools/in-runner.sh there as that user: a virtual environment, then
# pytest with this script's arguments. The engine and the images must be there already (the
# engine's install and a base image's debootstrap need root; nothing else does).
#
#     sh tools/as-user.sh scenarios/test_replication.py --image debian-12 -n 2
set -eu
user=${PGREPL_TEST_USER:-pgrepl-run$$}  # one per run: two runs at once never share (or remove) one
made=
work=
child=
# Never `pkill -u`: a uid of this machine is also some container's user (the machines' ecs-user is
# 1000 too), and their processes are visible here: only the run's own process group is ended.
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [ -n "$child" ]; then
        kill -TERM -- "-$child" 2>/dev/null || :
        wait "$child" 2>/dev/null || :
    fi
    [ -z "$work" ] || rm -rf "$work"
    [ -z "$made" ] || userdel --remove "$user" 2>/dev/null || :
}
trap cleanup EXIT
trap 'exit 143' TERM INT
if [ "$(id -u)" != 0 ]; then
    echo "as-user.sh: run as root (it makes the user $user; the tests then run as that user)" >&2
    exit 2
fi
getent group docker >/dev/null || { echo "as-user.sh: no docker group (the engine's socket group)" >&2; exit 2; }
if ! id "$user" >/dev/null 2>&1; then
    useradd --create-home --groups docker --shell /bin/sh "$user"
    made=yes
fi
work=$(runuser -u "$user" -- mktemp -d)
git archive HEAD | runuser -u "$user" -- tar -x -C "$work"
cd "$work"
# runuser keeps the environment (pip's settings among it) but HOME, USER and LOGNAME; the user's own
# PATH, as a login would have it: root's (a virtual environment, pyenv under /root) is not theirs
# setsid: the run is a process group of its own (pid = pgid), which cleanup ends on an interruption
setsid runuser -u "$user" -- env -u VIRTUAL_ENV PATH=/usr/local/bin:/usr/bin:/bin sh tools/in-runner.sh "$@" &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
