#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test (driven by puppeteer-core, which
# downloads no browser). Idempotent and quiet when already there; elsewhere (no apt, not
# root) it says why it skips and exits 0; under CI=true the test then fails and says so.
set -euo pipefail

say() { echo "install-chromium: $*" >&2; }

if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null; then say "no apt-get: install chromium by hand (the dashboard browser test skips without it)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then say "not root: run 'apt-get install -y chromium' as root (the dashboard browser test skips without it)"; exit 0; fi
say "installing chromium with apt"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
  || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; }
