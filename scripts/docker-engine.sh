#!/usr/bin/env bash
# Make sure a Docker engine answers, starting one if we are root and none runs.
#
#   scripts/docker-engine.sh start    use a reachable engine, or start dockerd; last stdout line: DOCKER_HOST=<url>
#   scripts/docker-engine.sh stop     stop the dockerd this script started (no-op otherwise)
#   scripts/docker-engine.sh status   print whether the engine answers; exit 0 if it does, 1 if not
#
# The engine is $DOCKER_HOST, else unix:///var/run/docker.sock. Only stdout's last line is meant for
# machines (`eval "$(scripts/docker-engine.sh start | tail -n1)"`); all chatter goes to stderr.
#
# Environment knobs:
#   HOSTCTL_DOCKERD_TIMEOUT   seconds to wait for a started dockerd to answer (default 60)
#   HOSTCTL_DOCKERD_LOG       dockerd log file (default /var/log/hostctl-dockerd.log)
#   HOSTCTL_DOCKERD_PIDFILE   pidfile of the dockerd we start (default /run/hostctl-dockerd.pid)
set -euo pipefail

readonly DEFAULT_HOST="unix:///var/run/docker.sock"
readonly ENGINE_HOST="${DOCKER_HOST:-$DEFAULT_HOST}"
readonly TIMEOUT="${HOSTCTL_DOCKERD_TIMEOUT:-60}"
readonly LOG_FILE="${HOSTCTL_DOCKERD_LOG:-/var/log/hostctl-dockerd.log}"
readonly PID_FILE="${HOSTCTL_DOCKERD_PIDFILE:-/run/hostctl-dockerd.pid}"
readonly LOCK_FILE="${PID_FILE%.pid}.lock"

say() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# True when the engine at $1 (default: $ENGINE_HOST) answers an API call within a few seconds. Uses the
# docker CLI when present and falls back to curl on a unix socket, so it also works before the CLI is installed.
engine_answers() {
    local host="${1:-$ENGINE_HOST}"
    if command -v docker >/dev/null 2>&1; then
        timeout 10 docker -H "$host" version --format '{{.Server.Version}}' >/dev/null 2>&1
    elif [[ "$host" == unix://* ]] && command -v curl >/dev/null 2>&1; then
        timeout 10 curl -fsS --unix-socket "${host#unix://}" http://localhost/_ping >/dev/null 2>&1
    else
        return 1
    fi
}

# PID of the dockerd recorded in our pidfile, if that process is still a dockerd.
our_dockerd_pid() {
    local pid
    [[ -r "$PID_FILE" ]] || return 1
    pid="$(<"$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "dockerd" ]] || return 1
    printf '%s\n' "$pid"
}

# Wait until the engine answers; give up when the deadline passes or when dockerd $1 has died.
wait_for_engine() {
    local pid="$1" deadline=$((SECONDS + TIMEOUT))
    until engine_answers; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "dockerd exited during start-up; last log line: $(tail -n1 "$LOG_FILE" 2>/dev/null || echo '<no log>') (full log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            die "dockerd did not answer at $ENGINE_HOST within ${TIMEOUT}s (log: $LOG_FILE)"
        fi
        sleep 0.5
    done
}

install_dockerd() {
    say "dockerd not found; installing Debian's docker.io (apt-get)"
    command -v apt-get >/dev/null 2>&1 || die "dockerd is missing and apt-get is not available; install a Docker engine by hand"
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2 || die "apt-get install docker.io failed"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH"
}

cmd_start() {
    if engine_answers; then
        say "engine answers at $ENGINE_HOST"
        printf 'DOCKER_HOST=%s\n' "$ENGINE_HOST"
        return 0
    fi
    if [[ "$ENGINE_HOST" != unix://* ]]; then
        die "no engine answers at DOCKER_HOST=$ENGINE_HOST and it is not a local socket this script could serve; start that engine or unset DOCKER_HOST"
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        die "no engine answers at $ENGINE_HOST; run 'sudo $0 start' (starting dockerd needs root) or point DOCKER_HOST at a running engine"
    fi

    # Serialise concurrent starts (parallel test workers): only one of them may launch dockerd.
    mkdir -p "$(dirname "$PID_FILE")" "$(dirname "$LOG_FILE")"
    exec 9>"$LOCK_FILE"
    flock -w "$TIMEOUT" 9 || die "another docker-engine.sh start holds $LOCK_FILE for more than ${TIMEOUT}s"

    local pid="" running=""
    if engine_answers; then
        say "engine answers at $ENGINE_HOST (started by a concurrent caller)"
    else
        # A dockerd that is already running (ours from an earlier call, or a service still booting that owns
        # the default pidfile) is waited for, not raced for /var/lib/docker.
        if running="$(our_dockerd_pid)"; then
            :
        elif [[ -r /var/run/docker.pid ]] && running="$(<"/var/run/docker.pid")" \
            && [[ "$(cat "/proc/$running/comm" 2>/dev/null)" == "dockerd" ]]; then
            :
        else
            running=""
        fi
        if [[ -n "$running" ]]; then
            if [[ "$ENGINE_HOST" != "$DEFAULT_HOST" ]] && engine_answers "$DEFAULT_HOST"; then
                die "a dockerd (pid $running) already serves $DEFAULT_HOST, not DOCKER_HOST=$ENGINE_HOST; unset DOCKER_HOST"
            fi
            say "dockerd (pid $running) is running but not answering yet; waiting up to ${TIMEOUT}s"
            wait_for_engine "$running"
        else
            command -v dockerd >/dev/null 2>&1 || install_dockerd
            say "starting dockerd on $ENGINE_HOST (log: $LOG_FILE)"
            local args=()
            [[ "$ENGINE_HOST" != "$DEFAULT_HOST" ]] && args+=(--host "$ENGINE_HOST")
            rm -f "${ENGINE_HOST#unix://}"
            # setsid + nohup: dockerd must outlive this shell and its process group; closing fd 9 keeps the
            # lock from leaking into the daemon; no inherited stdout, or `$(docker-engine.sh start)` would hang.
            setsid nohup dockerd "${args[@]}" </dev/null >>"$LOG_FILE" 2>&1 9>&- &
            pid=$!
            printf '%s\n' "$pid" >"$PID_FILE"
            wait_for_engine "$pid"
            say "dockerd (pid $pid) answers after ${SECONDS}s"
        fi
    fi
    printf 'DOCKER_HOST=%s\n' "$ENGINE_HOST"
}

cmd_stop() {
    local pid
    if ! pid="$(our_dockerd_pid)"; then
        say "no dockerd started by this script is running; nothing to stop"
        rm -f "$PID_FILE"
        return 0
    fi
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers (10 s grace each) and containerd before exiting.
    local deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "dockerd (pid $pid) ignored SIGTERM for ${TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    rm -f "$PID_FILE"
    say "dockerd stopped"
}

cmd_status() {
    if engine_answers; then
        echo "reachable: DOCKER_HOST=$ENGINE_HOST"
        return 0
    fi
    echo "not reachable: DOCKER_HOST=$ENGINE_HOST"
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        say "usage: $0 start|stop|status"
        exit 2
        ;;
esac
