#!/bin/sh
# Container entrypoint: exactly `recorder "$@"`, except that CONFIG_PATH (default
# /config/recorder.yaml) is only passed on when that file exists, so the image also runs
# without a /config mount, on the recorder's built-in defaults and command-line options.
# A config directory this user may not look into is passed on, so the recorder reports it.
set -e
if [ -n "${CONFIG_PATH:-}" ] && [ ! -e "$CONFIG_PATH" ]; then
    config_dir=$(dirname "$CONFIG_PATH")
    if [ ! -d "$config_dir" ] || [ -x "$config_dir" ]; then
        echo "recorder-entrypoint: no $CONFIG_PATH, running on defaults and command-line options" >&2
        unset CONFIG_PATH
    fi
fi
# `run` and `schedule` serve /metrics and /healthz on METRICS_PORT (default 9100), the port the image's
# HEALTHCHECK polls: added when the command line has no --metrics-port, refused when it names another.
case "${1:-}" in
run | schedule)
    health_port="${METRICS_PORT:-9100}"
    given=""
    previous=""
    for arg in "$@"; do
        case "$arg" in
        --metrics-port=*) given="${arg#--metrics-port=}" ;;
        esac
        if [ "$previous" = "--metrics-port" ]; then given="$arg"; fi
        previous="$arg"
    done
    if [ -z "$given" ]; then
        set -- "$@" --metrics-port "$health_port"
    elif [ "$given" != "$health_port" ]; then
        echo "recorder-entrypoint: error: --metrics-port $given differs from METRICS_PORT=$health_port," \
             "the port the HEALTHCHECK polls; give -e METRICS_PORT=$given instead" >&2
        exit 2
    fi
    ;;
esac
exec recorder "$@"
