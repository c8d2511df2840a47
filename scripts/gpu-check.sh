#!/usr/bin/env bash
# GPU check, for a person on a GPU server (a few minutes): which WebGPU adapter Dawn finds,
# the backend conformance suite with webgpu required, and the training benchmark on every
# backend that loads. Needs the Vulkan loader (libvulkan1) and the GPU driver's Vulkan ICD;
# in a container with the NVIDIA toolkit, NVIDIA_DRIVER_CAPABILITIES must include graphics.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent || exit 1

echo "== WebGPU adapter"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "NVIDIA_DRIVER_CAPABILITIES=${NVIDIA_DRIVER_CAPABILITIES:-<unset>}"
node dist/scripts/webgpu-info.js
adapter=$?

echo "== Conformance suite (webgpu required)"
# CI=true makes a missing webgpu adapter a failure instead of a skip.
CI=true node --test dist/test/backends.test.js 2>&1 | grep -E '^# (tests|pass|fail|skipped)|^not ok|^    not ok|error:'
suite=${PIPESTATUS[0]}

echo "== bench train (every backend that loads; cpu skipped)"
node dist/scripts/bench.js train --steps 20
bench=$?

echo "== summary: adapter $([ $adapter = 0 ] && echo found || echo MISSING), conformance $([ "$suite" = 0 ] && echo passed || echo FAILED), bench $([ $bench = 0 ] && echo ran || echo FAILED)"
[ $adapter = 0 ] && [ "$suite" = 0 ] && [ $bench = 0 ]
