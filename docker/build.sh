#!/usr/bin/env bash
# Build the recorder image (BuildKit, host network, pip CA bundle passed as a build secret).
#
#   docker/build.sh                                   # IMAGE=avellaneda-mm:latest, BASE_IMAGE from the Dockerfile
#   BASE_IMAGE=avellaneda-base:bookworm docker/build.sh
#   PIP_CA=/path/to/ca.pem docker/build.sh            # CA bundle for pip (default: $PIP_CERT or the system bundle)
#   BUILD_TIMEOUT=900 docker/build.sh [extra docker build args...]
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=docker-build
. docker/common.sh

IMAGE="${IMAGE:-avellaneda-mm:latest}"
PIP_CA="${PIP_CA:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}"

args=(--network host -t "$IMAGE" --progress "${BUILD_PROGRESS:-plain}")
[[ -n ${BASE_IMAGE:-} ]] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -n ${PIP_INDEX_URL:-} && ${PIP_INDEX_URL} != file:* ]] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
# a secret is mounted for the pip steps only; it is never part of a layer or of the image history
[[ -s $PIP_CA ]] && args+=(--secret "id=pip_ca,src=$PIP_CA")

start=$SECONDS
log "building $IMAGE${BASE_IMAGE:+ on $BASE_IMAGE}"
timeout "${BUILD_TIMEOUT:-900}" bash -c '. docker/common.sh; docker_build "$@"' _ "${args[@]}" "$@" .
log "built $IMAGE in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
