#!/usr/bin/env bash
# Throw-away single-node Slurm cluster (munged + slurmctld + slurmd) for
# exercising the workflow through snakemake-executor-plugin-slurm.
#
#   bash tests/slurm/cluster.sh start    # install packages if needed, start daemons
#   bash tests/slurm/cluster.sh status   # sinfo/squeue; exit 1 when not running
#   bash tests/slurm/cluster.sh stop     # stop daemons (idempotent)
#   eval "$(bash tests/slurm/cluster.sh env)"   # SLURM_CONF for client commands
#
# Everything (config, munge key, spool, state, logs, pidfiles) lives under
# one state dir, $CXR_SLURM_DIR (default /tmp/cxr-slurm); `rm -rf` of it
# (after `stop`) resets the cluster. The one thing outside it is the symlink
# /etc/slurm/slurm.conf -> $CXR_SLURM_DIR/etc/slurm.conf, present only while
# the cluster runs: inside each Slurm job, snakemake-executor-plugin-slurm-
# jobstep launches the rule via a nested `srun` with every SLURM_* variable
# except the job ids stripped from its environment -- SLURM_CONF included --
# so that srun can only find the config at the compiled-in default path.
# `env` still prints SLURM_CONF so client commands do not depend on the link.
#
# `start` prints the `env` line on stdout (logs go to stderr), so
# `eval "$(bash tests/slurm/cluster.sh start)"` works too.
#
# Snakemake must use `slurm-status-command: squeue`: there is no slurmdbd,
# so `sacct` fails, and the plugin then treats every job as "still running"
# forever. squeue only reports finished jobs for MinJobAge seconds, hence the
# large MinJobAge below. See tests/slurm/README.md.
set -euo pipefail

STATE=${CXR_SLURM_DIR:-/tmp/cxr-slurm}
ETC=$STATE/etc
CONF=$ETC/slurm.conf
MUNGE_DIR=$STATE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
LOG=$STATE/log
RUN=$STATE/run
START_TIMEOUT=${CXR_SLURM_START_TIMEOUT:-30}
PACKAGES=(munge slurmctld slurmd slurm-client)
DEFAULT_CONF=/etc/slurm/slurm.conf

# daemon name -> pidfile; also the expected /proc/<pid>/comm, so a recycled
# PID belonging to some unrelated process is not mistaken for a live daemon.
declare -A PIDFILE=(
  [munged]=$MUNGE_DIR/munged.pid
  [slurmctld]=$RUN/slurmctld.pid
  [slurmd]=$RUN/slurmd.pid
)
# Start order; stop goes in reverse (slurmd first so it does not spin
# trying to reach a dead controller, munged last because both need it).
DAEMONS=(munged slurmctld slurmd)

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

need_root() {
  [[ $EUID -eq 0 ]] || die "'$1' must run as root (daemons start as root and drop to the munge/slurm users)"
}

# A killed daemon can linger as a zombie for a while (PID 1 in containers
# is often slow to reap), so "has a /proc entry" is not "alive".
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# Prints the PID if the daemon from the pidfile is alive, else nothing.
daemon_pid() {
  local name=$1 pid
  [[ -r ${PIDFILE[$name]} ]] || return 1
  pid=$(tr -dc '0-9' <"${PIDFILE[$name]}")
  [[ -n $pid ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
  alive "$pid" || return 1
  echo "$pid"
}

running_count() {
  local n=0 d
  for d in "${DAEMONS[@]}"; do
    daemon_pid "$d" >/dev/null && n=$((n + 1))
  done
  echo "$n"
}

slurm() { SLURM_CONF=$CONF "$@"; }

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Fresh containers often ship without package lists; only pay for an
  # update when apt does not know the package at all.
  if ! apt-cache show slurmctld >/dev/null 2>&1; then
    apt-get update -qq
  fi
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

write_config() {
  local host cpus real_mem
  host=$(hostname -s)

  # munged and slurmctld drop root; they must own what they write to.
  # munged refuses to start if its dirs are group/world writable.
  install -d -m 0755 "$STATE" "$ETC" "$LOG" "$RUN"
  install -d -m 0755 -o munge -g munge "$MUNGE_DIR" "$LOG/munge"
  install -d -m 0755 -o slurm -g slurm "$STATE/ctld" "$LOG/ctld"
  install -d -m 0755 "$STATE/slurmd"
  chown slurm:slurm "$RUN"   # slurmctld writes its pidfile after setuid
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"
  chmod 0400 "$MUNGE_DIR/munge.key"

  # Stand-in "GPU" so jobs that request gpu=1 (--gpus=1) are schedulable;
  # slurmd only needs a device file it can stat, and jobs then get
  # CUDA_VISIBLE_DEVICES=0 exactly like on a real GPU node.
  ln -sfn /dev/null "$STATE/fakegpu0"

  # The node advertises a GPU node's size (CXR_SLURM_CPUS, default 16;
  # CXR_SLURM_MEMORY_MB, default 64000), not this machine's, so that the shipped
  # profile's right-sized train request (8 CPUs, 12 GB) is schedulable here.
  # SlurmdParameters=config_overrides makes slurmd trust these numbers instead
  # of draining the node for lacking them. Sockets/cores/threads are omitted on
  # purpose: with CR_CPU_Memory and only CPUs= given, every CPU is its own
  # schedulable unit. Nothing binds jobs to CPUs (task/none), so the CPUs that
  # do not exist are bookkeeping only: a job sees all real CPUs in its affinity
  # mask and SLURM_CPUS_PER_TASK tells it what it was allocated.
  cpus=${CXR_SLURM_CPUS:-16}
  real_mem=${CXR_SLURM_MEMORY_MB:-64000}
  [[ $cpus =~ ^[1-9][0-9]*$ && $real_mem =~ ^[1-9][0-9]*$ ]] ||
    die "CXR_SLURM_CPUS ($cpus) and CXR_SLURM_MEMORY_MB ($real_mem) must be positive integers"

  cat >"$CONF" <<EOF
# Generated by tests/slurm/cluster.sh; rewritten on every start.
ClusterName=cxr
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire (default 120 s) is also how long a requeued job waits before it
# may start again; the requeue test would wait that long.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/ctld/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# The default MailProg is not installed; slurmctld logs an error without this.
MailProg=/bin/true

# No cgroups in containers: track processes by parent PID, no binding (the
# node advertises more CPUs than exist; binding to them would fail).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
MpiDefault=none

# No slurmdbd: sacct cannot work, Snakemake must poll with squeue.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# squeue forgets finished jobs after MinJobAge seconds (+ up to a minute
# until the purge runs); a job that vanishes unseen stays "running" for
# Snakemake forever. The plugin polls at most every 180 s, and it silently
# switches to the broken sacct when MinJobAge < 3 x its initial interval.
MinJobAge=600

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Jobs without --mem would otherwise get the whole node and serialise.
DefMemPerCPU=1024
# A restarted slurmd should come back idle, not stay DOWN.
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
# Jobs of a higher-PriorityTier partition preempt those of lower tiers; PreemptMode
# per partition below (the cluster-wide value must not be OFF with partition_prio).
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
# Only jobs submitted with --requeue (profiles: slurm-requeue: true) may be
# requeued (scontrol requeue, preemption), so that the requeue test depends on
# the profile's setting. Slurm's own default is JobRequeue=1.
JobRequeue=0

GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem Gres=gpu:fake:1 State=UNKNOWN
PartitionName=gpu Nodes=$host Default=YES MaxTime=INFINITE PreemptMode=OFF State=UP
# A partition whose MaxTime (5 min) is below what a train job asks for: the Slurm
# pre-flight must stop a study that names it. EnforcePartLimits=NO (the default) would
# accept such a job and keep it pending for ever.
PartitionName=short Nodes=$host MaxTime=5 PreemptMode=OFF State=UP
# Preemption as a site with PreemptMode=CANCEL has it: a job in partition urgent (higher
# PriorityTier) cancels a job in partition preemptible that holds what it needs; the
# cancelled job ends PREEMPTED. gpu and short are never preempted (PreemptMode=OFF).
PartitionName=preemptible Nodes=$host PriorityTier=1 PreemptMode=CANCEL State=UP
PartitionName=urgent Nodes=$host PriorityTier=2 PreemptMode=OFF State=UP
EOF

  # Without AutoDetect=off slurmd would try NVML and find nothing.
  cat >"$ETC/gres.conf" <<EOF
AutoDetect=off
NodeName=$host Name=gpu Type=fake File=$STATE/fakegpu0
EOF

  # See header: nested srun in jobs ignores SLURM_CONF. Only ever replace
  # our own symlink or a dangling one, never a real config or the link of
  # another live state dir (its jobs would silently lose their config).
  if [[ -e $DEFAULT_CONF && ! -L $DEFAULT_CONF ]]; then
    die "$DEFAULT_CONF is a real file (a system Slurm config?); refusing to replace it"
  fi
  local target
  target=$(readlink "$DEFAULT_CONF" || true)
  if [[ -n $target && $target != "$CONF" && -e $target ]]; then
    die "$DEFAULT_CONF points to $target: another cluster.sh state dir; stop that one first (or remove the link)"
  fi
  mkdir -p "$(dirname "$DEFAULT_CONF")"
  ln -sfn "$CONF" "$DEFAULT_CONF"
}

unlink_default_conf() {
  if [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$CONF" ]]; then
    rm -f "$DEFAULT_CONF"
  fi
}

start_munged() {
  # Explicit socket/key/pid paths keep this munged independent of any
  # system one in /run/munge.
  runuser -u munge -- /usr/sbin/munged \
    --socket="$MUNGE_SOCKET" \
    --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" \
    --log-file="$LOG/munge/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed"
}

log_tails() {
  local f
  for f in "$LOG/munge/munged.log" "$LOG/ctld/slurmctld.log" "$LOG/slurmd.log"; do
    [[ -f $f ]] || continue
    echo "----- tail $f" >&2
    tail -n 20 "$f" >&2
  done
}

do_start() {
  need_root start
  local n
  n=$(running_count)
  if [[ $n -eq ${#DAEMONS[@]} ]]; then
    log "already running (state dir $STATE)"
    do_env
    return 0
  fi
  # Half-running (e.g. one daemon crashed): restart cleanly rather than
  # guess which pieces are healthy.
  ((n == 0)) || { log "partially running; restarting"; do_stop; }

  install_packages
  write_config
  export SLURM_CONF=$CONF

  local t0
  t0=$(date +%Y-%m-%dT%H:%M:%S)
  start_munged || fail_start "munged failed to start"
  slurmctld -f "$CONF" || fail_start "slurmctld failed to start"
  slurmd -f "$CONF" || fail_start "slurmd failed to start"

  # slurmctld restores the node's last state (often IDLE) from its state
  # dir, so "idle" alone does not prove that the new slurmd registered; its
  # SlurmdStartTime must also be from this start. MIXED/ALLOCATED are fine
  # too: jobs from before a restart may still be running.
  local host deadline info state="" started d
  host=$(hostname -s)
  deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    for d in "${DAEMONS[@]}"; do
      daemon_pid "$d" >/dev/null || { sleep 1; daemon_pid "$d" >/dev/null; } ||
        fail_start "$d died during startup"
    done
    info=$(scontrol -o show node "$host" 2>/dev/null || true)
    state=$(sed -n 's/.* State=\([^ ]*\).*/\1/p' <<<"$info")
    started=$(sed -n 's/.* SlurmdStartTime=\([^ ]*\).*/\1/p' <<<"$info")
    if [[ $state =~ ^(IDLE|MIXED|ALLOCATED)$ && -n $started && ! $started < $t0 ]]; then
      log "up: node $host ${state,,} (state dir $STATE)"
      do_env
      return 0
    fi
    sleep 1
  done
  sinfo -R >&2 || true
  fail_start "node $host not ready after ${START_TIMEOUT}s (state '${state:-?}', slurmd registered '${started:-never}')"
}

# Leave nothing half-started behind: a later `start` would otherwise find
# live pidfiles and report success for a broken cluster.
fail_start() {
  log "start failed: $*"
  log_tails
  do_stop
  exit 1
}

do_stop() {
  need_root stop
  local i d pid pids=()
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    d=${DAEMONS[i]}
    if pid=$(daemon_pid "$d"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$d:$pid")
    fi
  done
  ((${#pids[@]})) || { unlink_default_conf; log "not running"; return 0; }
  local deadline=$((SECONDS + 20)) left entry
  while :; do
    left=()
    for entry in "${pids[@]}"; do
      alive "${entry#*:}" && left+=("$entry")
    done
    ((${#left[@]})) || break
    if ((SECONDS >= deadline)); then
      log "still alive after SIGTERM, sending SIGKILL: ${left[*]}"
      for entry in "${left[@]}"; do kill -KILL "${entry#*:}" 2>/dev/null || true; done
      break
    fi
    sleep 0.5
  done
  unlink_default_conf
  log "stopped"
}

do_status() {
  local d pid down=()
  for d in "${DAEMONS[@]}"; do
    if pid=$(daemon_pid "$d"); then
      echo "$d: running (pid $pid)"
    else
      echo "$d: not running"
      down+=("$d")
    fi
  done
  if ((${#down[@]})); then
    echo "cluster not running (down: ${down[*]}; state dir $STATE)"
    return 1
  fi
  slurm sinfo
  slurm squeue
}

do_env() {
  echo "export SLURM_CONF=$CONF"
}

case ${1:-} in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) do_env ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
