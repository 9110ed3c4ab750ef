#!/usr/bin/env bash
# Starts and stops a local etcd + kube-apiserver for tests.
#
#   eval "$(tests/apiserver/env.sh start)"   # exports KUBECONFIG, PPO_TESTENV_DIR, PPO_TESTENV_PID, PATH
#   tests/apiserver/env.sh stop              # stops the one named by $PPO_TESTENV_PID / $PPO_TESTENV_DIR
#   tests/apiserver/env.sh run CMD [ARG...]  # start, run CMD with those variables, stop; exits with CMD's code
#
# Optional environment:
#   PPO_TESTENV_APISERVER_ARGS  extra kube-apiserver flags, space separated
#   PPO_TESTENV_WATCH_PID       testenv stops itself when this process exits (default: never)
#   PPO_TESTENV_READY_TIMEOUT   seconds to wait for the ready file (default 180)
#   PPO_CACHE_DIR               where build.sh keeps the binaries
# On a failed start, stdout is the single word `false`, so the eval fails too.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "env.sh: $*" >&2; }

# is_testenv PID: true when PID is a running testenv process.
is_testenv() {
  [[ -n "${1:-}" && -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'testenv up'
}

show_logs() {
  local dir=$1 f
  for f in testenv.log etcd.log kube-apiserver.log; do
    if [[ -f "$dir/$f" ]]; then
      echo "----- $dir/$f (last 40 lines) -----" >&2
      tail -n 40 "$dir/$f" >&2
    fi
  done
}

# stop_env PID DIR: SIGTERM the testenv process group, SIGKILL after 30s, then
# kill any child left behind and remove DIR.
stop_env() {
  local pid=$1 dir=$2 i f cpid
  if is_testenv "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
      is_testenv "$pid" || break
      sleep 0.1
    done
    if is_testenv "$pid"; then
      log "testenv $pid did not stop in 30s, killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  if [[ -n "$dir" && -d "$dir" ]]; then
    for f in "$dir/kube-apiserver.pid" "$dir/etcd.pid"; do
      [[ -f "$f" ]] || continue
      cpid=$(cat "$f")
      if [[ -r "/proc/$cpid/cmdline" ]] && tr '\0' ' ' <"/proc/$cpid/cmdline" | grep -q "$dir"; then
        log "killing leftover process group $cpid"
        kill -KILL -- "-$cpid" 2>/dev/null || true
      fi
    done
    case "$(basename "$dir")" in
      ppo-testenv.*) rm -rf "$dir" ;;
      *) log "not removing $dir: not made by env.sh" ;;
    esac
  fi
}

start() {
  if is_testenv "${PPO_TESTENV_PID:-}"; then
    log "note: testenv ${PPO_TESTENV_PID} from an earlier start is still running, starting another one"
  fi

  local bin dir pid timeout i
  if ! bin="$("$here/build.sh" | tail -n 1)" || [[ ! -x "$bin/testenv" ]]; then
    log "build failed"
    echo false
    return 1
  fi

  dir="$(mktemp -d "${TMPDIR:-/tmp}/ppo-testenv.XXXXXX")"
  local -a extra=()
  local a
  for a in ${PPO_TESTENV_APISERVER_ARGS:-}; do
    extra+=("--apiserver-arg=$a")
  done

  # Non-interactive bash does not put background jobs in their own group, so
  # setsid does not fork and $! is testenv itself.
  setsid "$bin/testenv" up --dir "$dir" --bin "$bin" --watch-pid "${PPO_TESTENV_WATCH_PID:-0}" \
    ${extra[@]+"${extra[@]}"} >"$dir/testenv.log" 2>&1 </dev/null &
  pid=$!

  timeout="${PPO_TESTENV_READY_TIMEOUT:-180}"
  for ((i = 0; i < timeout * 10; i++)); do
    [[ -f "$dir/ready" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  if [[ ! -f "$dir/ready" ]]; then
    if kill -0 "$pid" 2>/dev/null; then
      log "timed out after ${timeout}s waiting for $dir/ready"
    else
      log "testenv exited before it was ready (dir $dir)"
    fi
    show_logs "$dir"
    stop_env "$pid" "$dir"
    echo false
    return 1
  fi

  pid="$(sed -n 's/^TESTENV_PID=//p' "$dir/ready")"
  log "ready: $(sed -n 's/^SERVER=//p' "$dir/ready") (dir $dir, pid $pid)"
  printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
  printf 'export PPO_TESTENV_DIR=%q\n' "$dir"
  printf 'export PPO_TESTENV_PID=%q\n' "$pid"
  printf 'export PATH=%q:"$PATH"\n' "$bin"
}

stop() {
  if [[ -z "${PPO_TESTENV_PID:-}" && -z "${PPO_TESTENV_DIR:-}" ]]; then
    log "PPO_TESTENV_PID and PPO_TESTENV_DIR are not set, so there is nothing to stop"
    return 0
  fi
  stop_env "${PPO_TESTENV_PID:-}" "${PPO_TESTENV_DIR:-}"
  log "stopped"
}

run() {
  [[ $# -gt 0 ]] || { log "usage: env.sh run CMD [ARG...]"; return 2; }
  local exports rc=0
  exports="$(start)" || return 1
  eval "$exports"
  trap stop EXIT
  "$@" || rc=$?
  return "$rc"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run) shift; run "$@" ;;
  *)
    echo "usage: $0 start|stop|run CMD..." >&2
    exit 2
    ;;
esac
