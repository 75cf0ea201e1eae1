# shellcheck shell=bash
# Shared helpers for docker/*.sh (sourced, not executed).
#   ensure_docker     install docker.io (+ debootstrap) if missing, start dockerd if not running
#   stop_own_dockerd  stop the dockerd that ensure_docker started in this shell, if any
#   docker_build ...  `docker build` with BuildKit, on whichever client provides it

AVM_DOCKERD_PID=""
AVM_DOCKERD_LOG="${AVM_DOCKERD_LOG:-/var/log/avellaneda-dockerd.log}"

log() { printf '[%s] %s\n' "${LOG_TAG:-docker}" "$*" >&2; }

apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        log "need root to apt-get install $*"
        return 1
    fi
    log "apt-get install $*"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_docker() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
    if timeout 20 docker info >/dev/null 2>&1; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "docker daemon not reachable and not root: start dockerd (or join the docker group) first"
        return 1
    fi
    # No bridge/NAT: everything here uses --network host.  Detached from our stdio so that make/CI
    # do not wait on it.
    log "starting dockerd --bridge=none --iptables=false (log: $AVM_DOCKERD_LOG)"
    setsid dockerd --bridge=none --iptables=false </dev/null >>"$AVM_DOCKERD_LOG" 2>&1 &
    AVM_DOCKERD_PID=$!
    local i
    for ((i = 0; i < 60; i++)); do
        if timeout 5 docker info >/dev/null 2>&1; then
            log "dockerd ready (pid $AVM_DOCKERD_PID)"
            return 0
        fi
        if ! kill -0 "$AVM_DOCKERD_PID" 2>/dev/null; then
            log "dockerd exited; last lines of $AVM_DOCKERD_LOG:"
            tail -n 20 "$AVM_DOCKERD_LOG" >&2
            AVM_DOCKERD_PID=""
            return 1
        fi
        sleep 1
    done
    log "dockerd not ready after 60s; last lines of $AVM_DOCKERD_LOG:"
    tail -n 20 "$AVM_DOCKERD_LOG" >&2
    return 1
}

stop_own_dockerd() {
    [[ -n $AVM_DOCKERD_PID ]] || return 0
    kill -0 "$AVM_DOCKERD_PID" 2>/dev/null || return 0
    log "stopping dockerd (pid $AVM_DOCKERD_PID) started by this script"
    kill -TERM "$AVM_DOCKERD_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 30; i++)); do
        kill -0 "$AVM_DOCKERD_PID" 2>/dev/null || { AVM_DOCKERD_PID=""; return 0; }
        sleep 1
    done
    kill -KILL "$AVM_DOCKERD_PID" 2>/dev/null || true
    AVM_DOCKERD_PID=""
}

# The Dockerfile needs BuildKit (RUN --mount).  Docker >= 23 clients need the buildx plugin for it;
# 18.09-22.x clients (Debian bookworm's docker.io is 20.10) have it built in with DOCKER_BUILDKIT=1.
buildkit_client() {
    if docker buildx version >/dev/null 2>&1; then
        command -v docker
        return 0
    fi
    local c v major
    for c in $(type -ap docker) /usr/bin/docker; do
        [[ -x $c ]] || continue
        v="$("$c" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')"
        major="${v:-0}"
        if ((major >= 18 && major < 23)); then
            echo "$c"
            return 0
        fi
    done
    log "no BuildKit-capable docker client: install the buildx plugin (docker-buildx-plugin) or docker.io 20.10"
    return 1
}

docker_build() {
    local client
    client="$(buildkit_client)" || return 1
    DOCKER_BUILDKIT=1 "$client" build "$@"
}
