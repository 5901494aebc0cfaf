#!/usr/bin/env bash
# Starts forge on N ranks with Open MPI's mpirun, on this machine or on the hosts of a
# hostfile. Every argument after the options goes to the forge binary.
#
#   launch/mpirun.sh [-n RANKS] [--hostfile FILE] [--forge PATH] -- train CONFIG.yaml [...]
#
#   -n RANKS         ranks in all (default 2)
#   --hostfile FILE  Open MPI hostfile ("node1 slots=8" per line); default: this machine
#   --forge PATH     the forge binary (default: build/forge next to this script's repo)
#
# Each rank gets cores-on-its-node / ranks-on-its-node intra-op threads (forge decides;
# set run.threads in the config to override). When root, Open MPI's consent variables are
# set; on one machine, more ranks than cores are allowed (--oversubscribe). With a
# hostfile, FORGE_*, OMP_*, NCCL_* and CUDA_* variables are passed to every rank (-x).
# SIGUSR1 and SIGTERM sent to this script reach every rank (through mpirun), as Ctrl-C does. The
# exit code is forge's (README "Exit codes"), also when a rank process dies (killed, out of
# memory): Open MPI then ends the job itself, and this script says which rank on which host
# and exits 3, as forge does for a rank that stops responding.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ranks=2
hostfile=""
forge="${FORGE_BUILD:-$here/../build}/forge"
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--ranks) ranks="$2"; shift 2 ;;
    --hostfile) hostfile="$2"; shift 2 ;;
    --forge) forge="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
if [ ! -x "$forge" ]; then
  echo "launch/mpirun.sh: no forge binary at $forge (build with scripts/build.sh or pass --forge)" >&2
  exit 2
fi
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
args=(-np "$ranks")
# mpirun gives ranks a pseudo-terminal whether or not its own output is one; forge learns
# from this whether a live progress bar reaches a person or a log file.
if [ -z "${FORGE_TERMINAL:-}" ]; then
  if [ -t 1 ]; then export FORGE_TERMINAL=1; else export FORGE_TERMINAL=0; fi
fi
# ... and how wide it is (those pseudo-terminals report no size).
if [ -z "${FORGE_COLUMNS:-}" ] && [ -t 1 ]; then
  FORGE_COLUMNS=$(stty size 2>/dev/null < /dev/tty | cut -d' ' -f2) || FORGE_COLUMNS=
  [ -n "$FORGE_COLUMNS" ] && export FORGE_COLUMNS
fi
[ -n "$hostfile" ] || args+=(-x FORGE_TERMINAL ${FORGE_COLUMNS:+-x FORGE_COLUMNS})
if [ -n "$hostfile" ]; then
  # Across machines Open MPI's default mapping and binding apply, and only the variables
  # named with -x reach the remote ranks: forge's own and the usual runtime knobs.
  args+=(--hostfile "$hostfile")
  while IFS='=' read -r name _; do
    case "$name" in FORGE_*|OMP_*|NCCL_*|CUDA_*) args+=(-x "$name") ;; esac
  done < <(env)
else
  cores=$(nproc)
  if [ "$ranks" -le "$cores" ]; then
    # Each rank gets its own cores-per-rank cores, and forge gives it as many threads.
    args+=(--map-by "slot:PE=$((cores / ranks))" --bind-to core)
  else
    # More ranks than cores (tests, debugging): no binding, forge uses 1 thread per rank.
    args+=(--oversubscribe --bind-to none)
  fi
fi
# mpirun's own messages are kept (a copy of its output) to name a rank that died.
messages="$(mktemp "${TMPDIR:-/tmp}/forge-mpirun.XXXXXX")"
trap 'rm -f "$messages"' EXIT
mpirun "${args[@]}" "$forge" "$@" > >(tee -a "$messages") 2> >(tee -a "$messages" >&2) &
pid=$!
forward() { interrupted=1; kill -"$1" "$pid" 2>/dev/null; }
trap 'forward USR1' USR1
trap 'forward TERM' TERM
# Ctrl-C reaches mpirun from the terminal itself (one process group): passing it on too
# would make it a second Ctrl-C ("quit without saving").
trap 'interrupted=1' INT
# `wait` returns early when a trapped signal arrives: then wait again for mpirun's status.
while true; do
  interrupted=0
  rc=0
  wait "$pid" || rc=$?
  [ "$interrupted" = 1 ] || break
done
wait || true  # the tees of mpirun's output
died="$(grep -m1 -E 'process rank [0-9]+ with PID [0-9]+ on node [^ ]+ exited on signal' "$messages" || true)"
if [ -n "$died" ] && [ "$rc" -gt 128 ]; then
  rank="$(sed -E 's/.*process rank ([0-9]+) .*/\1/' <<<"$died")"
  node="$(sed -E 's/.* on node ([^ ]+) exited.*/\1/' <<<"$died")"
  sig="$(sed -E 's/.*exited on signal ([0-9]+).*/\1/' <<<"$died")"
  echo "[launch] rank $rank on $node died (signal $sig) and Open MPI ended the job: exit 3 (continue with --resume auto)" >&2
  exit 3
fi
exit "$rc"
