#!/usr/bin/env bash
# Installs a software Vulkan driver (Mesa >= 25 lavapipe) so that the webgpu backend has an
# adapter on machines without a GPU: CI runs the webgpu conformance tests on it. Debian
# bookworm's own Mesa 22.3 lavapipe is rejected by Dawn ("shaderUniform*ArrayDynamicIndexing
# required"), so it comes from bookworm-backports. Idempotent and quiet when already there;
# elsewhere (another OS, not root) it says why it skips and exits 0.
set -euo pipefail

MIN_MESA=25

say() { echo "install-vulkan: $*" >&2; }

lavapipe_version() {
  # Version of the installed mesa-vulkan-drivers, if it ships lavapipe's ICD file.
  if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && command -v dpkg-query >/dev/null; then
    dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true
  fi
}

have_lavapipe() {
  local v
  v=$(lavapipe_version)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge "$MIN_MESA" && ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null  # no -q: an early exit would SIGPIPE ldconfig under pipefail
}

if have_lavapipe; then exit 0; fi

codename=""
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${ID:-}:${VERSION_CODENAME:-}")
fi
if [ "$codename" != "debian:bookworm" ]; then
  say "skipped: this is not Debian bookworm (${codename:-unknown}); install Mesa >= $MIN_MESA's lavapipe (package mesa-vulkan-drivers) and the Vulkan loader (libvulkan1) with your package manager for a software WebGPU adapter"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "skipped: not root; run 'sudo scripts/install-vulkan.sh' to install Mesa >= $MIN_MESA lavapipe from bookworm-backports"
  exit 0
fi

if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  say "adding the bookworm-backports suite (/etc/apt/sources.list.d/bookworm-backports.list)"
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list
fi
say "installing mesa-vulkan-drivers and libvulkan1 from bookworm-backports"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
if ! have_lavapipe; then
  say "failed: mesa-vulkan-drivers $(lavapipe_version) is installed, but not lavapipe >= $MIN_MESA"
  exit 1
fi
say "installed mesa-vulkan-drivers $(lavapipe_version)"
