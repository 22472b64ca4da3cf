#!/bin/sh
# Preinstall PostgreSQL MAJOR from this Debian userland's own archive, arranged the way PGDG's
# RPMs (postgresql${MAJOR}, -server) install it on EL, for the images/el*-pgdg-layout images: the
# runbook's EL sections then run as written, except their package steps (no rpm/dnf/yum here,
# no PGDG repository reachable), which the harness skips as "preinstalled".
# What is reproduced, and from which file of PGDG's packaging: README.md next to this script.
set -eu
major=${1:?usage: pgdg-layout.sh MAJOR}
here=$(dirname "$0")/pgdg
export DEBIAN_FRONTEND=noninteractive
fill() { sed -e "s/@MAJOR@/$major/g" -e "s/@PREVMAJOR@/$((major - 1))/g" "$here/$1"; }

# The account first, as PGDG's %pre creates it (uid and gid 26), so that Debian's postinst finds it
# and keeps it. Debian's own gid 26 is the group tape, which an EL system has elsewhere: it goes.
groupdel tape
groupadd --system --gid 26 postgres
useradd --system --uid 26 --gid postgres --home-dir /var/lib/pgsql --no-create-home \
    --shell /bin/bash --comment "PostgreSQL Server" postgres

# Debian's packaging would create and start a cluster at once; PGDG's creates none.
mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
apt-get update
apt-get install -y --no-install-recommends "postgresql-$major"
apt-get clean
rm -rf /var/lib/apt/lists/*

# What is Debian's own and has no counterpart on EL goes: its units, its empty directories.
systemctl disable postgresql.service >/dev/null 2>&1 || true
for unit in postgresql.service postgresql@.service; do
    rm -f "/lib/systemd/system/$unit" "/usr/lib/systemd/system/$unit"
done
rm -f /usr/lib/tmpfiles.d/postgresql-common.conf /usr/lib/tmpfiles.d/postgresql.conf
rm -rf /etc/postgresql /var/lib/postgresql /var/log/postgresql

# /usr/pgsql-N/bin: the major's programs (PostgreSQL finds its share directory through the link's
# target) and PGDG's two scripts, setup also linked into /usr/bin.
install -d -m 755 "/usr/pgsql-$major" "/usr/pgsql-$major/bin"
for program in "/usr/lib/postgresql/$major/bin"/*; do
    ln -s "$program" "/usr/pgsql-$major/bin/${program##*/}"
done
for script in setup check-db-dir; do
    fill "postgresql-$script" > "/usr/pgsql-$major/bin/postgresql-$major-$script"
    chmod 755 "/usr/pgsql-$major/bin/postgresql-$major-$script"
done
ln -s "/usr/pgsql-$major/bin/postgresql-$major-setup" "/usr/bin/postgresql-$major-setup"

# The client programs on PATH through alternatives (priority MAJOR00), replacing Debian's pg_wrapper.
clients="psql clusterdb createdb createuser dropdb dropuser pg_basebackup pg_dump pg_dumpall pg_restore reindexdb vacuumdb"
[ "$major" -ge 17 ] && clients="$clients pg_combinebackup pg_createsubscriber pg_walsummary"
for program in $clients; do
    rm -f "/usr/bin/$program"
    update-alternatives --install "/usr/bin/$program" "pgsql-$program" "/usr/pgsql-$major/bin/$program" "${major}00" >/dev/null
done
# Every other program of Debian's postgresql-client-common wrapper is not on an EL host's PATH.
for link in /usr/bin/*; do
    if [ "$(readlink "$link")" = "../share/postgresql-common/pg_wrapper" ]; then rm -f "$link"; fi
done

# The unit, as PGDG's postgresql-N.service (PostgreSQL 15's for systemd 219: postmaster, timeouts 0).
if [ "$major" -ge 16 ]; then server=postgres timeout=infinity; else server=postmaster timeout=0; fi
[ -e "/usr/pgsql-$major/bin/$server" ] || ln -s postgres "/usr/pgsql-$major/bin/$server"
cat > "/usr/lib/systemd/system/postgresql-$major.service" <<UNIT
# PostgreSQL $major as PGDG's postgresql-$major.service runs it (reproduced by pgrepl-harness on a
# Debian userland). Changes belong in /etc/systemd/system/postgresql-$major.service.d/.
[Unit]
Description=PostgreSQL $major database server
Documentation=https://www.postgresql.org/docs/$major/static/
After=syslog.target
After=network-online.target

[Service]
Type=notify
User=postgres
Group=postgres
Environment=PGDATA=/var/lib/pgsql/$major/data/
OOMScoreAdjust=-1000
Environment=PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj
Environment=PG_OOM_ADJUST_VALUE=0
ExecStartPre=/usr/pgsql-$major/bin/postgresql-$major-check-db-dir \${PGDATA}
ExecStart=/usr/pgsql-$major/bin/$server -D \${PGDATA}
ExecReload=/bin/kill -HUP \$MAINPID
KillMode=mixed
KillSignal=SIGINT
Restart=on-failure
TimeoutSec=$timeout
TimeoutStartSec=$timeout
TimeoutStopSec=1h

[Install]
WantedBy=multi-user.target
UNIT

# /run/postgresql as PGDG's tmpfiles.d entry makes it (PostgreSQL 18's also sets the home's mode).
{
    echo "d /run/postgresql 0755 postgres postgres -"
    [ "$major" -ge 18 ] && echo "d /var/lib/pgsql 0750 postgres postgres -"
} > "/usr/lib/tmpfiles.d/postgresql-$major.conf"

# PGDG's postgresql.conf defaults after initdb: the logging settings its conf patch sets in the sample.
sample=/usr/share/postgresql/$major/postgresql.conf.sample
for setting in "log_destination = 'stderr'" "logging_collector = on" "log_directory = 'log'" \
    "log_filename = 'postgresql-%a.log'" "log_rotation_age = 1d" "log_rotation_size = 0" \
    "log_truncate_on_rotation = on" "log_line_prefix = '%m [%p] '"; do
    name=${setting%% =*}
    grep -q "^#$name = " "$sample"
    sed -i "s|^#$name = [^\t#]*|$setting|" "$sample"
done

# An EL login shell takes its locale from /etc/locale.conf (through /etc/profile.d/lang.sh), so
# postgresql-N-setup's initdb (run by a login shell of postgres) gets UTF-8, as on an ECS image.
echo "LANG=C.UTF-8" > /etc/locale.conf
echo '[ -f /etc/locale.conf ] && . /etc/locale.conf && export LANG' > /etc/profile.d/lang.sh

install -d -o postgres -g postgres -m 700 /var/lib/pgsql "/var/lib/pgsql/$major" \
    "/var/lib/pgsql/$major/data" "/var/lib/pgsql/$major/backups"
fill bash_profile > /var/lib/pgsql/.bash_profile
chown postgres:postgres /var/lib/pgsql/.bash_profile
chmod 700 /var/lib/pgsql/.bash_profile
