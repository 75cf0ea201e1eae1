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
exec recorder "$@"
