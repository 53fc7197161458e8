#!/usr/bin/env bash
# A PNG of a report page as headless Chromium renders it (Debian's `chromium` package), with the
# same flags as the browser tests (tests/common/browser.rs).
#
#   tools/screenshot.sh PAGE.html OUT.png [HEIGHT]     # 1280 px wide, HEIGHT (default 2400) tall
set -euo pipefail
page=$(realpath "$1") png=$2 height=${3:-2400}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1280,"$height" \
  --screenshot="$(realpath -m "$png")" "file://$page" 2>/dev/null
echo "wrote $png"
