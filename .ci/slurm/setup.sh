#!/usr/bin/env bash
# Start a single-node SLURM cluster on 127.0.0.1 with real accounting, for CI and for trying the cluster path locally.
#
# What it does (idempotent: a second call finds everything up and returns at once):
#   1. apt-get installs slurm-wlm, slurmdbd, munge and mariadb-server if they are missing (Debian 12).
#   2. writes /etc/slurm/slurm.conf, slurmdbd.conf and gres.conf for this machine (its CPUs and memory).
#   3. starts munged (as the munge user), MariaDB, slurmdbd, slurmctld and slurmd (as root, without systemd),
#      registers the cluster in accounting, and waits until the node is idle.
# Every process it starts is recorded in $TMEXP_SLURM_DIR/started.pids; .ci/slurm/stop.sh stops exactly those.
#
# Must run as root. Environment:
#   TMEXP_SLURM_DIR   state, logs and pid files (default /tmp/tmexp-slurm)
#   TMEXP_SLURM_NO_INSTALL=1   never call apt-get (fail if a package is missing)
set -euo pipefail

STATE_DIR="${TMEXP_SLURM_DIR:-/tmp/tmexp-slurm}"
CLUSTER=tmexp
PARTITION=debug
PIDS_FILE="$STATE_DIR/started.pids"
DB_PASS=tmexp-ci-slurm   # the database listens on a unix socket only (no network); this is not a secret
NODE="$(hostname -s)"

log() { echo "[slurm-setup] $*"; }
die() {
    echo "[slurm-setup] ERROR: $*" >&2
    for f in "$STATE_DIR"/*.log; do
        [ -s "$f" ] && { echo "---- last lines of $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up within ${limit}s; see the logs in $STATE_DIR."
        sleep 0.2
    done
}
record_pid() { echo "$1 $2" >>"$PIDS_FILE"; }   # name pid

[ "$(id -u)" = 0 ] || die "setup.sh must run as root (it installs packages and starts system daemons); rerun it with sudo."

# ---- 1. packages ------------------------------------------------------------------------------------------------
need=()
for bin in slurmctld:slurm-wlm slurmd:slurm-wlm slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
    command -v "${bin%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${bin%%:*}" ] || need+=("${bin##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
    [ "${TMEXP_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${need[*]}; install them or unset TMEXP_SLURM_NO_INSTALL."
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    log "installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed; check the machine's package sources."
    # policy-rc.d-less containers would try to start the daemons through invoke-rc.d: forbid it, we start them ourselves.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
    fi
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd slurm-client munge mariadb-server \
        mariadb-client >"$STATE_DIR.apt.log" 2>&1 || { cat "$STATE_DIR.apt.log" >&2; die "apt-get install of the SLURM packages failed (log above)."; }
    [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/spool"
touch "$PIDS_FILE"

# ---- 2. configuration -----------------------------------------------------------------------------------------
CPUS="$(nproc --all)"
MEM_MB="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
REAL_MB=$((MEM_MB * 9 / 10))   # slurmd drains a node that reports less memory than configured: leave a margin
DEF_MEM_PER_CPU=$((REAL_MB / CPUS / 2))   # a job that asks for no memory must not reserve the whole node

mkdir -p /etc/slurm
CONFIG_CHANGED=0
write_if_changed() {   # path mode content: rewrite only on change so a running cluster keeps its config file
    local path=$1 mode=$2 content=$3
    if [ ! -f "$path" ] || [ "$(cat "$path")" != "$content" ]; then
        printf '%s\n' "$content" >"$path"
        CONFIG_CHANGED=1
    fi
    chmod "$mode" "$path"
}

write_if_changed /etc/slurm/slurm.conf 644 "# Written by tmexp .ci/slurm/setup.sh: a single node on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it may start again (default 120); keep CI's preemption test short.
AuthInfo=cred_expire=5
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups in containers: track processes through /proc and bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
MailProg=/bin/true
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

# GresTypes=gpu needs a gres.conf; this node has no GPU, so it declares none (gpus_per_node=0 is then accepted).
write_if_changed /etc/slurm/gres.conf 644 "# Written by tmexp .ci/slurm/setup.sh: no GPUs on this node."

write_if_changed /etc/slurm/slurmdbd.conf 600 "# Written by tmexp .ci/slurm/setup.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE_DIR/slurmdbd.pid
LogFile=$STATE_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db"

# ---- 3. daemons -----------------------------------------------------------------------------------------------
munge_up() { munge -n | unmunge; }
if munge_up >/dev/null 2>&1; then
    log "munged already running"
else
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged --force || die "munged failed to start."
    wait_for 10 munged munge_up
    record_pid munged "$(cat /run/munge/munged.pid)"
    log "munged started"
fi

db_up() { mariadb-admin --protocol=socket ping; }
if db_up >/dev/null 2>&1; then
    log "MariaDB already running"
else
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE_DIR/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE_DIR/mariadb-install.log."
    fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    # No network: slurmdbd talks to it over the default unix socket.
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
        --log-error="$STATE_DIR/mariadb.log" </dev/null >/dev/null 2>&1 &
    record_pid mariadbd $!
    wait_for 60 MariaDB db_up
    log "MariaDB started"
fi
mariadb --protocol=socket -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "could not create the accounting database in MariaDB."

dbd_up() { sacctmgr -n -P list cluster format=cluster; }
if pgrep -x slurmdbd >/dev/null 2>&1 && dbd_up >/dev/null 2>&1; then
    log "slurmdbd already running"
else
    /usr/sbin/slurmdbd || die "slurmdbd failed to start."
    wait_for 60 slurmdbd dbd_up
    record_pid slurmdbd "$(cat "$STATE_DIR/slurmdbd.pid")"
    log "slurmdbd started"
fi
# Register the cluster before slurmctld starts, so its first registration has somewhere to go.
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "could not register cluster $CLUSTER in accounting."
fi
if ! sacctmgr -n -P list account format=account | grep -qx "$CLUSTER"; then
    sacctmgr -i add account "$CLUSTER" cluster="$CLUSTER" description=tmexp organization=tmexp >/dev/null \
        || die "could not add account $CLUSTER in accounting."
fi
if ! sacctmgr -n -P list user format=user | grep -qx root; then
    sacctmgr -i add user root account="$CLUSTER" cluster="$CLUSTER" >/dev/null || die "could not add user root."
fi

if scontrol ping 2>/dev/null | grep -q "is UP"; then
    log "slurmctld already running"
    if [ "$CONFIG_CHANGED" = 1 ]; then
        scontrol reconfigure || die "slurmctld did not accept the new slurm.conf (scontrol reconfigure failed)."
        log "slurm.conf changed: slurmctld reconfigured"
    fi
else
    /usr/sbin/slurmctld || die "slurmctld failed to start."
    wait_for 30 slurmctld sh -c 'scontrol ping | grep -q "is UP"'
    record_pid slurmctld "$(cat "$STATE_DIR/slurmctld.pid")"
    log "slurmctld started"
fi

if [ -s "$STATE_DIR/slurmd.pid" ] && kill -0 "$(cat "$STATE_DIR/slurmd.pid")" 2>/dev/null; then
    log "slurmd already running"
else
    /usr/sbin/slurmd || die "slurmd failed to start."
    wait_for 10 slurmd test -s "$STATE_DIR/slurmd.pid"
    record_pid slurmd "$(cat "$STATE_DIR/slurmd.pid")"
    log "slurmd started"
fi

node_idle() { sinfo -h -N -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated)$'; }
if ! node_idle >/dev/null 2>&1; then
    # A node left down or drained by an earlier run comes back with RESUME.
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
fi
wait_for 30 "node $NODE (idle state)" node_idle
log "ready: node $NODE, $CPUS CPUs, ${REAL_MB} MB, partition $PARTITION, cluster $CLUSTER in accounting"
