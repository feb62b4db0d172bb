#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for testing the Snakemake SLURM profile.
#
#   tests/slurm/cluster.sh up   DIR   # munged, mariadbd, slurmdbd, slurmctld, slurmd; prints SLURM_CONF
#   tests/slurm/cluster.sh down DIR   # stop every daemon started by `up` and delete DIR
#
# Debian 12 packages (as root): slurm-wlm slurmctld slurmd slurmdbd slurm-client munge
# mariadb-server (`make slurm-packages`). Everything lives in DIR: configs, state, logs, the
# MariaDB data directory and sockets; nothing under /etc is changed. Accounting goes through
# slurmdbd into MariaDB so that `sacct` lists every job. The node has the machine's cores and
# 3/4 of its memory; no cgroups (proctrack/linuxproc, task/none), so it runs in a container.
set -euo pipefail

cmd=${1:?usage: cluster.sh up|down DIR}
DIR=$(realpath -m "${2:?usage: cluster.sh up|down DIR}")
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 3 / 4 / 1024 ))

stop_pidfile() {
  local f=$1
  if [[ -f $f ]]; then
    local pid; pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "cluster.sh: $what did not come up within ${secs}s; logs in $DIR/log" >&2
  return 1
}

if [[ $cmd == down ]]; then
  export SLURM_CONF=$DIR/etc/slurm.conf
  [[ -f $SLURM_CONF ]] && scancel --quiet --user "$(id -un)" 2>/dev/null || true
  for d in slurmd slurmctld slurmdbd; do stop_pidfile "$DIR/run/$d.pid"; done
  [[ -S $DIR/run/mysqld.sock ]] && mariadb-admin --socket="$DIR/run/mysqld.sock" shutdown 2>/dev/null || true
  stop_pidfile "$DIR/run/mysqld.pid"
  stop_pidfile "$DIR/run/munged.pid"
  rm -rf "$DIR" /run/slurm/conf
  exit 0
fi
[[ $cmd == up ]] || { echo "usage: cluster.sh up|down DIR" >&2; exit 2; }
for tool in munged mungekey mariadbd mariadb-install-db slurmdbd slurmctld slurmd sacctmgr sbatch sacct; do
  command -v "$tool" >/dev/null || { echo "cluster.sh: '$tool' missing: apt-get install slurm-wlm slurmctld slurmd slurmdbd slurm-client munge mariadb-server" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "cluster.sh: run as root (daemons run as root in this test cluster)" >&2; exit 1; }
mkdir -p "$DIR"/{etc,run,log,state,spool,mysql,munge}
chmod 700 "$DIR/munge"

# munge: a fresh key on the default socket (SLURM 22.05's clients ignore AuthInfo=socket= when
# they talk to slurmdbd), so no other munged may be running
MUNGE_SOCKET=/run/munge/munge.socket.2
if munge -n >/dev/null 2>&1; then
  echo "cluster.sh: a munged already serves $MUNGE_SOCKET; stop it first (this cluster uses its own key)" >&2
  exit 1
fi
mkdir -p /run/munge
mungekey --create --keyfile="$DIR/munge/munge.key" --force
munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
  --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
wait_for 10 munged munge -n

# MariaDB for slurmdbd: private data dir, TCP on 127.0.0.1 only (slurmdbd 22.05 cannot be
# pointed at a unix socket other than the compiled-in one)
DB_PORT=16306
mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
  >"$DIR/log/mariadb-install.log" 2>&1
mariadbd --user=root --datadir="$DIR/mysql" --socket="$DIR/run/mysqld.sock" --port=$DB_PORT \
  --bind-address=127.0.0.1 --pid-file="$DIR/run/mysqld.pid" --log-error="$DIR/log/mariadb.log" &
wait_for 30 mariadbd mariadb --socket="$DIR/run/mysqld.sock" -e "select 1"
mariadb --socket="$DIR/run/mysqld.sock" -e "
  CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'prunebench-test';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=16819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=prunebench-test
StorageLoc=slurm_acct_db
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
EOF
chmod 600 "$DIR/etc/slurmdbd.conf"

cat >"$DIR/etc/slurm.conf" <<EOF
ClusterName=prunebench
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# configless: slurmd caches this file under /run/slurm/conf, where commands inside a job (the
# plugin's srun, after it clears SLURM_* variables) find it
SlurmctldParameters=enable_configless
MinJobAge=600
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$DIR/etc/slurm.conf

# slurmdbd reads slurmdbd.conf beside slurm.conf
slurmdbd
wait_for 30 slurmdbd sacctmgr --immediate show cluster
sacctmgr --immediate add cluster prunebench >/dev/null 2>&1 || true
slurmctld
wait_for 30 slurmctld scontrol ping
slurmd --conf-server "127.0.0.1:16817"
wait_for 60 "slurmd (node idle)" bash -c "sinfo -h -N -o '%t' | grep -qx idle"
echo "SLURM_CONF=$SLURM_CONF"
