#!/usr/bin/env bash
# End-to-end test of the recorder image against the synthetic venue (`make docker-test`).
#
#  1. docker.io/debootstrap installed and dockerd running (started here, and stopped again at the end,
#     if it was not running: --bridge=none --iptables=false, everything uses --network host)
#  2. the local debootstrap base avellaneda-base:bookworm (built once, then reused)
#  3. the image (BuildKit, layer and pip caches make rebuilds quick)
#  4. on the host: `replay serve --synthetic` on a free 127.0.0.1 port
#  5. in the container, as the image's default non-root user (uid 10001), into a temp dir made
#     writable for that uid: a 20 s `recorder run` against the venue (real time: 1x); exit code 0 = the
#     day validated healthy. Meanwhile /healthz on METRICS_PORT (a free port) is polled from the host
#     until it answers 200 `recording`, and the image's own HEALTHCHECK command is run in the container
#  6. Parquet files under binance-spot/depth/date=*/symbol=BTCUSDT/, read with the host venv's pyarrow
#
# Host-owned data directories: instead of chown'ing the directory to 10001, run the container as its
# owner, e.g.  docker run --rm --network host --user "$(id -u):$(id -g)" -v "$PWD/data:/data" IMAGE run ...
# (checked below with an arbitrary uid).
#
# Every wait is bounded; containers, the venue and temp dirs are removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=docker-test
. docker/common.sh

IMAGE="${IMAGE:-avellaneda-mm:latest}"
BASE_IMAGE="${BASE_IMAGE:-avellaneda-base:bookworm}"
VENV="${VENV:-.venv}"
SYMBOLS="BTCUSDT,ETHUSDT"
DURATION="${DURATION:-20s}"
RUN_TIMEOUT="${RUN_TIMEOUT:-180}"        # seconds for the whole 20 s recording container
NAME="avellaneda-mm-test-$$"
T0=$SECONDS

TMP=""
VENUE_PID=""
cleanup() {
    local rc=$?
    set +e
    if docker container inspect "$NAME" >/dev/null 2>&1; then
        timeout 30 docker rm -f "$NAME" >/dev/null 2>&1
    fi
    if [[ -n $VENUE_PID ]] && kill -0 "$VENUE_PID" 2>/dev/null; then
        kill -TERM -- "-$VENUE_PID" 2>/dev/null || kill -TERM "$VENUE_PID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$VENUE_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$VENUE_PID" 2>/dev/null || kill -KILL "$VENUE_PID" 2>/dev/null
        wait "$VENUE_PID" 2>/dev/null
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        rm -rf "$TMP" 2>/dev/null ||
            # not root: files written by uid 10001 -> remove them from inside a container
            { timeout -k 10 60 docker run --rm --network host --user 0 -v "$TMP:/t" --entrypoint sh "$IMAGE" \
                  -c 'rm -rf /t/* /t/.[!.]*' >/dev/null 2>&1; rm -rf "$TMP"; }
    fi
    stop_own_dockerd
    if ((rc == 0)); then
        log "PASSED in $((SECONDS - T0))s"
    else
        log "FAILED (exit $rc) after $((SECONDS - T0))s"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { log "FAIL: $*"; exit 1; }

[[ -x $VENV/bin/replay && -x $VENV/bin/python ]] || fail "$VENV is missing: run 'make install' first"

# --- 1-3: docker, base, image ----------------------------------------------------------------------
ensure_docker
t=$SECONDS
BASE_IMAGE="$BASE_IMAGE" docker/make-base.sh
log "base image ready ($((SECONDS - t))s)"
t=$SECONDS
TMP="$(mktemp -d /tmp/avellaneda-docker-test.XXXXXX)"
if ! IMAGE="$IMAGE" BASE_IMAGE="$BASE_IMAGE" docker/build.sh >"$TMP/build.log" 2>&1; then
    tail -n 60 "$TMP/build.log" >&2
    fail "image build failed"
fi
log "image $IMAGE built ($((SECONDS - t))s, log tail:)"
tail -n 3 "$TMP/build.log" >&2

# --- smoke checks of the image ---------------------------------------------------------------------
timeout -k 10 60 docker run --rm --network host "$IMAGE" --help >"$TMP/help.txt" 2>&1 ||
    { cat "$TMP/help.txt" >&2; fail "'docker run $IMAGE --help' failed"; }
uid="$(timeout -k 10 60 docker run --rm --network host --entrypoint id "$IMAGE" -u)"
[[ $uid =~ ^[0-9]+$ && $uid -ne 0 ]] || fail "image runs as uid '$uid', expected non-root"
log "image runs as uid $uid by default"
timeout -k 10 60 docker run --rm --network host --entrypoint sh "$IMAGE" -c \
    'test -e /usr/share/zoneinfo/Europe/Berlin && test -w /data && test "$(pwd)" = /' ||
    fail "image lacks tzdata, a writable /data or WORKDIR /"
# --user for host-owned data dirs: an arbitrary uid without a passwd entry must work too
timeout -k 10 60 docker run --rm --network host --user 4242:4242 "$IMAGE" --help >/dev/null ||
    fail "image does not run with --user 4242:4242"

# --- 4: synthetic venue on the host ----------------------------------------------------------------
PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log "starting synthetic venue on 127.0.0.1:$PORT"
setsid "$VENV/bin/replay" serve --synthetic --market spot --symbols "$SYMBOLS" \
    --port "$PORT" --speed 1x </dev/null >"$TMP/venue.log" 2>&1 &
VENUE_PID=$!
ready=0
for ((i = 0; i < 60; i++)); do   # <= 30 s
    kill -0 "$VENUE_PID" 2>/dev/null || { cat "$TMP/venue.log" >&2; fail "venue exited"; }
    if "$VENV/bin/python" -c "import sys, urllib.request
try:
    urllib.request.urlopen('http://127.0.0.1:$PORT/api/v3/ping', timeout=1)
except Exception:
    sys.exit(1)" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.5
done
((ready)) || { cat "$TMP/venue.log" >&2; fail "venue not ready on port $PORT after 30s"; }
log "venue ready: $(head -n 1 "$TMP/venue.log")"

# --- 5: record as the default non-root user -------------------------------------------------------
DATA="$TMP/data"
mkdir -p "$DATA"
if [[ $(id -u) -eq 0 ]]; then chown "$uid:$uid" "$DATA"; else chmod 0777 "$DATA"; fi
HEALTH_PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log "recording $DURATION of $SYMBOLS in a container (timeout ${RUN_TIMEOUT}s), health on port $HEALTH_PORT"
t=$SECONDS
# no --metrics-port: the entrypoint adds METRICS_PORT's, the port the HEALTHCHECK polls
timeout -k 15 "$RUN_TIMEOUT" docker run --rm --init --name "$NAME" --network host -v "$DATA:/data" \
    -e METRICS_PORT="$HEALTH_PORT" "$IMAGE" \
    run --market spot --symbols "$SYMBOLS" \
    --rest-url "http://127.0.0.1:$PORT" --ws-url "ws://127.0.0.1:$PORT" \
    --out /data --duration "$DURATION" --ignore-window >"$TMP/recorder.log" 2>&1 &
RUN_PID=$!
health=""
for ((i = 0; i < 60; i++)); do   # <= 30 s, within the 20 s recording (plus the container's start)
    health="$("$VENV/bin/python" -c "import json, sys, urllib.error, urllib.request
try:
    response = urllib.request.urlopen('http://127.0.0.1:$HEALTH_PORT/healthz', timeout=1)
except urllib.error.HTTPError as e:
    response = e
except Exception:
    sys.exit(1)
print(response.status, json.loads(response.read())['state'])" 2>/dev/null)" || health=""
    [[ $health == "200 recording" ]] && break
    kill -0 "$RUN_PID" 2>/dev/null || break
    sleep 0.5
done
[[ $health == "200 recording" ]] || { tail -n 25 "$TMP/recorder.log" >&2; fail "/healthz on port $HEALTH_PORT: '${health:-no answer}', expected '200 recording'"; }
log "/healthz from the host: $health"
# the image's HEALTHCHECK command, exactly as Docker runs it, inside the running container
mapfile -t check < <(docker inspect --format '{{range $i, $a := .Config.Healthcheck.Test}}{{if $i}}{{$a}}{{"\n"}}{{end}}{{end}}' "$IMAGE" | sed '/^$/d')
timeout -k 5 20 docker exec "$NAME" "${check[@]}" || fail "the image's HEALTHCHECK (${check[*]}) fails in the running container"
log "the image's HEALTHCHECK passes in the running container"
set +e
wait "$RUN_PID"
rc=$?
set -e
log "recorder exited with $rc after $((SECONDS - t))s; last lines of its output:"
tail -n 25 "$TMP/recorder.log" >&2
((rc != 124 && rc != 137)) || fail "recorder container did not finish within ${RUN_TIMEOUT}s"
((rc == 0)) || { log "venue log:"; tail -n 20 "$TMP/venue.log" >&2; fail "recorder exit code $rc (0 = healthy recording)"; }

# --- 6: the recording ------------------------------------------------------------------------------
log "files written:"
(cd "$DATA" && find . -type f | sort | head -n 40) >&2
"$VENV/bin/python" - "$DATA" "$uid" <<'PY' || fail "recording check failed"
import glob, os, sys
import pyarrow.parquet as pq

data, uid = sys.argv[1], int(sys.argv[2])
files = sorted(glob.glob(os.path.join(data, "binance-spot", "depth", "date=*", "symbol=BTCUSDT", "**", "*.parquet"),
                         recursive=True))
if not files:
    sys.exit("no Parquet files under binance-spot/depth/date=*/symbol=BTCUSDT/")
reports = glob.glob(os.path.join(data, "reports", "binance-spot", "*", "validation-*.html"))
if not reports:
    sys.exit("no validation report under reports/binance-spot/<date>/")
print(f"  validation report: {os.path.relpath(reports[0], data)}", file=sys.stderr)
rows = 0
for f in files:
    t = pq.read_table(f)  # raises if unreadable / truncated
    rows += t.num_rows
    print(f"  {os.path.relpath(f, data)}: {t.num_rows} rows, {t.num_columns} columns", file=sys.stderr)
if rows == 0:
    sys.exit("BTCUSDT depth Parquet files hold no rows")
owners = {os.stat(f).st_uid for f in files}
if owners != {uid}:
    sys.exit(f"files owned by uids {owners}, expected the container user {uid}")
print(f"  {len(files)} BTCUSDT depth file(s), {rows} rows, written by uid {uid}", file=sys.stderr)
PY
