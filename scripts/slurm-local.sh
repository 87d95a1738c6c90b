#!/usr/bin/env bash
# A real single-node Slurm for tests and local sweeps: munge, slurmctld, slurmd, plus slurmdbd on a private
# MariaDB (so that `sacct` works, which submitit needs to notice a job that died). No systemd: every daemon is
# started by hand and stopped by its pid file. All state lives under $BASE (default /tmp/waypoint-slurm).
#
#   scripts/slurm-local.sh install   # apt-get the Debian packages (root; once per machine)
#   scripts/slurm-local.sh up        # start everything (about 2 s), print the SLURM_CONF line to export
#   scripts/slurm-local.sh env       # print: export SLURM_CONF=...
#   scripts/slurm-local.sh status    # sinfo
#   scripts/slurm-local.sh down      # stop the daemons this script started (munged too with `down all`)
#
# Partitions: `debug` (default, preemptible: a preempted job is requeued) and `high` (preempts debug).
# Settings that make a requeued job restart in seconds (the defaults wait ~2 minutes):
#   AuthInfo=cred_expire=5, SchedulerParameters=bf_interval=1,sched_interval=2.
set -euo pipefail
BASE=${WAYPOINT_SLURM_BASE:-/tmp/waypoint-slurm}
WITH_DBD=${WITH_DBD:-1}
DB_PORT=${WAYPOINT_SLURM_DB_PORT:-3307}
HOST=$(hostname -s)
NCPU=$(nproc)
MEM=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 1024 ))
export SLURM_CONF=$BASE/etc/slurm.conf

need() { command -v "$1" >/dev/null 2>&1 || { echo "slurm-local: $1 is not installed; run: $0 install (as root)" >&2; exit 3; }; }

wait_for() {  # wait_for SECONDS CMD...: poll every 0.2 s
  local n=$(( $1 * 5 )); shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

write_conf() {
  mkdir -p "$BASE"/{etc,state,spool,log,run}
  local acct="AccountingStorageType=accounting_storage/none"
  if [ "$WITH_DBD" = 1 ]; then
    acct=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\nAccountingStoragePort=6819'
  fi
  cat > "$SLURM_CONF" <<CONF
ClusterName=waypoint
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=cred_expire=5
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=300
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
$acct
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10
PartitionName=high Nodes=$HOST Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
CONF
}

start_munge() {
  if [ -f /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    /usr/sbin/mungekey -c -f -k /etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  timeout 20 runuser -u munge -- /usr/sbin/munged
}

start_dbd() {
  [ "$WITH_DBD" = 1 ] || return 0
  need mariadbd; need slurmdbd
  if [ ! -d "$BASE/mysql/mysql" ]; then
    timeout 120 mariadb-install-db --datadir="$BASE/mysql" --user=root --auth-root-authentication-method=normal \
      --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1
  fi
  setsid /usr/sbin/mariadbd --no-defaults --datadir="$BASE/mysql" --socket="$BASE/run/mysql.sock" \
    --pid-file="$BASE/run/mariadb.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --user=root --skip-name-resolve \
    --innodb-buffer-pool-size=64M --log-error="$BASE/log/mariadb.log" </dev/null >/dev/null 2>&1 &
  wait_for 30 timeout 3 mariadb --no-defaults -S "$BASE/run/mysql.sock" -uroot -e 'select 1' \
    || { echo "slurm-local: MariaDB did not start (see $BASE/log/mariadb.log)" >&2; exit 1; }
  timeout 10 mariadb --no-defaults -S "$BASE/run/mysql.sock" -uroot -e \
    "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > "$BASE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$BASE/etc/slurmdbd.conf"
  timeout 30 slurmdbd
  wait_for 30 bash -c "ss -ltn | grep -q ':6819 '" || { echo "slurm-local: slurmdbd did not start (see $BASE/log/slurmdbd.log)" >&2; exit 1; }
}

up() {
  need munged; need slurmctld; need slurmd; need sbatch
  if timeout 3 scontrol ping 2>/dev/null | grep -q UP; then echo "export SLURM_CONF=$SLURM_CONF"; return; fi
  write_conf
  start_munge
  start_dbd
  timeout 30 slurmctld -c
  wait_for 30 bash -c "timeout 3 scontrol ping | grep -q UP" || { echo "slurm-local: slurmctld did not answer (see $BASE/log/slurmctld.log)" >&2; exit 1; }
  timeout 30 slurmd
  wait_for 30 bash -c "[ \"\$(timeout 3 sinfo -h -n $HOST -p debug -o %T)\" = idle ]" \
    || { echo "slurm-local: node $HOST did not become idle (see $BASE/log/slurmd.log)" >&2; exit 1; }
  echo "export SLURM_CONF=$SLURM_CONF"
}

down() {
  for f in slurmd slurmctld slurmdbd mariadb; do
    p=$BASE/run/$f.pid
    [ -f "$p" ] || continue
    pid=$(cat "$p")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$p"
  done
  if [ "${1:-}" = all ] && [ -f /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
}

case "${1:-}" in
  install)
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client \
      $( [ "$WITH_DBD" = 1 ] && echo slurmdbd mariadb-server )
    ;;
  up) up ;;
  down) down "${2:-}" ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  status) sinfo ;;
  *) echo "usage: $0 install|up|down [all]|env|status" >&2; exit 2 ;;
esac
