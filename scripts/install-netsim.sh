#!/usr/bin/env bash
# Installs what the multi-host (network namespace) tests need: iproute2 (`ip`, `tc`) and procps
# (`sysctl`, `kill`). Idempotent and quiet when already there; elsewhere (no apt, not root) it says
# why it skips and exits 0; under CI=true the tests then fail and say so.
set -euo pipefail

say() { echo "install-netsim: $*" >&2; }

missing=()
command -v ip >/dev/null && command -v tc >/dev/null || missing+=(iproute2)
command -v sysctl >/dev/null && [ -x /bin/kill ] || missing+=(procps)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if ! command -v apt-get >/dev/null; then say "no apt-get: install ${missing[*]} by hand (the multi-host tests skip without them)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then say "not root: run 'apt-get install -y ${missing[*]}' as root (the multi-host tests need root anyway)"; exit 0; fi
say "installing ${missing[*]} with apt"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
