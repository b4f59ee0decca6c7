#!/usr/bin/env bash
# A single-node SLURM cluster with accounting on this machine, for trying the SLURM profile
# and for the test suite (tests/test_slurm_profile.py). Needs root.
#
#   bash workflow/scripts/local_slurm.sh start   # install if needed, start, print the environment
#   eval "$(bash workflow/scripts/local_slurm.sh env)"   # SLURM_CONF etc. for sbatch/sacct/snakemake
#   bash workflow/scripts/local_slurm.sh stop    # stop every daemon this script started
#
# What runs (all as root, bound to localhost, everything under $STREAMKD_SLURM_DIR,
# default /tmp/streamkd-slurm): munged with its own key and socket, MariaDB on a private
# port and data directory, slurmdbd (Snakemake 7's SLURM executor asks sacct for job states,
# so accounting is required), slurmctld and slurmd. Partitions: `cpu` (default) and `gpu`
# (the same node, without GPUs: the names match workflow/profiles/slurm). Debian packages:
# slurm-wlm, slurmdbd, munge, mariadb-server (installed with apt-get when missing; their
# system services are not started). Ports: $STREAMKD_SLURM_PORT_BASE (default 16817) .. +3.
#
# The configuration is also linked at SLURM's default location ($STREAMKD_SLURM_DEFAULT_CONF,
# default /etc/slurm/slurm.conf) when nothing is there, and the link is removed on stop: the
# executor plugin of Snakemake 8+ runs each job's command with srun after removing every
# SLURM_* variable, SLURM_CONF included, so that srun reads the default location, as on the
# nodes of a real cluster. A slurm.conf of the machine's own is left alone (with a warning).
set -euo pipefail

DIR="${STREAMKD_SLURM_DIR:-/tmp/streamkd-slurm}"
PORT_BASE="${STREAMKD_SLURM_PORT_BASE:-16817}"
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
CLUSTER=streamkd
ACCOUNT=streamkd
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
DB_USER=slurm
DB_PASS=streamkd-local
DEFAULT_CONF="${STREAMKD_SLURM_DEFAULT_CONF:-/etc/slurm/slurm.conf}"

say() { echo "[local_slurm] $*" >&2; }
die() { say "error: $*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and runs the SLURM daemons)"; }

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    # Keep the packages' system services from starting: this script runs its own daemons.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod +x "$policy"
        created_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { [ $created_policy -eq 1 ] && rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
    [ $created_policy -eq 1 ] && rm -f "$policy"
    return 0
}

short_host() { hostname -s 2>/dev/null || hostname; }

write_env() {
    cat > "$DIR/env.sh" <<EOF
export SLURM_CONF=$DIR/etc/slurm.conf
export STREAMKD_SLURM_DIR=$DIR
export STREAMKD_SLURM_ACCOUNT=$ACCOUNT
EOF
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for <seconds> <description> <command...>
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$seconds"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "$what did not come up within ${seconds}s (logs: $DIR/log)"
}

configure() {
    mkdir -p "$DIR"/{etc,log,run,munge,state,spool,mysql}
    chmod 700 "$DIR/munge"
    local host cpus mem_mb
    host=$(short_host)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    [ -f "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$DIR/munge/munge.key"; }
    cat > "$DIR/etc/slurm.conf" <<EOF
# Written by workflow/scripts/local_slurm.sh: one node, accounting through slurmdbd.
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# With slurmdbd this names the munge socket used to talk to it.
AccountingStoragePass=$DIR/munge/munge.socket
MailProg=/bin/true
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
    cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    write_env
}

link_default_conf() {
    if [ -L "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" = "$DIR/etc/slurm.conf" ]; then
        return 0
    fi
    if [ -L "$DEFAULT_CONF" ] && [ ! -e "$DEFAULT_CONF" ]; then
        rm -f "$DEFAULT_CONF"  # a link left by a cluster whose folder is gone
    elif [ -e "$DEFAULT_CONF" ]; then
        say "warning: $DEFAULT_CONF is not this cluster's; srun inside the jobs of Snakemake 8+ will read it"
        return 0
    fi
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -s "$DIR/etc/slurm.conf" "$DEFAULT_CONF"
}

unlink_default_conf() {
    if [ -L "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" = "$DIR/etc/slurm.conf" ]; then
        rm -f "$DEFAULT_CONF"
    fi
    return 0
}

start_munge() {
    pid_alive "$DIR/run/munged.pid" && return 0
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
    wait_for 20 munged test -S "$DIR/munge/munge.socket"
}

mysql_client() { mysql --no-defaults --protocol=socket --socket="$DIR/run/mysqld.sock" -uroot "$@"; }

start_mariadb() {
    pid_alive "$DIR/run/mysqld.pid" && return 0
    if [ ! -d "$DIR/mysql/mysql" ]; then
        mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
            > "$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
    fi
    (mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DIR/run/mysqld.sock" \
        --pid-file="$DIR/run/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 > /dev/null 2>&1 &)
    wait_for 180 MariaDB mysql_client -e "SELECT 1"
    mysql_client <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm() {
    export SLURM_CONF="$DIR/etc/slurm.conf"
    if ! pid_alive "$DIR/run/slurmdbd.pid"; then
        # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
        slurmdbd
    fi
    # The first start creates the accounting tables, which takes a while on a busy machine.
    wait_for 300 slurmdbd bash -c "sacctmgr -i -Q add cluster $CLUSTER >/dev/null 2>&1;
        sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx $CLUSTER"
    sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" Description="streamkd tests" Organization=streamkd >/dev/null 2>&1 || true
    sacctmgr -i -Q add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
    sacctmgr -n -P list assoc user=root format=account 2>/dev/null | grep -qx "$ACCOUNT" \
        || die "could not register user root in account $ACCOUNT (see $DIR/log/slurmdbd.log)"
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        slurmctld -f "$SLURM_CONF"
        wait_for 180 slurmctld scontrol ping
    fi
    if ! pid_alive "$DIR/run/slurmd.pid"; then
        slurmd -f "$SLURM_CONF"
    fi
    wait_for 180 "the node" bash -c "sinfo -h -N -o '%T' | grep -qE '^(idle|mixed|allocated)'"
}

start() {
    need_root
    install_packages
    configure
    link_default_conf
    start_munge
    start_mariadb
    start_slurm
    say "single-node SLURM is up (partitions: cpu, gpu; account: $ACCOUNT; state in $DIR)"
    cat "$DIR/env.sh"
}

stop_one() {  # stop_one <name> <pid file>
    local pidfile=$2 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$1 ($pid) did not stop after SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

stop() {
    need_root
    export SLURM_CONF="$DIR/etc/slurm.conf"
    # Jobs first, so that no job outlives the cluster.
    if [ -f "$SLURM_CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --full --user=root >/dev/null 2>&1 || true
    fi
    stop_one slurmd "$DIR/run/slurmd.pid"
    stop_one slurmctld "$DIR/run/slurmctld.pid"
    stop_one slurmdbd "$DIR/run/slurmdbd.pid"
    stop_one mariadb "$DIR/run/mysqld.pid"
    stop_one munged "$DIR/run/munged.pid"
    unlink_default_conf
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) [ -f "$DIR/env.sh" ] && cat "$DIR/env.sh" || die "not configured: run '$0 start' first" ;;
    install) need_root; install_packages ;;
    *) echo "usage: $0 start|stop|env|install" >&2; exit 2 ;;
esac
