#!/usr/bin/env bash
# Render an HTML report (validation or backtest) in headless Chromium and save a PNG (offline: no network needed).
# Usage: scripts/screenshot_report.sh report.html [out.png] [WIDTHxHEIGHT]
# Debian: apt-get update && apt-get install -y chromium
set -euo pipefail
html=$(realpath "${1:?usage: $0 report.html [out.png] [1280x2400]}")
png=$(realpath -m "${2:-/tmp/report.png}")
size=${3:-1280x2400}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --screenshot="$png" --window-size="${size/x/,}" \
  "file://$html" 2>/dev/null
echo "$png"
