#!/usr/bin/env bash
# A one-node SLURM cluster with accounting, from Debian's packages, for trying the SLURM launcher
# and for tests/test_slurm.py. Run as root.
#
#   tools/slurm_cluster.sh install   apt-get install the daemons (never started by the packages here)
#   tools/slurm_cluster.sh start     munged, mariadbd, slurmdbd, slurmctld, slurmd; waits for an idle node
#   tools/slurm_cluster.sh env       prints `export SLURM_CONF=...`: eval it before sbatch / train.py
#   tools/slurm_cluster.sh stop      stops every daemon it started, by its pid file
#
# Everything it writes lives in $SLURM_STATE (default /tmp/transfer_lab_slurm): configs, pid files,
# logs, the accounting database. The node is this machine: every CPU, 90% of the memory, in one
# partition `cpu`. proctrack/linuxproc and task/none need no cgroups (containers have none to give).
set -euo pipefail

STATE=${SLURM_STATE:-/tmp/transfer_lab_slurm}
CONF=$STATE/slurm.conf
PACKAGES="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
CLUSTER=transferlab
NODE=$(hostname -s)

die() { echo "slurm_cluster: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run as root (it starts system daemons)"; }

install() {
  need_root
  if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
      && command -v munged >/dev/null && command -v sbatch >/dev/null; then
    return
  fi
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $PACKAGES >/dev/null
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within the time limit (logs in $STATE)"
    sleep 0.5
  done
}

write_configs() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$STATE"/{spool/ctld,spool/d,log,run,mysql,mysql-run}
  cat > "$CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
KillWait=30
# debug-level logs: this cluster exists for tests and trials, its logs for post-mortems
SlurmctldDebug=debug
SlurmdDebug=debug
MinJobAge=300
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$STATE/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$STATE/slurmdbd.conf"
}

start() {
  need_root
  command -v slurmctld >/dev/null || die "SLURM is not installed; run: $0 install"
  write_configs
  # munge: the key the package generated, its own user, the default socket every client finds
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  if ! pid_alive /run/munge/munged.pid; then runuser -u munge -- munged; fi
  wait_for 20 munged munge -n
  # accounting: a private MariaDB on the default socket (slurmdbd's client library looks there)
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld "$STATE/mysql" "$STATE/mysql-run"
  runuser -u mysql -- test -w "$STATE/mysql" \
    || die "the mysql user cannot reach $STATE; set SLURM_STATE to a folder under world-readable ones (e.g. /tmp/x)"
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
      > "$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
  fi
  if ! pid_alive "$STATE/mysql-run/mariadbd.pid"; then  # it runs as mysql: its files in a folder of its own
    mariadbd --user=mysql --datadir="$STATE/mysql" --pid-file="$STATE/mysql-run/mariadbd.pid" \
      --bind-address=127.0.0.1 --log-error="$STATE/mysql-run/mariadbd.log" >/dev/null 2>&1 &
  fi
  wait_for 60 mariadbd mariadb -uroot -e "select 1"
  mariadb -uroot -e "create database if not exists slurm_acct_db;
    create user if not exists 'slurm'@'localhost' identified by 'slurm';
    grant all on slurm_acct_db.* to 'slurm'@'localhost'; flush privileges;"
  # slurmdbd.conf is found beside $SLURM_CONF
  pid_alive "$STATE/run/slurmdbd.pid" || SLURM_CONF=$CONF slurmdbd
  wait_for 60 slurmdbd env SLURM_CONF="$CONF" sacctmgr -n list cluster
  SLURM_CONF=$CONF sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  pid_alive "$STATE/run/slurmctld.pid" || SLURM_CONF=$CONF slurmctld -f "$CONF"
  wait_for 60 slurmctld env SLURM_CONF="$CONF" scontrol ping
  pid_alive "$STATE/run/slurmd.pid" || SLURM_CONF=$CONF slurmd -f "$CONF"
  wait_for 90 "an idle node" bash -c "SLURM_CONF='$CONF' sinfo -h -o %t | grep -qx idle"
  # idle in sinfo is not yet a node that has run a job: run one before saying it is ready
  wait_for 60 "a first job" env SLURM_CONF="$CONF" srun -N1 -n1 -t 1 --mem=10 true
  echo "slurm_cluster: node $NODE idle in partition cpu; export SLURM_CONF=$CONF"
}

stop() {
  local pidfile
  for pidfile in run/slurmd.pid run/slurmctld.pid run/slurmdbd.pid mysql-run/mariadbd.pid; do
    if pid_alive "$STATE/$pidfile"; then
      kill "$(cat "$STATE/$pidfile")" 2>/dev/null || true
    fi
    for _ in $(seq 1 60); do pid_alive "$STATE/$pidfile" || break; sleep 0.5; done
  done
  if pid_alive /run/munge/munged.pid; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) die "usage: $0 install|start|env|stop" ;;
esac
